//! Topic-level config overrides (CreateTopics `configs`, stored in the metadata) and the value
//! parsers shared with the broker's `server.properties`.

use super::{CleanupPolicy, LogConfig};
use std::collections::BTreeMap;
use std::fmt;

pub fn parse_num<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("expected a number, got `{value}`"))
}

pub fn parse_positive<T: std::str::FromStr + PartialOrd + Default + fmt::Display>(value: &str) -> Result<T, String> {
    let n: T = parse_num(value)?;
    if n <= T::default() {
        return Err(format!("must be positive, got {n}"));
    }
    Ok(n)
}

pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, got `{value}`")),
    }
}

/// Kafka's convention: `-1` means unlimited.
pub fn parse_optional_limit<T: std::str::FromStr + TryFrom<i64>>(value: &str) -> Result<Option<T>, String> {
    let n: i64 = parse_num(value)?;
    if n == -1 {
        return Ok(None);
    }
    if n < 0 {
        return Err(format!("must be -1 (unlimited) or non-negative, got {n}"));
    }
    T::try_from(n).map(Some).map_err(|_| format!("out of range: {n}"))
}

pub fn parse_non_negative(value: &str) -> Result<i64, String> {
    let n: i64 = parse_num(value)?;
    if n < 0 {
        return Err(format!("must not be negative, got {n}"));
    }
    Ok(n)
}

/// A share in `0..=1` (`min.cleanable.dirty.ratio`).
pub fn parse_ratio(value: &str) -> Result<f64, String> {
    let n: f64 = parse_num(value)?;
    if !(0.0..=1.0).contains(&n) {
        return Err(format!("must be between 0 and 1, got {n}"));
    }
    Ok(n)
}

pub fn parse_segment_bytes(value: &str) -> Result<u64, String> {
    let n: u64 = parse_positive(value)?;
    // Kafka's lower bound: a segment must hold at least a batch header and some records.
    const SEGMENT_BYTES_MIN: u64 = 14;
    if n < SEGMENT_BYTES_MIN {
        return Err(format!("must be at least {SEGMENT_BYTES_MIN}, got {n}"));
    }
    Ok(n)
}

/// Per-topic config overrides (CreateTopics `configs`) applied on top of the broker defaults.
/// Returns the log config or the name of the first bad key with a reason.
pub fn topic_log_config(
    defaults: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<LogConfig, (String, String)> {
    let mut config = defaults.clone();
    for (key, value) in overrides {
        let bad = |message: String| (key.clone(), message);
        match key.as_str() {
            "retention.ms" => config.retention_ms = parse_optional_limit(value).map_err(bad)?,
            "retention.bytes" => config.retention_bytes = parse_optional_limit(value).map_err(bad)?,
            "segment.bytes" => config.segment_bytes = parse_segment_bytes(value).map_err(bad)?,
            "segment.ms" => config.segment_ms = parse_positive(value).map_err(bad)?,
            "flush.messages" => config.flush_interval_messages = parse_positive(value).map_err(bad)?,
            "flush.ms" => config.flush_interval_ms = Some(parse_num(value).map_err(bad)?),
            "max.message.bytes" => config.max_message_bytes = parse_positive(value).map_err(bad)?,
            "index.interval.bytes" => config.index_interval_bytes = parse_num(value).map_err(bad)?,
            "min.insync.replicas" => {
                parse_positive::<i32>(value).map_err(bad)?;
            }
            "unclean.leader.election.enable" => {
                parse_bool(value).map_err(bad)?;
            }
            "cleanup.policy" => config.cleanup_policy = CleanupPolicy::parse(value).map_err(bad)?,
            "delete.retention.ms" => config.delete_retention_ms = parse_non_negative(value).map_err(bad)?,
            "min.cleanable.dirty.ratio" => config.min_cleanable_dirty_ratio = parse_ratio(value).map_err(bad)?,
            "message.timestamp.type" if value == "CreateTime" => {}
            "message.timestamp.type" => return Err(bad(format!("only CreateTime is supported, got `{value}`"))),
            "compression.type" if value == "producer" => {}
            "compression.type" => {
                return Err(bad(format!("only `producer` (store as sent) is supported, got `{value}`")))
            }
            _ => return Err(bad("unknown topic configuration key".to_string())),
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_overrides_reject_unknown_and_unsupported_keys() {
        let defaults = LogConfig::default();
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "1000".to_string());
        assert_eq!(topic_log_config(&defaults, &overrides).unwrap().retention_ms, Some(1000));
        overrides.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        let config = topic_log_config(&defaults, &overrides).unwrap();
        assert_eq!(config.cleanup_policy, CleanupPolicy { delete: true, compact: true });
        overrides.insert("cleanup.policy".to_string(), "shred".to_string());
        assert_eq!(topic_log_config(&defaults, &overrides).unwrap_err().0, "cleanup.policy");
        overrides.insert("cleanup.policy".to_string(), "compact".to_string());
        overrides.insert("min.cleanable.dirty.ratio".to_string(), "1.5".to_string());
        assert_eq!(topic_log_config(&defaults, &overrides).unwrap_err().0, "min.cleanable.dirty.ratio");
        overrides.insert("min.cleanable.dirty.ratio".to_string(), "0.25".to_string());
        overrides.insert("compression.type".to_string(), "lz5".to_string());
        assert_eq!(topic_log_config(&defaults, &overrides).unwrap_err().0, "compression.type");
    }
}
