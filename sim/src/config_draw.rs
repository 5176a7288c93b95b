//! Swarm over configuration: each seed draws broker and topic settings within sane ranges, so
//! segment rolls, index lookups across segments, time-based flushes, small fetches and other
//! session timings happen under faults in every scenario. A scenario that pins a setting (say
//! `segment_bytes`, or a flush policy its fault budget depends on) keeps it. The draw comes from
//! its own random stream and is printed in the report.

use crate::group_assignors::Assignor;
use crate::nemesis::stream_seed;
use crate::scenario::Scenario;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Duration;

/// Segment sizes drawn (bytes): small enough that every partition of every scenario rolls
/// several segments (a record of the workload takes about 76 bytes).
const SEGMENT_BYTES: std::ops::RangeInclusive<u64> = 2 * 1024..=16 * 1024;
/// `index.interval.bytes` drawn.
const INDEX_INTERVAL_BYTES: std::ops::RangeInclusive<u64> = 64..=4096;
/// `flush.ms` drawn, for topics whose scenario sets no flush policy.
const FLUSH_MS: std::ops::RangeInclusive<u64> = 50..=2_000;
/// `broker.session.timeout.ms` drawn; the heartbeat interval is a fifth to an eighth of it.
const SESSION_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1_000..=3_000;
/// `replica.lag.time.max.ms` drawn.
const REPLICA_LAG_TIME_MAX_MS: std::ops::RangeInclusive<u64> = 1_000..=3_000;
/// Fetch sizes drawn (bytes, log-uniform): `replica.fetch.max.bytes` and the consumers' own.
const FETCH_MAX_BYTES_LOG2: std::ops::RangeInclusive<u32> = 10..=20;

/// The settings one seed runs with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigDraw {
    pub segment_bytes: u64,
    pub index_interval_bytes: u64,
    /// `None`: the scenario's flush policy stands.
    pub flush_ms: Option<u64>,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub replica_lag_time_max_ms: u64,
    pub replica_fetch_max_bytes: u32,
    pub consumer_fetch_max_bytes: u32,
    /// What group members (if any) run with.
    pub group_assignor: Assignor,
    pub group_auto_commit: bool,
}

impl ConfigDraw {
    /// The draw for `seed`, within what `scenario` leaves open.
    pub fn draw(scenario: &Scenario, seed: u64) -> ConfigDraw {
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, "config"));
        let segment_bytes = rng.gen_range(SEGMENT_BYTES);
        let index_interval_bytes = rng.gen_range(INDEX_INTERVAL_BYTES);
        let flush_ms = rng.gen_range(FLUSH_MS);
        let session_timeout_ms = rng.gen_range(SESSION_TIMEOUT_MS);
        let heartbeat_interval_ms = session_timeout_ms / rng.gen_range(5..=8);
        let replica_lag_time_max_ms = rng.gen_range(REPLICA_LAG_TIME_MAX_MS);
        let replica_fetch_max_bytes = 1 << rng.gen_range(FETCH_MAX_BYTES_LOG2);
        let consumer_fetch_max_bytes = 1 << rng.gen_range(FETCH_MAX_BYTES_LOG2);
        // Drawn after the others, so adding them left every earlier draw of a seed as it was.
        let group_assignor = Assignor::ALL[rng.gen_range(0..Assignor::ALL.len())];
        let group_auto_commit = rng.gen_bool(0.5);
        let workload = &scenario.workload;
        let topic = &scenario.topic;
        let flush_open = topic.flush_messages.is_none() && topic.flush_ms.is_none();
        ConfigDraw {
            segment_bytes: topic.segment_bytes.unwrap_or(segment_bytes),
            index_interval_bytes,
            flush_ms: flush_open.then_some(flush_ms),
            session_timeout_ms,
            heartbeat_interval_ms,
            replica_lag_time_max_ms,
            replica_fetch_max_bytes,
            consumer_fetch_max_bytes,
            group_assignor: workload
                .group_assignor
                .as_deref()
                .map_or(group_assignor, |name| Assignor::parse(name).expect("validated")),
            group_auto_commit: workload.group_auto_commit.unwrap_or(group_auto_commit),
        }
    }

    /// The scenario as this seed runs it: the drawn topic settings filled in.
    pub fn apply(&self, scenario: &Scenario) -> Scenario {
        let mut scenario = scenario.clone();
        scenario.topic.segment_bytes = Some(self.segment_bytes);
        scenario.topic.index_interval_bytes = Some(self.index_interval_bytes);
        if let Some(ms) = self.flush_ms {
            scenario.topic.flush_ms = Some(ms as i64);
        }
        scenario
    }

    /// Broker settings (every node gets the same).
    pub fn broker_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("broker.heartbeat.interval.ms", self.heartbeat_interval_ms.to_string()),
            ("broker.session.timeout.ms", self.session_timeout_ms.to_string()),
            ("replica.lag.time.max.ms", self.replica_lag_time_max_ms.to_string()),
            ("replica.fetch.max.bytes", self.replica_fetch_max_bytes.to_string()),
        ]
    }

    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms)
    }

    pub fn replica_lag_time_max(&self) -> Duration {
        Duration::from_millis(self.replica_lag_time_max_ms)
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        format!(
            "segment.bytes={} index.interval.bytes={} flush.ms={} broker.session.timeout.ms={} broker.heartbeat.interval.ms={} replica.lag.time.max.ms={} replica.fetch.max.bytes={} consumer fetch.max.bytes={} group assignor={} group auto commit={}",
            self.segment_bytes,
            self.index_interval_bytes,
            self.flush_ms.map_or("(scenario's)".to_string(), |ms| ms.to_string()),
            self.session_timeout_ms,
            self.heartbeat_interval_ms,
            self.replica_lag_time_max_ms,
            self.replica_fetch_max_bytes,
            self.consumer_fetch_max_bytes,
            self.group_assignor.name(),
            self.group_auto_commit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(topic: &str) -> Scenario {
        let text = format!(
            "name = \"t\"\ndescription = \"d\"\n[cluster]\nbrokers = 3\n[topic]\npartitions = 1\n{topic}\n[workload]\nproducers = 1\nconsumers = 1\nacks = \"all\"\nduration_s = 10\n[expect]\noutcome = \"pass\"\n"
        );
        Scenario::parse(&text, "t.toml").unwrap()
    }

    #[test]
    fn a_seed_always_draws_the_same_settings_and_seeds_differ() {
        let s = scenario("");
        assert_eq!(ConfigDraw::draw(&s, 7), ConfigDraw::draw(&s, 7));
        let draws: std::collections::BTreeSet<u64> =
            (0..20).map(|seed| ConfigDraw::draw(&s, seed).segment_bytes).collect();
        assert!(draws.len() > 10, "{draws:?}");
        for seed in 0..200 {
            let d = ConfigDraw::draw(&s, seed);
            assert!(SEGMENT_BYTES.contains(&d.segment_bytes) && d.heartbeat_interval_ms * 5 <= d.session_timeout_ms);
            assert!(d.flush_ms.is_some(), "no flush policy in the scenario: one is drawn");
        }
    }

    #[test]
    fn what_the_scenario_pins_stays_pinned() {
        let pinned = scenario("flush_messages = 1\nsegment_bytes = 1000000");
        let d = ConfigDraw::draw(&pinned, 3);
        assert_eq!((d.segment_bytes, d.flush_ms), (1_000_000, None));
        let applied = d.apply(&pinned);
        assert_eq!((applied.topic.flush_messages, applied.topic.flush_ms), (Some(1), None));
    }
}
