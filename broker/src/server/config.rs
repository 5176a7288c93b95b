//! Broker configuration: Kafka's `server.properties` keys, parsed from a file and from
//! `--override key=value` flags. Unknown or malformed keys are errors that name the origin
//! (file and line, or the flag).

use crate::group::GroupConfig;
use crate::log::topic_config::{
    parse_bool, parse_non_negative, parse_num, parse_optional_limit, parse_positive, parse_ratio, parse_segment_bytes,
};
use crate::log::{CleanupPolicy, LogConfig};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A configuration error, with where the bad value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `path:line` for a properties file, `--override` for a flag.
    pub origin: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.origin, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Kafka keys that are accepted for compatibility but have no effect in Gregor (thread pools,
/// socket buffers, ZooKeeper, settings of features that arrive with later issues). They are
/// logged as ignored at startup rather than rejected, so a stock `server.properties` loads.
const IGNORED_KEYS: &[&str] = &[
    "num.network.threads",
    "num.io.threads",
    "num.replica.fetchers",
    "num.recovery.threads.per.data.dir",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "zookeeper.connect",
    "zookeeper.connection.timeout.ms",
    "controller.quorum.bootstrap.servers",
    "controller.listener.names",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "log.flush.scheduler.interval.ms",
    "log.flush.offset.checkpoint.interval.ms",
    "log.cleaner.enable",
    "log.segment.delete.delay.ms",
    "delete.topic.enable",
];

/// Everything the broker reads from its configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerConfig {
    /// `node.id` (alias `broker.id`).
    pub node_id: i32,
    /// `process.roles`: `broker`, `controller`, or both (the default).
    pub roles: Roles,
    /// `listeners`: the PLAINTEXT listener (clients and replicas), as `host:port` (port 0 =
    /// pick one). Required for the broker role.
    pub listener: String,
    /// `listeners`' CONTROLLER entry: where the controller role listens for brokers. `None`
    /// with the controller role: an ephemeral port on the PLAINTEXT host (fine for one node).
    pub controller_listener: Option<String>,
    /// `controller.quorum.voters` (`id@host:port`): the one controller. `None`: this node is
    /// the controller (needs the controller role).
    pub controller_voter: Option<(i32, String)>,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits for data.
    pub replica_fetch_wait_max_ms: i64,
    /// `replica.fetch.max.bytes`: bytes a follower asks for per fetch (the leader still sends a
    /// first batch that is larger, so a follower always makes progress).
    pub replica_fetch_max_bytes: i32,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i64,
    /// `broker.session.timeout.ms` (used by the controller role).
    pub session_timeout_ms: i64,
    /// `unclean.leader.election.enable` (used by the controller role; topics may override).
    pub unclean_leader_election: bool,
    /// `advertised.listeners`: what Metadata tells clients; `None` = the bound address.
    pub advertised_listener: Option<String>,
    /// `log.dirs` (alias `log.dir`): the one data directory.
    pub log_dir: PathBuf,
    /// `num.partitions`: partitions of an auto-created topic or of CreateTopics with -1.
    pub num_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `min.insync.replicas`: acks=all fails with NOT_ENOUGH_REPLICAS below this.
    pub min_insync_replicas: i32,
    /// `socket.request.max.bytes`: larger frames close the connection.
    pub socket_request_max_bytes: usize,
    /// `queued.max.request.bytes`: bytes of requests read but not yet answered, across all
    /// connections; a connection whose next frame does not fit waits (Kafka mutes it). Kafka's
    /// default is unbounded (-1); Gregor's is 512 MiB. At least `socket.request.max.bytes`.
    pub queued_max_request_bytes: usize,
    /// `max.connections`: client connections open at once; more are closed as accepted.
    /// Kafka's default is unbounded; Gregor's is 10,000.
    pub max_connections: usize,
    /// `max.connections.per.ip`: client connections from one address. Kafka's default is
    /// unbounded; Gregor's is 1,000.
    pub max_connections_per_ip: usize,
    /// `connections.max.idle.ms`: a connection with no request for this long is closed.
    pub connections_max_idle_ms: u64,
    /// `socket.io.timeout.ms` (Gregor's own; Kafka has no such key): once a frame's length
    /// prefix arrives its body must complete within this, and a response must be taken by the
    /// peer within this, or the connection is closed (a half-sent frame never holds its buffer).
    pub socket_io_timeout_ms: u64,
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval_ms: i64,
    /// `log.cleaner.enable`: whether compacted topics are cleaned at all.
    pub cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: how often the cleaner looks at every compacted partition.
    pub cleaner_backoff_ms: i64,
    /// Log defaults (`log.segment.bytes`, `log.flush.*`, `log.retention.*`, `message.max.bytes`).
    pub log: LogConfig,
    /// The group coordinator's settings (`offsets.topic.num.partitions`, `group.*`,
    /// `offset.metadata.max.bytes`, `offsets.retention.minutes`).
    pub group: GroupConfig,
    /// `offsets.topic.replication.factor`. Unset: 3 as in Kafka, except on a node that is its
    /// own controller (the single-node quickstart), where it is 1 (Kafka's quickstart
    /// `server.properties` sets 1 too). `__consumer_offsets` is created on first use; until the
    /// cluster has this many brokers, FindCoordinator answers COORDINATOR_NOT_AVAILABLE.
    pub offsets_topic_replication_factor: Option<i16>,
    /// `offsets.topic.segment.bytes`.
    pub offsets_topic_segment_bytes: u64,
    /// `offsets.commit.timeout.ms`: how long a commit (or a group's generation) waits for
    /// replication before the client is told COORDINATOR_NOT_AVAILABLE.
    pub offsets_commit_timeout_ms: i64,
    /// Keys that were accepted but ignored, with their origin, for the startup log.
    pub ignored: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            roles: Roles { broker: true, controller: true },
            listener: "127.0.0.1:9092".to_string(),
            controller_listener: None,
            controller_voter: None,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1024 * 1024,
            heartbeat_interval_ms: 2_000,
            session_timeout_ms: 9_000,
            unclean_leader_election: false,
            advertised_listener: None,
            log_dir: PathBuf::from("./data"),
            num_partitions: 1,
            auto_create_topics_enable: true,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            socket_request_max_bytes: 100 * 1024 * 1024,
            queued_max_request_bytes: 512 * 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            connections_max_idle_ms: 600_000,
            socket_io_timeout_ms: 30_000,
            retention_check_interval_ms: 300_000,
            cleaner_enable: true,
            cleaner_backoff_ms: 15_000,
            log: LogConfig::default(),
            group: GroupConfig::default(),
            offsets_topic_replication_factor: None,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            offsets_commit_timeout_ms: 5_000,
            ignored: Vec::new(),
        }
    }
}

impl BrokerConfig {
    /// Parses a `server.properties` text over the defaults. `origin` names the file in errors.
    pub fn from_properties(text: &str, origin: &str) -> Result<BrokerConfig, ConfigError> {
        let mut config = BrokerConfig::default();
        config.apply_properties(text, origin)?;
        Ok(config)
    }

    /// Applies a `server.properties` text on top of this config.
    pub fn apply_properties(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let at = format!("{origin}:{}", index + 1);
            let Some(split) = line.find(['=', ':']) else {
                return Err(ConfigError {
                    origin: at,
                    key: String::new(),
                    message: format!("expected `key=value`, got `{line}`"),
                });
            };
            let key = line[..split].trim();
            let value = line[split + 1..].trim();
            self.set_from(key, value, &at)?;
        }
        Ok(())
    }

    /// Sets one key (as `--override key=value` does).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        self.set_from(key, value, "--override")
    }

    fn set_from(&mut self, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
        let err = |message: String| ConfigError { origin: origin.to_string(), key: key.to_string(), message };
        match key {
            "node.id" | "broker.id" => self.node_id = parse_num(value).map_err(err)?,
            "listeners" => {
                let (plaintext, controller) = parse_listeners(value).map_err(err)?;
                if let Some(plaintext) = plaintext {
                    self.listener = plaintext;
                }
                self.controller_listener = controller;
            }
            "process.roles" => self.roles = parse_roles(value).map_err(err)?,
            "controller.quorum.voters" => self.controller_voter = Some(parse_voters(value).map_err(err)?),
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = parse_positive(value).map_err(err)?,
            "replica.fetch.wait.max.ms" => self.replica_fetch_wait_max_ms = parse_positive(value).map_err(err)?,
            "replica.fetch.max.bytes" => self.replica_fetch_max_bytes = parse_positive(value).map_err(err)?,
            "broker.heartbeat.interval.ms" => self.heartbeat_interval_ms = parse_positive(value).map_err(err)?,
            "broker.session.timeout.ms" => self.session_timeout_ms = parse_positive(value).map_err(err)?,
            "unclean.leader.election.enable" => self.unclean_leader_election = parse_bool(value).map_err(err)?,
            "advertised.listeners" => {
                let (plaintext, _) = parse_listeners(value).map_err(err)?;
                self.advertised_listener = plaintext;
            }
            "log.dirs" | "log.dir" => {
                let dirs: Vec<&str> = value.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
                if dirs.len() != 1 {
                    return Err(err(format!(
                        "Gregor stores data in exactly one directory; got {} in `{value}`",
                        dirs.len()
                    )));
                }
                self.log_dir = PathBuf::from(dirs[0]);
            }
            "num.partitions" => self.num_partitions = parse_positive(value).map_err(err)?,
            "auto.create.topics.enable" => self.auto_create_topics_enable = parse_bool(value).map_err(err)?,
            "default.replication.factor" => self.default_replication_factor = parse_positive(value).map_err(err)?,
            "min.insync.replicas" => self.min_insync_replicas = parse_positive(value).map_err(err)?,
            "socket.request.max.bytes" => self.socket_request_max_bytes = parse_positive(value).map_err(err)?,
            "queued.max.request.bytes" => self.queued_max_request_bytes = parse_positive(value).map_err(err)?,
            "max.connections" => self.max_connections = parse_positive(value).map_err(err)?,
            "max.connections.per.ip" => self.max_connections_per_ip = parse_positive(value).map_err(err)?,
            "connections.max.idle.ms" => self.connections_max_idle_ms = parse_positive(value).map_err(err)?,
            "socket.io.timeout.ms" => self.socket_io_timeout_ms = parse_positive(value).map_err(err)?,
            "log.retention.check.interval.ms" => {
                self.retention_check_interval_ms = parse_positive(value).map_err(err)?
            }
            "message.max.bytes" => self.log.max_message_bytes = parse_positive(value).map_err(err)?,
            "log.cleanup.policy" => self.log.cleanup_policy = CleanupPolicy::parse(value).map_err(err)?,
            "log.cleaner.enable" => self.cleaner_enable = parse_bool(value).map_err(err)?,
            "log.cleaner.backoff.ms" => self.cleaner_backoff_ms = parse_positive(value).map_err(err)?,
            "log.cleaner.delete.retention.ms" => {
                self.log.delete_retention_ms = parse_non_negative(value).map_err(err)?
            }
            "log.cleaner.min.cleanable.ratio" => {
                self.log.min_cleanable_dirty_ratio = parse_ratio(value).map_err(err)?
            }
            "log.cleaner.dedupe.buffer.size" => {
                self.log.cleaner_dedupe_buffer_bytes = parse_positive(value).map_err(err)?
            }
            "log.segment.bytes" => self.log.segment_bytes = parse_segment_bytes(value).map_err(err)?,
            "log.roll.ms" => self.log.segment_ms = parse_positive(value).map_err(err)?,
            "log.roll.hours" => self.log.segment_ms = parse_positive::<i64>(value).map_err(err)? * 3_600_000,
            "log.index.interval.bytes" => self.log.index_interval_bytes = parse_num(value).map_err(err)?,
            "log.flush.interval.messages" => self.log.flush_interval_messages = parse_positive(value).map_err(err)?,
            "log.flush.interval.ms" => self.log.flush_interval_ms = Some(parse_num(value).map_err(err)?),
            "log.retention.bytes" => self.log.retention_bytes = parse_optional_limit(value).map_err(err)?,
            "log.retention.ms" => self.log.retention_ms = parse_optional_limit(value).map_err(err)?,
            "log.retention.minutes" => self.log.retention_ms = scale(parse_optional_limit(value).map_err(err)?, 60_000),
            "log.retention.hours" => {
                self.log.retention_ms = scale(parse_optional_limit(value).map_err(err)?, 3_600_000)
            }
            "offsets.topic.num.partitions" => self.group.offsets_partitions = parse_positive(value).map_err(err)?,
            "offsets.topic.replication.factor" => {
                self.offsets_topic_replication_factor = Some(parse_positive(value).map_err(err)?)
            }
            "offsets.topic.segment.bytes" => {
                self.offsets_topic_segment_bytes = parse_segment_bytes(value).map_err(err)?
            }
            "offsets.commit.timeout.ms" => self.offsets_commit_timeout_ms = parse_positive(value).map_err(err)?,
            "offsets.retention.minutes" => {
                self.group.offsets_retention_ms = parse_positive::<i64>(value).map_err(err)?.saturating_mul(60_000)
            }
            "offset.metadata.max.bytes" => self.group.offset_metadata_max_bytes = parse_positive(value).map_err(err)?,
            "group.min.session.timeout.ms" => self.group.min_session_timeout_ms = parse_positive(value).map_err(err)?,
            "group.max.session.timeout.ms" => self.group.max_session_timeout_ms = parse_positive(value).map_err(err)?,
            "group.initial.rebalance.delay.ms" => {
                self.group.initial_rebalance_delay_ms = parse_num(value).map_err(err)?;
                if self.group.initial_rebalance_delay_ms < 0 {
                    return Err(err("must not be negative".to_string()));
                }
            }
            "group.max.size" => self.group.max_size = parse_positive(value).map_err(err)?,
            "group.coordinator.groups.max" => self.group.max_groups = parse_positive(value).map_err(err)?,
            "group.consumer.session.timeout.ms" => {
                self.group.consumer.session_timeout_ms = parse_positive(value).map_err(err)?
            }
            "group.consumer.min.session.timeout.ms" => {
                self.group.consumer.session_timeout_bounds_ms.0 = parse_positive(value).map_err(err)?
            }
            "group.consumer.max.session.timeout.ms" => {
                self.group.consumer.session_timeout_bounds_ms.1 = parse_positive(value).map_err(err)?
            }
            "group.consumer.heartbeat.interval.ms" => {
                self.group.consumer.heartbeat_interval_ms = parse_positive(value).map_err(err)?
            }
            "group.consumer.min.heartbeat.interval.ms" => {
                self.group.consumer.heartbeat_interval_bounds_ms.0 = parse_positive(value).map_err(err)?
            }
            "group.consumer.max.heartbeat.interval.ms" => {
                self.group.consumer.heartbeat_interval_bounds_ms.1 = parse_positive(value).map_err(err)?
            }
            "group.consumer.max.size" => self.group.consumer.max_size = parse_positive(value).map_err(err)?,
            "group.consumer.assignors" => {
                let names: Vec<String> = value.split(',').map(|a| a.trim().to_string()).collect();
                if let Some(bad) = names.iter().find(|n| !crate::group::assignors::ASSIGNORS.contains(&n.as_str())) {
                    return Err(err(format!(
                        "unknown assignor `{bad}` (this broker has {})",
                        crate::group::assignors::ASSIGNORS.join(", ")
                    )));
                }
                self.group.consumer.assignors = names;
            }
            other if IGNORED_KEYS.contains(&other) => self.ignored.push(format!("{origin}: {other}")),
            other => return Err(err(format!("unknown configuration key `{other}`"))),
        }
        Ok(())
    }

    /// Checks the keys that only make sense together; call once after parsing.
    pub fn check(&self) -> Result<(), ConfigError> {
        let err =
            |key: &str, message: String| ConfigError { origin: "config".to_string(), key: key.to_string(), message };
        if !self.roles.broker && !self.roles.controller {
            return Err(err("process.roles", "needs broker, controller or both".to_string()));
        }
        match (&self.controller_voter, self.roles.controller) {
            (None, false) => {
                return Err(err(
                    "controller.quorum.voters",
                    "a node without the controller role needs controller.quorum.voters=id@host:port".to_string(),
                ))
            }
            (Some((id, _)), true) if *id != self.node_id => {
                return Err(err(
                    "controller.quorum.voters",
                    format!("this node (node.id={}) has the controller role but the voter is node {id}", self.node_id),
                ))
            }
            _ => {}
        }
        if self.queued_max_request_bytes < self.socket_request_max_bytes {
            return Err(err(
                "queued.max.request.bytes",
                format!(
                    "must be at least socket.request.max.bytes ({}), or a largest request could never be read",
                    self.socket_request_max_bytes
                ),
            ));
        }
        if self.socket_request_max_bytes > u32::MAX as usize {
            return Err(err("socket.request.max.bytes", format!("must be at most {}", u32::MAX)));
        }
        if self.group.min_session_timeout_ms > self.group.max_session_timeout_ms {
            return Err(err(
                "group.min.session.timeout.ms",
                format!("must be at most group.max.session.timeout.ms ({})", self.group.max_session_timeout_ms),
            ));
        }
        let consumer = &self.group.consumer;
        let (min, max) = consumer.session_timeout_bounds_ms;
        if !(min..=max).contains(&consumer.session_timeout_ms) {
            return Err(err(
                "group.consumer.session.timeout.ms",
                format!("must be within group.consumer.min/max.session.timeout.ms ({min}..={max})"),
            ));
        }
        let (min, max) = consumer.heartbeat_interval_bounds_ms;
        if !(min..=max).contains(&consumer.heartbeat_interval_ms) {
            return Err(err(
                "group.consumer.heartbeat.interval.ms",
                format!("must be within group.consumer.min/max.heartbeat.interval.ms ({min}..={max})"),
            ));
        }
        if consumer.heartbeat_interval_ms >= consumer.session_timeout_ms {
            return Err(err(
                "group.consumer.heartbeat.interval.ms",
                format!("must be below group.consumer.session.timeout.ms ({})", consumer.session_timeout_ms),
            ));
        }
        if self.heartbeat_interval_ms >= self.session_timeout_ms {
            return Err(err(
                "broker.heartbeat.interval.ms",
                format!("must be below broker.session.timeout.ms ({})", self.session_timeout_ms),
            ));
        }
        Ok(())
    }

    /// `offsets.topic.replication.factor` as it applies to this node (see the field).
    pub fn offsets_replication_factor(&self) -> i16 {
        match self.offsets_topic_replication_factor {
            Some(factor) => factor,
            None if self.roles.controller && self.roles.broker => 1,
            None => 3,
        }
    }

    /// The address Metadata advertises, given the address the listener got.
    pub fn advertised_address(&self, bound: SocketAddr) -> (String, i32) {
        match &self.advertised_listener {
            Some(listener) => split_host_port(listener),
            None => (bound.ip().to_string(), i32::from(bound.port())),
        }
    }
}

fn split_host_port(listener: &str) -> (String, i32) {
    let (host, port) = listener.rsplit_once(':').expect("validated by parse_listener");
    (host.to_string(), port.parse().expect("validated by parse_listener"))
}

/// Which roles a node plays (`process.roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

fn parse_roles(value: &str) -> Result<Roles, String> {
    let mut roles = Roles { broker: false, controller: false };
    for role in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        match role {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            other => return Err(format!("unknown role `{other}`: use broker, controller or both")),
        }
    }
    if !roles.broker && !roles.controller {
        return Err("needs broker, controller or both".to_string());
    }
    Ok(roles)
}

/// `id@host:port`: exactly one voter until the controller quorum (KRaft) arrives.
fn parse_voters(value: &str) -> Result<(i32, String), String> {
    let voters: Vec<&str> = value.split(',').map(str::trim).filter(|v| !v.is_empty()).collect();
    if voters.len() != 1 {
        return Err(format!("Gregor runs one controller for now; got {} voters in `{value}`", voters.len()));
    }
    let (id, address) =
        voters[0].split_once('@').ok_or_else(|| format!("expected id@host:port, got `{}`", voters[0]))?;
    let id = id.parse().map_err(|_| format!("bad voter id `{id}`"))?;
    Ok((id, parse_listener(address)?))
}

/// `listeners`: `PLAINTEXT://host:port` and/or `CONTROLLER://host:port` (or one bare
/// `host:port`, taken as PLAINTEXT).
fn parse_listeners(value: &str) -> Result<(Option<String>, Option<String>), String> {
    let listeners: Vec<&str> = value.split(',').map(str::trim).filter(|l| !l.is_empty()).collect();
    let (mut plaintext, mut controller) = (None, None);
    for listener in listeners {
        let slot = match listener.split_once("://") {
            Some(("CONTROLLER", _)) => &mut controller,
            _ => &mut plaintext,
        };
        if slot.is_some() {
            return Err(format!("Gregor serves one PLAINTEXT and one CONTROLLER listener; `{value}` has more"));
        }
        *slot = Some(parse_listener(listener)?);
    }
    if plaintext.is_none() && controller.is_none() {
        return Err("no listener given".to_string());
    }
    Ok((plaintext, controller))
}

/// Accepts `PLAINTEXT://host:port`, `CONTROLLER://host:port` or a bare `host:port`.
fn parse_listener(listener: &str) -> Result<String, String> {
    let address = match listener.split_once("://") {
        Some(("PLAINTEXT" | "CONTROLLER", rest)) => rest,
        Some((protocol, _)) => {
            return Err(format!("security protocol `{protocol}` is not supported; use PLAINTEXT://host:port"))
        }
        None => listener,
    };
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("expected host:port, got `{address}`"));
    };
    port.parse::<u16>().map_err(|_| format!("bad port `{port}` in `{listener}`"))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(format!("{host}:{port}"))
}

fn scale(value: Option<i64>, factor: i64) -> Option<i64> {
    value.map(|v| v * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_server_properties_load_with_ignored_keys() {
        let text = "broker.id=1\nnum.network.threads=3\nlog.dirs=/var/lib/kafka/data\nnum.partitions=3\n\
                    log.retention.hours=168\nlog.segment.bytes=1073741824\nlog.retention.check.interval.ms=300000\n\
                    zookeeper.connect=zookeeper1:2181\n";
        let config = BrokerConfig::from_properties(text, "server.properties").unwrap();
        assert_eq!(config.num_partitions, 3);
        assert_eq!(config.log.retention_ms, Some(168 * 3_600_000));
        assert_eq!(config.log_dir, PathBuf::from("/var/lib/kafka/data"));
        assert_eq!(config.ignored.len(), 2);
    }

    #[test]
    fn unknown_key_is_reported_with_file_and_line() {
        let err = BrokerConfig::from_properties("node.id=1\n\nlog.flush.intervl.ms=5\n", "my.properties").unwrap_err();
        assert_eq!(err.origin, "my.properties:3");
        assert_eq!(err.key, "log.flush.intervl.ms");
        assert!(err.to_string().contains("unknown configuration key"), "{err}");
    }

    #[test]
    fn malformed_value_is_reported_with_line() {
        let err = BrokerConfig::from_properties("num.partitions=three\n", "p").unwrap_err();
        assert_eq!(err.origin, "p:1");
        assert!(err.message.contains("expected a number"), "{err}");
        let err = BrokerConfig::from_properties("listeners=SSL://x:9093\n", "p").unwrap_err();
        assert!(err.message.contains("not supported"), "{err}");
    }

    #[test]
    fn override_replaces_file_value_and_listener_forms_parse() {
        let mut config = BrokerConfig::from_properties("listeners=PLAINTEXT://:9092\n", "p").unwrap();
        assert_eq!(config.listener, "0.0.0.0:9092");
        config.set("listeners", "127.0.0.1:0").unwrap();
        assert_eq!(config.listener, "127.0.0.1:0");
        config.set("log.flush.interval.messages", "1").unwrap();
        assert_eq!(config.log.flush_interval_messages, 1);
        assert_eq!(config.set("log.retention.bytes", "-1"), Ok(()));
        assert_eq!(config.log.retention_bytes, None);
        assert!(config.set("log.retention.bytes", "-5").is_err());
    }
}
