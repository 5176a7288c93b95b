//! The simulated world: broker nodes and, with more than one broker, a controller node; each
//! keeps its `SimDisk` across restarts. Starting, killing and restarting nodes; what the state
//! checkers learn from them (replica changes from each broker's observation tap, and the
//! simulator's own record of when a node went down); the workload topic.

use crate::check::availability::PartitionSnapshot;
use crate::check::replicas::ReplicaCopy;
use crate::check::Violation;
use crate::config_draw::ConfigDraw;
use crate::disk::SimDisk;
use crate::nemesis::stream_seed;
use crate::observation::{Impairment, ImpairmentKind, NodeExit, NodeRef, StateEvent};
use crate::scenario::Scenario;
use broker::controller::{Controller, MetadataImage, MetadataRecord};
use broker::protocol::client::Connection;
use broker::server::state::PartitionObservation;
use broker::server::{self, Broker, BrokerConfig};
use broker::types::{ErrorCode, TopicPartition};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use madsim::runtime::{Handle, NodeHandle};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// `offsets.topic.num.partitions` of every simulated broker.
pub const OFFSETS_PARTITIONS: i32 = 3;

/// Where every simulated node keeps its data (`log.dirs`).
pub const DATA_DIR: &str = "/data";
/// The controller node's address (clusters of more than one broker).
const CONTROLLER_ADDR: &str = "10.0.0.100:9093";
const CONTROLLER_NODE_ID: i32 = 100;

/// Timings scaled to the simulation (Kafka's defaults are 2 s heartbeats, a 9 s session and
/// 30 s of replica lag): faults of a few seconds then move leaders and shrink ISRs. Each seed
/// draws its own heartbeat, session and lag timings around these (`config_draw`).
const SIM_TIMINGS: &[(&str, &str)] = &[
    ("replica.fetch.wait.max.ms", "200"),
    ("log.retention.check.interval.ms", "1000"),
    // A group's first members need not wait 3 s for others (runs are short).
    ("group.initial.rebalance.delay.ms", "0"),
    // KIP-848 groups: the classic members' 6 s session and 500 ms heartbeats.
    ("group.consumer.min.session.timeout.ms", "6000"),
    ("group.consumer.session.timeout.ms", "6000"),
    ("group.consumer.min.heartbeat.interval.ms", "500"),
    ("group.consumer.heartbeat.interval.ms", "500"),
];

/// What runs on a node, for observation: set while it runs, cleared when it is killed.
#[derive(Clone, Default)]
struct Running {
    broker: Option<Arc<Broker>>,
    controller: Option<Arc<Mutex<Controller>>>,
    /// Which start of the node's process this is (0 = the first).
    incarnation: u32,
    /// The process ended by itself (halted, or its start failed) and nobody has killed or
    /// restarted it since: its supervisor will.
    exited: bool,
}

/// Exits the nodes report, for the supervisor (`crate::supervisor`) and the exit checks.
#[derive(Default)]
pub struct Exits {
    /// Not yet taken by the supervisor.
    new: Mutex<Vec<NodeExit>>,
    /// Every exit of the run.
    all: Mutex<Vec<NodeExit>>,
    /// Woken on each report.
    pub reported: Notify,
}

impl Exits {
    fn report(&self, exit: NodeExit) {
        self.new.lock().expect("exits lock").push(exit.clone());
        self.all.lock().expect("exits lock").push(exit);
        self.reported.notify_one();
    }

    /// The exits reported since the last call.
    pub fn take_new(&self) -> Vec<NodeExit> {
        std::mem::take(&mut *self.new.lock().expect("exits lock"))
    }

    /// Every exit of the run so far, in the order they happened.
    pub fn all(&self) -> Vec<NodeExit> {
        self.all.lock().expect("exits lock").clone()
    }
}

/// A node (broker, or the controller): its disk survives restarts; `live` is its observation
/// hook while it runs.
pub struct SimNode {
    pub id: NodeRef,
    pub node: NodeHandle,
    pub disk: SimDisk,
    live: Arc<Mutex<Running>>,
    pub addr: String,
}

impl SimNode {
    pub fn name(&self) -> String {
        self.id.to_string()
    }

    pub fn broker(&self) -> Option<Arc<Broker>> {
        self.live.lock().expect("live lock").broker.clone()
    }

    pub fn controller(&self) -> Option<Arc<Mutex<Controller>>> {
        self.live.lock().expect("live lock").controller.clone()
    }

    /// Whether the node runs and serves: a broker whose log directory went offline, or a
    /// process that exited, does not.
    pub fn healthy(&self) -> bool {
        let running = self.live.lock().expect("live lock").clone();
        if running.exited {
            return false;
        }
        match (&running.broker, &running.controller) {
            (Some(broker), _) => broker.offline_reason().is_none(),
            (None, Some(_)) => true,
            (None, None) => false,
        }
    }

    /// The replica changes its broker recorded since the last drain, as state events.
    fn drain(&self, origin: Instant) -> Vec<StateEvent> {
        let running = self.live.lock().expect("live lock").clone();
        let Some(broker) = running.broker else { return Vec::new() };
        let (events, dropped) = broker.observation_tap.drain();
        assert_eq!(dropped, 0, "{}: the observation tap overflowed; drain it more often", self.id);
        events
            .into_iter()
            .map(|e| StateEvent::Replica {
                at_ns: e.at.saturating_duration_since(origin).as_nanos() as u64,
                node: self.id,
                incarnation: running.incarnation,
                state: e.state,
            })
            .collect()
    }
}

/// The world's nodes. `controller` is `None` when the one broker is its own controller.
pub struct World {
    pub brokers: Vec<SimNode>,
    pub controller: Option<SimNode>,
    handle: Handle,
    /// The run's time origin (the history's too).
    origin: Instant,
    /// State events drained but not yet given to the checkers.
    pending: Mutex<Vec<StateEvent>>,
    /// What the nodes' processes reported as they exited by themselves.
    pub exits: Arc<Exits>,
    /// When nodes were down, paused or cut off from the controller (see [`Impairment`]).
    impairments: Mutex<Vec<Impairment>>,
}

impl World {
    pub fn start(handle: &Handle, scenario: &Scenario, draw: &ConfigDraw, seed: u64, origin: Instant) -> World {
        let exits: Arc<Exits> = Arc::default();
        let separate_controller = scenario.cluster.brokers > 1;
        let controller = separate_controller.then(|| {
            let settings = [
                ("process.roles", "controller".to_string()),
                ("listeners", format!("CONTROLLER://{CONTROLLER_ADDR}")),
                ("default.replication.factor", scenario.topic.replication_factor.to_string()),
            ];
            let config = node_config(scenario, draw, CONTROLLER_NODE_ID, &settings);
            let ip: IpAddr = CONTROLLER_ADDR.split(':').next().expect("ip").parse().expect("valid ip");
            let spec = NodeSpec { seed, origin, exits: exits.clone() };
            start_node(handle, &spec, NodeRef::Controller, ip, CONTROLLER_ADDR.to_string(), config)
        });
        let brokers = (1..=scenario.cluster.brokers as i32)
            .map(|id| {
                let ip: IpAddr = format!("10.0.0.{id}").parse().expect("valid ip");
                let addr = format!("{ip}:9092");
                let mut settings = vec![("listeners", format!("PLAINTEXT://{addr}"))];
                if separate_controller {
                    settings.push(("process.roles", "broker".to_string()));
                    settings.push(("controller.quorum.voters", format!("{CONTROLLER_NODE_ID}@{CONTROLLER_ADDR}")));
                }
                let config = node_config(scenario, draw, id, &settings);
                let spec = NodeSpec { seed, origin, exits: exits.clone() };
                start_node(handle, &spec, NodeRef::Broker(id), ip, addr, config)
            })
            .collect();
        World {
            brokers,
            controller,
            handle: handle.clone(),
            origin,
            pending: Mutex::default(),
            exits,
            impairments: Mutex::default(),
        }
    }

    /// Records that `node` (`None`: the whole network) is impaired from now on; returns the
    /// handle [`World::restore`] takes.
    pub fn impair(&self, node: Option<NodeRef>, kind: ImpairmentKind) -> usize {
        self.impair_since(node, kind, self.origin.elapsed().as_nanos() as u64)
    }

    /// As [`World::impair`], from an earlier instant (an exit the supervisor learns of now).
    pub fn impair_since(&self, node: Option<NodeRef>, kind: ImpairmentKind, from_ns: u64) -> usize {
        let mut impairments = self.impairments.lock().expect("impairments lock");
        impairments.push(Impairment { node, kind, from_ns, to_ns: None });
        impairments.len() - 1
    }

    /// Ends the impairment `index` now.
    pub fn restore(&self, index: usize) {
        let now = self.origin.elapsed().as_nanos() as u64;
        let mut impairments = self.impairments.lock().expect("impairments lock");
        let impairment = &mut impairments[index];
        impairment.to_ns.get_or_insert(now);
    }

    pub fn impairments(&self) -> Vec<Impairment> {
        self.impairments.lock().expect("impairments lock").clone()
    }

    /// The node `id` names.
    pub fn node(&self, id: NodeRef) -> &SimNode {
        self.nodes().find(|n| n.id == id).expect("every exit names a node of this world")
    }

    /// The supervisor takes an exit: if nobody killed or restarted the node since, its
    /// process's last changes go to the checkers, then it is down. Returns whether the node
    /// is still the exited process (so the supervisor should start it again).
    pub fn take_exit(&self, exit: &NodeExit) -> bool {
        let node = self.node(exit.node);
        let running = node.live.lock().expect("live lock").clone();
        if !running.exited || running.incarnation != exit.incarnation {
            return false;
        }
        let mut events = node.drain(self.origin);
        // The process is gone: its connections close, as the OS closes an exited process's.
        self.handle.kill(node.node.id());
        *node.live.lock().expect("live lock") =
            Running { broker: None, controller: None, incarnation: exit.incarnation, exited: true };
        events.push(StateEvent::Down { at_ns: exit.at_ns, node: node.id });
        self.pending.lock().expect("pending lock").extend(events);
        true
    }

    /// The supervisor's restart: only if the node is still the process that exited as
    /// `incarnation` (the nemesis or the heal phase may have restarted it meanwhile).
    pub fn restart_exited(&self, id: NodeRef, incarnation: u32) -> bool {
        let node = self.node(id);
        let running = node.live.lock().expect("live lock").clone();
        if !running.exited || running.incarnation != incarnation {
            return false;
        }
        *node.live.lock().expect("live lock") = Running::default();
        self.restart(node);
        true
    }

    /// Every node, brokers first.
    pub fn nodes(&self) -> impl Iterator<Item = &SimNode> {
        self.brokers.iter().chain(self.controller.iter())
    }

    /// The broker with `node.id` `id`.
    pub fn broker_node(&self, id: i32) -> Option<&SimNode> {
        self.brokers.iter().find(|b| b.id == NodeRef::Broker(id))
    }

    /// The node holding the controller role.
    pub fn controller_node(&self) -> &SimNode {
        self.controller.as_ref().unwrap_or(&self.brokers[0])
    }

    /// The committed metadata, if the controller is up.
    pub fn metadata(&self) -> Option<MetadataImage> {
        let controller = self.controller_node().controller()?;
        let image = controller.lock().expect("controller lock").image().clone();
        Some(image)
    }

    pub fn bootstrap(&self) -> Vec<String> {
        self.brokers.iter().map(|b| b.addr.clone()).collect()
    }

    /// Kills a node's process (its disk stays as the fault leaves it). What it recorded up to
    /// now is kept for the checkers, then it is down.
    pub fn kill(&self, node: &SimNode) {
        let mut events = node.drain(self.origin);
        self.handle.kill(node.node.id());
        *node.live.lock().expect("live lock") = Running::default();
        events.push(StateEvent::Down { at_ns: self.origin.elapsed().as_nanos() as u64, node: node.id });
        self.pending.lock().expect("pending lock").extend(events);
    }

    /// Starts a killed node's process again (after a kill: never restart alone).
    pub fn restart(&self, node: &SimNode) {
        node.disk.before_restart(Path::new(DATA_DIR));
        self.handle.restart(node.node.id());
    }

    /// The state events since the last call, in simulated time order (ties by node).
    pub fn take_state_events(&self) -> Vec<StateEvent> {
        let mut events = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        for node in &self.brokers {
            events.extend(node.drain(self.origin));
        }
        events.sort_by_key(|e| (e.at_ns(), e.node()));
        events
    }

    /// The controller's committed records as its running process holds them, with that
    /// process's incarnation (`None` while it is down).
    pub fn with_controller_records<T>(&self, f: impl FnOnce(u32, &[MetadataRecord]) -> T) -> Option<T> {
        let node = self.controller_node();
        let running = node.live.lock().expect("live lock").clone();
        let controller = running.controller?;
        let controller = controller.lock().expect("controller lock");
        Some(f(running.incarnation, controller.records_from(0, usize::MAX)))
    }

    /// Every live broker's observations.
    /// Each partition of `topic` as its replicas report it now, with the controller's assignment.
    pub fn partition_snapshots(&self, topic: &str, partitions: i32) -> Vec<PartitionSnapshot> {
        let image = self.metadata();
        let observed = self.observe_all();
        (0..partitions)
            .map(|partition| {
                let replicas = image
                    .as_ref()
                    .and_then(|image| {
                        let topic_id = image.topics.get(topic)?.topic_id;
                        Some(image.partitions.get(&(topic_id, partition))?.replicas.clone())
                    })
                    .unwrap_or_default();
                let reported = observed
                    .iter()
                    .filter_map(|(node, observations)| {
                        let state = observations.iter().find(|o| o.topic == topic && o.state.partition == partition)?;
                        Some((node.broker_id()?, state.state.clone()))
                    })
                    .collect();
                PartitionSnapshot { partition, replicas, reported }
            })
            .collect()
    }

    /// The fewest segments any broker holds for any partition of `topic` (from its disk).
    pub fn fewest_segments(&self, topic: &str, partitions: i32) -> usize {
        use broker::storage::Disk;
        let dir = |p: i32| Path::new(DATA_DIR).join(format!("{topic}-{p}"));
        self.brokers
            .iter()
            .flat_map(|b| {
                (0..partitions).filter_map(move |p| {
                    let names = b.disk.disk.list_dir(&dir(p)).ok()?;
                    Some(names.iter().filter(|n| n.ends_with(".log")).count())
                })
            })
            .min()
            .unwrap_or(0)
    }

    pub fn observe_all(&self) -> Vec<(NodeRef, Vec<PartitionObservation>)> {
        self.brokers.iter().filter_map(|b| Some((b.id, b.broker()?.observe()))).collect()
    }

    /// Each node's epoch history across its restarts (see `check::epochs`), as its disk saw it.
    pub fn epoch_history_violations(&self) -> Vec<Violation> {
        self.nodes()
            .flat_map(|node| {
                let name = node.name();
                node.disk.epoch_history_violations().into_iter().map(move |detail| Violation {
                    invariant: "epoch-history",
                    partition: -1,
                    offsets: vec![],
                    values: vec![],
                    operations: vec![],
                    detail: format!("{name}: {detail}"),
                })
            })
            .collect()
    }

    /// For each partition of `topic` with a live leader: its HW, the leader's copy below it and
    /// each live ISR member's copy (for replica-prefix).
    pub fn replica_copies(&self, topic: &str, partitions: i32) -> Vec<(i32, i64, ReplicaCopy, Vec<ReplicaCopy>)> {
        let mut found = Vec::new();
        for partition in 0..partitions {
            let tp = TopicPartition::new(topic, partition);
            let brokers: Vec<(NodeRef, Arc<Broker>)> =
                self.brokers.iter().filter_map(|b| Some((b.id, b.broker()?))).collect();
            let leader = brokers.iter().find_map(|(id, b)| {
                let o = b
                    .observe()
                    .into_iter()
                    .find(|o| o.topic == topic && o.state.partition == partition && o.state.leader)?;
                Some((*id, b.clone(), o.state))
            });
            let Some((leader_id, leader_broker, leader)) = leader else { continue };
            let copy = |id: NodeRef, broker: &Broker| {
                let (log_start_offset, bytes) = broker.replica_bytes(&tp, leader.high_watermark)?;
                Some(ReplicaCopy { node: id, log_start_offset, bytes })
            };
            let Some(reference) = copy(leader_id, &leader_broker) else { continue };
            let members = brokers
                .iter()
                .filter(|(id, _)| *id != leader_id && id.broker_id().is_some_and(|b| leader.isr.contains(&b)))
                .filter_map(|(id, b)| copy(*id, b))
                .collect();
            found.push((partition, leader.high_watermark, reference, members));
        }
        found
    }
}

fn node_config(scenario: &Scenario, draw: &ConfigDraw, node_id: i32, settings: &[(&str, String)]) -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.set("node.id", &node_id.to_string()).expect("valid");
    config.set("log.dirs", DATA_DIR).expect("valid");
    config.set("auto.create.topics.enable", "false").expect("valid");
    config.set("log.segment.bytes", "65536").expect("valid");
    // A small __consumer_offsets (created when a client first looks up a group coordinator),
    // replicated like a production one as far as the cluster allows.
    config.set("offsets.topic.num.partitions", &OFFSETS_PARTITIONS.to_string()).expect("valid");
    // Small offsets segments and a cleaner that looks every second: group commits roll
    // segments within a run, and the cleaner compacts them under the run's faults.
    config.set("offsets.topic.segment.bytes", "4096").expect("valid");
    config.set("log.cleaner.backoff.ms", "1000").expect("valid");
    let offsets_replication = scenario.cluster.brokers.min(3);
    config.set("offsets.topic.replication.factor", &offsets_replication.to_string()).expect("valid");
    // Kafka's production advice, cluster-wide: acks=all group writes need two replicas where
    // there are two (the workload's topic sets its own). With one, a commit acknowledged by a
    // lone leader is lost with that leader's page cache.
    config.set("min.insync.replicas", &offsets_replication.min(2).to_string()).expect("valid");
    config.set("unclean.leader.election.enable", &scenario.topic.unclean_leader_election.to_string()).expect("valid");
    for (key, value) in SIM_TIMINGS {
        config.set(key, value).expect("valid");
    }
    for (key, value) in draw.broker_settings() {
        config.set(key, &value).unwrap_or_else(|e| panic!("drawn config {key}={value}: {e}"));
    }
    for (key, value) in settings {
        config.set(key, value).unwrap_or_else(|e| panic!("sim config {key}={value}: {e}"));
    }
    config
}

/// What every node of a world shares.
struct NodeSpec {
    seed: u64,
    origin: Instant,
    exits: Arc<Exits>,
}

/// A node whose process starts the broker and/or controller and serves until it halts (a fatal
/// disk error) or its start fails; either is reported to the supervisor, which ends the process
/// at once (`World::take_exit`) and later starts it again.
fn start_node(
    handle: &Handle,
    spec: &NodeSpec,
    id: NodeRef,
    ip: IpAddr,
    addr: String,
    config: BrokerConfig,
) -> SimNode {
    let disk = SimDisk::new(stream_seed(spec.seed, &format!("disk-{id}")));
    let live: Arc<Mutex<Running>> = Arc::default();
    let starts = Arc::new(AtomicU32::new(0));
    let (node_disk, node_live, node_starts) = (disk.disk.clone(), live.clone(), starts.clone());
    let (origin, exits) = (spec.origin, spec.exits.clone());
    let node = handle
        .create_node()
        .name(id.to_string())
        .ip(ip)
        .init(move || {
            let (disk, live, config, exits) = (node_disk.clone(), node_live.clone(), config.clone(), exits.clone());
            let incarnation = node_starts.fetch_add(1, Ordering::SeqCst);
            let since_origin = move || origin.elapsed().as_nanos() as u64;
            let started_at_ns = since_origin();
            let opened = {
                let live = live.clone();
                // The broker's replica changes are observed from its first one, also when the
                // start fails later.
                move |broker| {
                    *live.lock().expect("live lock") =
                        Running { broker: Some(broker), controller: None, incarnation, exited: false }
                }
            };
            async move {
                let (while_starting, reason) = match server::start_observed(config, Arc::new(disk), opened).await {
                    Ok(running) => {
                        *live.lock().expect("live lock") = Running {
                            broker: running.broker.clone(),
                            controller: running.controller.clone(),
                            incarnation,
                            exited: false,
                        };
                        (false, running.halt.halted().await)
                    }
                    Err(e) => (true, format!("{e:#}")),
                };
                tracing::warn!(node = %id, while_starting, reason, "the process exits");
                {
                    let mut live = live.lock().expect("live lock");
                    live.incarnation = incarnation;
                    live.exited = true;
                }
                exits.report(NodeExit {
                    at_ns: since_origin(),
                    node: id,
                    incarnation,
                    started_at_ns,
                    while_starting,
                    reason,
                });
                // The supervisor ends the process now (a kill: the same path as the nemesis's,
                // which closes its connections); nothing runs on it that could write: the
                // failed log refuses appends and the offline directory refuses everything.
                std::future::pending::<()>().await;
            }
        })
        .build();
    SimNode { id, node, disk, live, addr }
}

/// Creates the workload's topic, retrying until the broker answers.
pub async fn create_topic(bootstrap: &[String], scenario: &Scenario) -> Result<(), String> {
    let mut configs = vec![("min.insync.replicas", scenario.topic.min_insync_replicas.to_string())];
    if let Some(messages) = scenario.topic.flush_messages {
        configs.push(("flush.messages", messages.to_string()));
    }
    if let Some(bytes) = scenario.topic.segment_bytes {
        configs.push(("segment.bytes", bytes.to_string()));
    }
    if let Some(ms) = scenario.topic.flush_ms {
        configs.push(("flush.ms", ms.to_string()));
    }
    if let Some(bytes) = scenario.topic.index_interval_bytes {
        configs.push(("index.interval.bytes", bytes.to_string()));
    }
    if scenario.topic.unclean_leader_election {
        configs.push(("unclean.leader.election.enable", "true".to_string()));
    }
    let configs: Vec<CreatableTopicConfig> = configs
        .into_iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str(k))
                .with_value(Some(StrBytes::from_string(v)))
        })
        .collect();
    for attempt in 0..200 {
        let addr = &bootstrap[attempt % bootstrap.len()];
        if let Ok(mut conn) = Connection::connect(addr, "setup").await {
            conn.request_timeout = Duration::from_secs(2);
            let request =
                CreateTopicsRequest::default().with_timeout_ms(2000).with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(scenario.topic.name.clone())))
                    .with_num_partitions(scenario.topic.partitions)
                    .with_replication_factor(scenario.topic.replication_factor)
                    .with_configs(configs.clone())]);
            if let Ok(ResponseKind::CreateTopics(r)) =
                conn.send(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(request)).await
            {
                match ErrorCode(r.topics[0].error_code) {
                    ErrorCode::NONE | ErrorCode::TOPIC_ALREADY_EXISTS => return Ok(()),
                    // Not every broker has registered yet.
                    ErrorCode::REQUEST_TIMED_OUT | ErrorCode::INVALID_REPLICATION_FACTOR => {}
                    code => {
                        return Err(format!(
                            "CreateTopics refused the scenario's topic: error {code} {:?}",
                            r.topics[0].error_message
                        ))
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the cluster never accepted the topic".to_string())
}

/// Waits until every partition has caught up (every assigned replica in its leader's ISR, at
/// the leader's log end), or the deadline; returns the last snapshot either way.
pub async fn wait_for_catch_up(world: &World, scenario: &Scenario, deadline: Instant) -> Vec<PartitionSnapshot> {
    loop {
        let snapshots = world.partition_snapshots(&scenario.topic.name, scenario.topic.partitions);
        if snapshots.iter().all(|s| s.not_caught_up().is_none()) || Instant::now() >= deadline {
            return snapshots;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
