//! Scenario files: one fault story each, in TOML. A reader sees the cluster, the workload, the
//! faults and the expected outcome without reading the harness.
//!
//! ```toml
//! name = "single-node-crash-fsync"
//! description = "fsync every message; crashes must lose nothing acknowledged"
//!
//! [cluster]
//! brokers = 1
//!
//! [topic]
//! partitions = 3
//! flush_messages = 1
//!
//! [workload]
//! producers = 2
//! consumers = 1
//! acks = "all"
//! duration_s = 30
//!
//! [[faults.scripted]]
//! at_s = 10.0
//! kind = "crash"
//! target = "broker-1"
//! duration_s = 2.0
//!
//! [expect]
//! outcome = "pass"
//! ```
//!
//! Every error names the file, the line and the field.

use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// A scenario file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: `{}`: {}", self.file, self.line, self.field, self.message)
    }
}

impl std::error::Error for ScenarioError {}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub cluster: ClusterSpec,
    #[serde(default)]
    pub topic: TopicSpec,
    pub workload: WorkloadSpec,
    #[serde(default)]
    pub faults: FaultSpec,
    pub expect: Expectation,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Broker nodes, named `broker-1` .. `broker-N`. With more than one, a separate
    /// `controller` node holds the metadata log; one broker is its own controller.
    pub brokers: u32,
}

/// The workload's topic and its durability settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub min_insync_replicas: i32,
    /// `flush.messages`; absent = Kafka's default (never fsync by count).
    pub flush_messages: Option<u64>,
    /// `flush.ms`; absent = Kafka's default (never fsync by time).
    pub flush_ms: Option<i64>,
    /// `segment.bytes`; absent = drawn per seed (`config_draw`, a few KiB: segments roll in
    /// every run, so producer-state snapshots and index lookups across segments are in play).
    pub segment_bytes: Option<u64>,
    /// `index.interval.bytes`; absent = drawn per seed.
    pub index_interval_bytes: Option<u64>,
    pub unclean_leader_election: bool,
}

impl Default for TopicSpec {
    fn default() -> Self {
        TopicSpec {
            name: "events".to_string(),
            partitions: 1,
            replication_factor: 1,
            min_insync_replicas: 1,
            flush_messages: None,
            flush_ms: None,
            segment_bytes: None,
            index_interval_bytes: None,
            unclean_leader_election: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Acks {
    #[serde(rename = "0")]
    None,
    #[serde(rename = "1")]
    Leader,
    #[serde(rename = "all")]
    All,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    pub producers: u32,
    pub consumers: u32,
    pub acks: Acks,
    #[serde(default = "yes")]
    pub idempotence: bool,
    /// Sends per second per producer.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    /// Subscribe-mode consumers: members of one group (classic protocol, range assignment,
    /// a commit after every poll; `sim::group_client`); 0: none.
    #[serde(default)]
    pub group_consumers: u32,
    /// The first group member is slow: now and then it takes longer over a batch than its
    /// session timeout, is expelled, and commits late (`sim::group_client`).
    #[serde(default)]
    pub group_slow_member: bool,
    /// Group members are static (`group.instance.id` = `member-N`): one restarted within its
    /// session gets its partitions back without a rebalance.
    #[serde(default)]
    pub group_static_members: bool,
    /// The members' assignor: `range`, `roundrobin` or `cooperative-sticky`; unset: drawn per
    /// seed (`config_draw`).
    #[serde(default)]
    pub group_assignor: Option<String>,
    /// Members commit every second (`enable.auto.commit`) instead of after every poll; unset:
    /// drawn per seed.
    #[serde(default)]
    pub group_auto_commit: Option<bool>,
    /// The group protocol: `classic` (the default; the members assign) or `consumer` (KIP-848:
    /// the broker assigns, with `uniform` or `range` as the drawn assignor maps to;
    /// `sim::group_consumer_protocol`).
    #[serde(default)]
    pub group_protocol: Option<String>,
    /// Clients mixing malformed and oversized requests into the run (`sim::hostile`); 0: none.
    #[serde(default)]
    pub hostile_clients: u32,
    /// Length of the fault phase.
    pub duration_s: u64,
    /// Bound on the heal phase: everything must converge within it.
    #[serde(default = "default_heal")]
    pub heal_s: u64,
}

fn yes() -> bool {
    true
}
fn default_rate() -> u32 {
    20
}
fn default_heal() -> u64 {
    60
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// At time T do X (to a target) for D.
    #[serde(default)]
    pub scripted: Vec<ScriptedFault>,
    /// Faults drawn per seed.
    pub swarm: Option<SwarmSpec>,
}

#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Power loss: kill the node and its disk loses what was not synced (the seed may keep some
    /// unsynced sectors and tear the last write); restart it after `duration_s`.
    Crash,
    /// Process crash: kill the node; the disk (page cache included) survives; restart after
    /// `duration_s`.
    Kill,
    /// Freeze the node's tasks while time goes on.
    Pause,
    /// Cut every link of the node.
    Isolate,
    /// Cut the link from the target to every other node, one way.
    IsolateOutbound,
    /// Cut one link, one way: from the target to the first producer (its acks are lost, its
    /// requests still arrive).
    ClogLink,
    /// Every link gets 5-50 ms of added latency and 5% packet loss (TCP retransmits: delay).
    SlowNetwork,
    /// Corrupt reads from the target's disk.
    DiskCorruption,
    /// Fail writes and fsyncs on the target's disk.
    DiskError,
    /// Every operation on the target's disk takes up to 20 ms.
    DiskSlow,
    /// Cut the links between the target and the other brokers, both ways (clients and the
    /// controller still reach it): followers stop fetching from it, or it from its leader.
    IsolateFromBrokers,
    /// Cut the links between the target and the other brokers and the controller, both ways;
    /// clients still reach it. A leader cut off like this keeps taking acks=1 writes.
    IsolateFromCluster,
    /// Power loss of every broker at once (target `all`); they restart after `duration_s`.
    CrashAll,
    /// The target's disk is replaced by an empty one: kill, wipe, restart after `duration_s`.
    DiskLoss,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScriptedFault {
    pub at_s: f64,
    pub kind: FaultKind,
    /// `broker-N`, `controller` (clusters of more than one broker), `leader` / `follower` (of
    /// partition 0 when the fault starts), or `all` (for `crash-all`).
    pub target: String,
    #[serde(default)]
    pub duration_s: f64,
    /// For `disk-error` and `disk-corruption`: the chance each disk operation fails (or reads a
    /// flipped bit) while the fault is on. Default 0.02.
    #[serde(default)]
    pub probability: Option<f64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SwarmSpec {
    /// Fault kinds a seed may switch on; each seed draws a subset and a rate for each.
    pub kinds: Vec<FaultKind>,
    /// Mean faults per simulated minute when every kind is on.
    pub faults_per_minute: f64,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedOutcome {
    /// Every invariant holds for every seed.
    Pass,
    /// The listed anomalies must be found (by some seed of a sweep), and are the only ones a run
    /// beyond the fault budget is excused (`verdict::judge`).
    Anomalies,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub outcome: ExpectedOutcome,
    #[serde(default)]
    pub anomalies: Vec<String>,
    /// Seeds that once failed this scenario: every sweep of it runs them as well as its seed
    /// range (so the CI tier keeps them passing).
    #[serde(default)]
    pub regression_seeds: Vec<u64>,
}

/// Invariant names a scenario may expect.
pub const KNOWN_ANOMALIES: &[&str] = &[
    "lost-write",
    "unseen",
    "inconsistent-offsets",
    "duplicate",
    "nonmonotonic-send",
    "realtime-order",
    "poll-skip",
    "nonmonotonic-poll",
    "hw-monotonic",
    "phantom-value",
    "read-then-vanished",
    "hw-bounded",
    "single-leader",
    "epoch-monotonic",
    "no-truncation-below-hw",
    "replica-prefix",
    "isr-enforced",
    "leader-from-isr",
    "metadata-durable",
    "epoch-history",
    "node-cannot-start",
    "halt-without-fault",
];

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        #[allow(clippy::disallowed_methods)] // scenario files are read by the harness, outside any simulated node
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.display().to_string(),
            line: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a scenario; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |span| line_of(text, span.start));
            ScenarioError {
                file: file.to_string(),
                line,
                field: field_of(e.message()),
                message: e.message().trim().to_string(),
            }
        })?;
        scenario.validate().map_err(|(field, message)| ScenarioError {
            file: file.to_string(),
            line: line_of_field(text, &field),
            field,
            message,
        })?;
        Ok(scenario)
    }

    /// Checks what TOML types cannot: ranges, targets, anomaly names.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, message: String| Err((field.to_string(), message));
        if !(1..=9).contains(&self.cluster.brokers) {
            return bad("cluster.brokers", format!("must be 1 to 9, got {}", self.cluster.brokers));
        }
        if self.topic.partitions < 1 {
            return bad("topic.partitions", format!("must be at least 1, got {}", self.topic.partitions));
        }
        if self.topic.replication_factor < 1 || self.topic.replication_factor as u32 > self.cluster.brokers {
            return bad(
                "topic.replication_factor",
                format!("must be 1 to {} (the brokers), got {}", self.cluster.brokers, self.topic.replication_factor),
            );
        }
        if self.workload.producers == 0 {
            return bad("workload.producers", "at least one producer is needed to have something to check".to_string());
        }
        if self.workload.duration_s == 0 {
            return bad("workload.duration_s", "must be positive".to_string());
        }
        if let Some(name) = &self.workload.group_assignor {
            if crate::group_assignors::Assignor::parse(name).is_none() {
                return bad(
                    "workload.group_assignor",
                    format!("unknown assignor `{name}`: use range, roundrobin or cooperative-sticky"),
                );
            }
        }
        if let Some(protocol) = &self.workload.group_protocol {
            if protocol != "classic" && protocol != "consumer" {
                return bad(
                    "workload.group_protocol",
                    format!("unknown protocol `{protocol}`: use classic or consumer"),
                );
            }
        }
        for fault in &self.faults.scripted {
            let all = fault.target == "all";
            if all != (fault.kind == FaultKind::CrashAll) {
                return bad(
                    "faults.scripted.target",
                    "target `all` goes with kind `crash-all`, and only with it".to_string(),
                );
            }
            if !all && !self.is_node(&fault.target) {
                let controller = if self.cluster.brokers > 1 { ", controller" } else { "" };
                return bad(
                    "faults.scripted.target",
                    format!(
                        "unknown node `{}`: use broker-1 .. broker-{}, leader, follower{controller}, and with group consumers coordinator, member-1 .. member-{}",
                        fault.target, self.cluster.brokers, self.workload.group_consumers
                    ),
                );
            }
            let client = fault.target.starts_with("member-");
            let client_kinds = [FaultKind::Crash, FaultKind::Kill, FaultKind::Pause, FaultKind::Isolate];
            if client && !client_kinds.contains(&fault.kind) {
                return bad(
                    "faults.scripted.kind",
                    "a group member can be crashed, killed, paused or isolated, nothing else".to_string(),
                );
            }
            if fault.target == "follower" && self.topic.replication_factor < 2 {
                return bad("faults.scripted.target", "`follower` needs replication_factor of 2 or more".to_string());
            }
            if fault.at_s < 0.0 || fault.at_s > self.workload.duration_s as f64 {
                return bad(
                    "faults.scripted.at_s",
                    format!("{} is outside the fault phase (0 to {} s)", fault.at_s, self.workload.duration_s),
                );
            }
            if fault.duration_s < 0.0 {
                return bad("faults.scripted.duration_s", format!("must not be negative, got {}", fault.duration_s));
            }
            if let Some(probability) = fault.probability {
                if !matches!(fault.kind, FaultKind::DiskError | FaultKind::DiskCorruption) {
                    return bad(
                        "faults.scripted.probability",
                        "only `disk-error` and `disk-corruption` faults have a probability".to_string(),
                    );
                }
                if !(probability > 0.0 && probability <= 1.0) {
                    return bad(
                        "faults.scripted.probability",
                        format!("must be above 0 and at most 1, got {probability}"),
                    );
                }
            }
        }
        if let Some(swarm) = &self.faults.swarm {
            if swarm.kinds.is_empty() || swarm.faults_per_minute.is_nan() || swarm.faults_per_minute <= 0.0 {
                return bad("faults.swarm", "needs at least one kind and a positive faults_per_minute".to_string());
            }
        }
        for anomaly in &self.expect.anomalies {
            if !KNOWN_ANOMALIES.contains(&anomaly.as_str()) {
                return bad(
                    "expect.anomalies",
                    format!("unknown anomaly `{anomaly}`; known: {}", KNOWN_ANOMALIES.join(", ")),
                );
            }
        }
        match (self.expect.outcome, self.expect.anomalies.is_empty()) {
            (ExpectedOutcome::Pass, false) => {
                bad("expect.anomalies", "outcome `pass` expects no anomalies".to_string())
            }
            (ExpectedOutcome::Anomalies, true) => bad(
                "expect.anomalies",
                "outcome `anomalies` needs the list of anomalies that must be found".to_string(),
            ),
            _ => Ok(()),
        }
    }

    fn is_node(&self, name: &str) -> bool {
        if name == "leader" || name == "follower" || (name == "controller" && self.cluster.brokers > 1) {
            return true;
        }
        if name == "coordinator" {
            return self.workload.group_consumers > 0;
        }
        if let Some(n) = name.strip_prefix("member-") {
            return n.parse::<u32>().is_ok_and(|n| (1..=self.workload.group_consumers).contains(&n));
        }
        name.strip_prefix("broker-")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=self.cluster.brokers).contains(&n))
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where the last component of a dotted field is set, or where its table starts.
fn line_of_field(text: &str, field: &str) -> usize {
    let key = field.rsplit('.').next().unwrap_or(field);
    let table = field.rsplit_once('.').map(|(t, _)| t).unwrap_or("");
    let mut in_table = table.is_empty();
    let mut table_line = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            let name = trimmed.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = name == table;
            if in_table && table_line == 0 {
                table_line = i + 1;
            }
            continue;
        }
        if in_table && trimmed.split('=').next().map(str::trim) == Some(key) {
            return i + 1;
        }
    }
    table_line
}

/// The field named in a serde message (`unknown field `x``, `missing field `y``), if any.
fn field_of(message: &str) -> String {
    message.split('`').nth(1).unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "example"

[cluster]
brokers = 1

[topic]
partitions = 3
flush_messages = 1

[workload]
producers = 2
consumers = 1
acks = "all"
duration_s = 30

[[faults.scripted]]
at_s = 10.0
kind = "crash"
target = "broker-1"
duration_s = 2.0

[expect]
outcome = "pass"
"#;

    #[test]
    fn a_well_formed_scenario_parses() {
        let s = Scenario::parse(GOOD, "good.toml").unwrap();
        assert_eq!(s.topic.partitions, 3);
        assert_eq!(s.topic.flush_messages, Some(1));
        assert_eq!(s.workload.acks, Acks::All);
        assert_eq!(s.faults.scripted[0].kind, FaultKind::Crash);
    }

    #[test]
    fn a_misspelled_field_is_reported_with_file_line_and_field() {
        let text = GOOD.replace("flush_messages = 1", "flush_mesages = 1");
        let err = Scenario::parse(&text, "bad.toml").unwrap_err();
        assert_eq!(err.file, "bad.toml");
        assert_eq!(err.line, 9);
        assert_eq!(err.field, "flush_mesages");
        assert!(err.to_string().starts_with("bad.toml:9: `flush_mesages`"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_reported_with_its_line() {
        let text = GOOD.replace("producers = 2", "producers = \"two\"");
        let err = Scenario::parse(&text, "bad.toml").unwrap_err();
        assert_eq!(err.line, 12, "{err}");
    }

    #[test]
    fn an_unknown_fault_target_is_reported_with_its_line() {
        let text = GOOD.replace("target = \"broker-1\"", "target = \"broker-7\"");
        let err = Scenario::parse(&text, "bad.toml").unwrap_err();
        assert_eq!((err.line, err.field.as_str()), (20, "faults.scripted.target"), "{err}");
        assert!(err.message.contains("broker-7"));
    }

    #[test]
    fn expectations_must_name_known_anomalies() {
        let text = GOOD.replace("outcome = \"pass\"", "outcome = \"anomalies\"\nanomalies = [\"lost-writes\"]");
        let err = Scenario::parse(&text, "bad.toml").unwrap_err();
        assert_eq!(err.field, "expect.anomalies");
        assert!(err.message.contains("lost-write"), "{err}");
    }
}
