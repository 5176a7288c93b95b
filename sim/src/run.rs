//! One run: a scenario and a seed → a world, a workload, faults, a heal phase, checks.
//!
//! Phases: **setup** (brokers start, the topic is created), **fault phase** (the workload runs
//! while the nemesis injects the planned faults), **heal phase** (faults stop, crashed and
//! offline brokers restart, links heal, producers finish, final reads read every partition to
//! its end within `heal_s`: not getting there is a liveness failure), **checks** (history
//! checkers; state checks ran at a fixed cadence throughout).

use crate::check::{check_history, Violation};
use crate::client::{final_read, run_consumer, run_producer, ProducerConfig, Recorder, StopSignal};
use crate::disk::{DiskFaultCounts, DiskFaults, SimDisk};
use crate::history::{History, Process};
use crate::hostile::run_hostile_client;
use crate::nemesis::{loses_data, plan, start_times, stream_seed, FaultEvent, PlannedFault, Target, RECOVERY_WINDOW};
use crate::scenario::{Acks, FaultKind, Scenario};
use broker::controller::{Controller, MetadataImage, MetadataRecord, NO_LEADER};
use broker::protocol::client::Connection;
use broker::server::state::PartitionObservation;
use broker::server::{self, Broker, BrokerConfig};
use broker::types::TopicPartition;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use madsim::runtime::{Handle, NodeHandle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often the state checks observe every live broker.
/// Where every simulated node keeps its data (`log.dirs`).
const DATA_DIR: &str = "/data";
const STATE_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Probability per disk operation while a disk fault is on.
const DISK_FAULT_PROBABILITY: f64 = 0.02;
/// Latency per disk operation (at most) while the slow-disk fault is on.
const DISK_SLOW_MS_MAX: u64 = 20;

/// Whether the faults of a run stayed within what the configuration promises to survive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub within: bool,
    pub reason: String,
}

/// Everything a run produced.
#[derive(Clone, Debug, Serialize)]
pub struct RunOutcome {
    pub scenario: String,
    pub seed: u64,
    pub budget: Budget,
    pub violations: Vec<Violation>,
    /// Set when the heal phase did not converge in time.
    pub liveness_failure: Option<String>,
    pub faults: Vec<FaultEvent>,
    pub history: History,
    pub final_observations: Vec<(String, Vec<PartitionObservation>)>,
    /// What each broker's disk did to it.
    pub disk_faults: Vec<(String, DiskFaultCounts)>,
    pub simulated_ns: u64,
    /// Hash of everything observable about the run: same seed, same hash.
    pub trace_hash: u64,
}

/// What runs on a node, for observation: set while it runs, cleared when it dies.
#[derive(Clone, Default)]
struct Running {
    broker: Option<Arc<Broker>>,
    controller: Option<Arc<Mutex<Controller>>>,
}

/// The observation hook of a node.
type LiveNode = Arc<Mutex<Running>>;

/// A node (broker, or the controller): its disk survives restarts; `live` is its observation
/// hook while it runs.
struct SimNode {
    name: String,
    node: NodeHandle,
    disk: SimDisk,
    live: LiveNode,
    addr: String,
}

impl SimNode {
    fn broker(&self) -> Option<Arc<Broker>> {
        self.live.lock().expect("live lock").broker.clone()
    }

    fn controller(&self) -> Option<Arc<Mutex<Controller>>> {
        self.live.lock().expect("live lock").controller.clone()
    }

    fn set_dead(&self) {
        *self.live.lock().expect("live lock") = Running::default();
    }
}

/// The world's nodes. `controller` is `None` when the one broker is its own controller.
struct World {
    brokers: Vec<SimNode>,
    controller: Option<SimNode>,
}

impl World {
    /// The node holding the controller role.
    fn controller_node(&self) -> &SimNode {
        self.controller.as_ref().unwrap_or(&self.brokers[0])
    }

    /// The committed metadata, if the controller is up.
    fn metadata(&self) -> Option<MetadataImage> {
        let controller = self.controller_node().controller()?;
        let image = controller.lock().expect("controller lock").image().clone();
        Some(image)
    }

    fn bootstrap(&self) -> Vec<String> {
        self.brokers.iter().map(|b| b.addr.clone()).collect()
    }
}

/// Which faults the configuration promises to survive without losing acknowledged writes.
pub fn budget(scenario: &Scenario, faults: &[PlannedFault]) -> Budget {
    let beyond = |reason: &str| Budget { within: false, reason: reason.to_string() };
    let topic = &scenario.topic;
    let loses_data = |f: &PlannedFault| loses_data(scenario, f);
    let moves_leadership = |f: &PlannedFault| !matches!(f.kind, FaultKind::SlowNetwork | FaultKind::DiskSlow);
    let hits_broker = |f: &PlannedFault| f.target != Target::Controller;
    if topic.replication_factor == 1 {
        if faults.iter().any(|f| loses_data(f) && hits_broker(f)) {
            return beyond(
                "power loss (or disk loss) of the only replica without an fsync per message: acknowledged records may be lost",
            );
        }
        if faults.iter().any(|f| f.kind == FaultKind::Crash) && scenario.workload.acks != Acks::All {
            return beyond("power loss with acks below all");
        }
        return Budget { within: true, reason: "every fault is one the configuration survives".to_string() };
    }
    if topic.unclean_leader_election && faults.iter().any(|f| moves_leadership(f) && hits_broker(f)) {
        return beyond("unclean leader election may elect a replica that misses acknowledged writes");
    }
    if scenario.workload.acks != Acks::All && faults.iter().any(|f| moves_leadership(f) && hits_broker(f)) {
        return beyond("acks below all: a write is acknowledged before the followers have it");
    }
    if faults.iter().any(|f| f.kind == FaultKind::CrashAll && loses_data(f)) {
        return beyond("every replica lost power without an fsync per message");
    }
    let starts = start_times(faults);
    let losses: Vec<(Duration, &PlannedFault)> =
        starts.into_iter().zip(faults).filter(|(_, f)| loses_data(f) && hits_broker(f)).collect();
    if !losses.is_empty() && topic.min_insync_replicas < 2 {
        return beyond(
            "min.insync.replicas below 2: an acknowledged record may live on one replica that then loses it",
        );
    }
    for pair in losses.windows(2) {
        let ((first_start, first), (second_start, _)) = (pair[0], pair[1]);
        if second_start < first_start + first.duration + RECOVERY_WINDOW {
            return beyond("two replicas lost data before the first had caught up again");
        }
    }
    Budget { within: true, reason: "every fault is one the configuration survives".to_string() }
}

/// The controller node's address (clusters of more than one broker).
const CONTROLLER_ADDR: &str = "10.0.0.100:9093";
const CONTROLLER_NODE_ID: i32 = 100;

/// Timings scaled to the simulation (Kafka's defaults are 2 s heartbeats, a 9 s session and
/// 30 s of replica lag): faults of a few seconds then move leaders and shrink ISRs.
const SIM_TIMINGS: &[(&str, &str)] = &[
    ("broker.heartbeat.interval.ms", "200"),
    ("broker.session.timeout.ms", "1500"),
    ("replica.lag.time.max.ms", "2000"),
    ("replica.fetch.wait.max.ms", "200"),
];

fn node_config(scenario: &Scenario, node_id: i32, settings: &[(&str, String)]) -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.set("node.id", &node_id.to_string()).expect("valid");
    config.set("log.dirs", DATA_DIR).expect("valid");
    config.set("auto.create.topics.enable", "false").expect("valid");
    config.set("log.segment.bytes", "65536").expect("valid");
    config.set("unclean.leader.election.enable", &scenario.topic.unclean_leader_election.to_string()).expect("valid");
    for (key, value) in SIM_TIMINGS {
        config.set(key, value).expect("valid");
    }
    for (key, value) in settings {
        config.set(key, value).unwrap_or_else(|e| panic!("sim config {key}={value}: {e}"));
    }
    config
}

fn start_node(handle: &Handle, seed: u64, name: String, ip: IpAddr, addr: String, config: BrokerConfig) -> SimNode {
    let disk = SimDisk::new(stream_seed(seed, &format!("disk-{name}")));
    let live: LiveNode = Arc::default();
    let (node_disk, node_live, node_name) = (disk.disk.clone(), live.clone(), name.clone());
    let node = handle
        .create_node()
        .name(&name)
        .ip(ip)
        .init(move || {
            let (disk, live, config, name) = (node_disk.clone(), node_live.clone(), config.clone(), node_name.clone());
            async move {
                match server::start(config, Arc::new(disk)).await {
                    Ok(running) => {
                        *live.lock().expect("live lock") =
                            Running { broker: running.broker.clone(), controller: running.controller.clone() };
                        std::future::pending::<()>().await;
                    }
                    // A node that refuses to start (corruption it will not serve) stays down.
                    Err(e) => tracing::warn!(node = name, error = %format!("{e:#}"), "node refused to start"),
                }
            }
        })
        .build();
    SimNode { name, node, disk, live, addr }
}

fn start_world(handle: &Handle, scenario: &Scenario, seed: u64) -> World {
    let separate_controller = scenario.cluster.brokers > 1;
    let controller = separate_controller.then(|| {
        let settings = [
            ("process.roles", "controller".to_string()),
            ("listeners", format!("CONTROLLER://{CONTROLLER_ADDR}")),
            ("default.replication.factor", scenario.topic.replication_factor.to_string()),
        ];
        let config = node_config(scenario, CONTROLLER_NODE_ID, &settings);
        let ip: IpAddr = CONTROLLER_ADDR.split(':').next().expect("ip").parse().expect("valid ip");
        start_node(handle, seed, "controller".to_string(), ip, CONTROLLER_ADDR.to_string(), config)
    });
    let brokers = (0..scenario.cluster.brokers as usize)
        .map(|index| {
            let ip: IpAddr = format!("10.0.0.{}", index + 1).parse().expect("valid ip");
            let addr = format!("{ip}:9092");
            let mut settings = vec![("listeners", format!("PLAINTEXT://{addr}"))];
            if separate_controller {
                settings.push(("process.roles", "broker".to_string()));
                settings.push(("controller.quorum.voters", format!("{CONTROLLER_NODE_ID}@{CONTROLLER_ADDR}")));
            }
            let config = node_config(scenario, index as i32 + 1, &settings);
            start_node(handle, seed, format!("broker-{}", index + 1), ip, addr, config)
        })
        .collect();
    World { brokers, controller }
}

/// Creates the workload's topic, retrying until the broker answers.
async fn create_topic(bootstrap: &[String], scenario: &Scenario) -> Result<(), String> {
    let mut configs = vec![("min.insync.replicas", scenario.topic.min_insync_replicas.to_string())];
    if let Some(messages) = scenario.topic.flush_messages {
        configs.push(("flush.messages", messages.to_string()));
    }
    if let Some(ms) = scenario.topic.flush_ms {
        configs.push(("flush.ms", ms.to_string()));
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
                match r.topics[0].error_code {
                    0 | 36 => return Ok(()),
                    // Not every broker has registered yet.
                    7 | 38 => {}
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

/// Runs one seed on the current thread (use a fresh OS thread per seed).
pub fn run(scenario: &Scenario, seed: u64) -> RunOutcome {
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let scenario = scenario.clone();
    runtime.block_on(async move { simulate(scenario, seed).await })
}

async fn simulate(scenario: Scenario, seed: u64) -> RunOutcome {
    let handle = Handle::current();
    let started = Instant::now();
    let recorder = Recorder::new();
    let world = Arc::new(start_world(&handle, &scenario, seed));
    let planned = plan(&scenario, seed);
    let budget = budget(&scenario, &planned);
    let bootstrap = world.bootstrap();
    let faults: Arc<Mutex<Vec<FaultEvent>>> = Arc::default();
    let state_violations: Arc<Mutex<Vec<Violation>>> = Arc::default();

    let setup = handle.create_node().name("setup").ip("10.0.2.1".parse().expect("ip")).build();
    let setup_result = setup.spawn({
        let (bootstrap, scenario) = (bootstrap.clone(), scenario.clone());
        async move { create_topic(&bootstrap, &scenario).await }
    });
    if let Err(e) = setup_result.await.expect("setup task") {
        panic!("setup failed: {e}");
    }

    // State checks at a fixed cadence, for the whole run.
    let monitor_stop = Arc::new(Notify::new());
    let monitor = {
        let (world, violations, stop) = (world.clone(), state_violations.clone(), monitor_stop.clone());
        setup.spawn(async move {
            let stopped = stop.notified();
            tokio::pin!(stopped);
            let mut tracker = StateTracker::default();
            loop {
                let observed = observe_all(&world);
                violations.lock().expect("violations").extend(tracker.check(&observed));
                tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(STATE_CHECK_INTERVAL) => {}
                }
            }
        })
    };

    // The workload.
    let workload_stop = Arc::new(Notify::new());
    let producers_stop = Arc::new(StopSignal::default());
    let mut workers = Vec::new();
    let mut producer_nodes = Vec::new();
    let producer_config = ProducerConfig {
        topic: scenario.topic.name.clone(),
        partitions: scenario.topic.partitions,
        acks: match scenario.workload.acks {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        },
        idempotence: scenario.workload.idempotence,
        rate_per_second: scenario.workload.rate_per_second,
    };
    for p in 0..scenario.workload.producers {
        let node = handle
            .create_node()
            .name(format!("producer-{}", p + 1))
            .ip(format!("10.0.1.{}", p + 1).parse().expect("ip"))
            .build();
        producer_nodes.push(node.id());
        let task = run_producer(
            Process(p + 1),
            bootstrap.clone(),
            producer_config.clone(),
            recorder.clone(),
            producers_stop.clone(),
        );
        workers.push(node.spawn(task));
    }
    for c in 0..scenario.workload.consumers {
        let process = Process(1000 + c + 1);
        let node = handle
            .create_node()
            .name(format!("consumer-{}", c + 1))
            .ip(format!("10.0.3.{}", c + 1).parse().expect("ip"))
            .build();
        let task = run_consumer(
            process,
            bootstrap.clone(),
            scenario.topic.name.clone(),
            scenario.topic.partitions,
            recorder.clone(),
            workload_stop.clone(),
        );
        workers.push(node.spawn(task));
    }

    let mut hostile = Vec::new();
    for h in 0..scenario.workload.hostile_clients {
        let node = handle
            .create_node()
            .name(format!("hostile-{}", h + 1))
            .ip(format!("10.0.5.{}", h + 1).parse().expect("ip"))
            .build();
        let task = run_hostile_client(
            stream_seed(seed, &format!("hostile-{}", h + 1)),
            bootstrap.clone(),
            workload_stop.clone(),
        );
        hostile.push((format!("hostile-{}", h + 1), node.spawn(task)));
    }

    // The fault phase.
    let fault_phase = Duration::from_secs(scenario.workload.duration_s);
    let link_peer = producer_nodes.first().copied();
    let nemesis = Nemesis {
        handle: &handle,
        world: &world,
        scenario: &scenario,
        topic: &scenario.topic.name,
        faults: &faults,
        recorder: &recorder,
    };
    nemesis.inject(link_peer, &planned, started, fault_phase).await;
    let remaining = fault_phase.saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await;

    // The heal phase.
    let heal_deadline = Instant::now() + Duration::from_secs(scenario.workload.heal_s);
    nemesis.heal();
    producers_stop.stop();
    workload_stop.notify_waiters();
    let mut liveness_failure = None;
    for worker in workers {
        let remaining = heal_deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(remaining, worker).await.is_err() {
            liveness_failure
                .get_or_insert_with(|| "a client did not finish its last operation within the heal phase".to_string());
        }
    }
    for (name, task) in hostile {
        let counts = task.await.expect("hostile client task");
        note(&faults, &recorder, &name, format!("{counts:?}"));
    }
    let reader = handle.create_node().name("final-reader").ip("10.0.4.1".parse().expect("ip")).build();
    for partition in 0..scenario.topic.partitions {
        let task = final_read(
            Process(2000 + partition as u32),
            bootstrap.clone(),
            scenario.topic.name.clone(),
            partition,
            recorder.clone(),
            heal_deadline,
        );
        if !reader.spawn(task).await.expect("final reader task") {
            liveness_failure.get_or_insert_with(|| {
                format!(
                    "the final read of partition {partition} did not reach the end within {} s",
                    scenario.workload.heal_s
                )
            });
        }
    }
    // Converged: every ISR member holds the leader's log up to the HW.
    if scenario.topic.replication_factor > 1 {
        let converged = wait_for_replicas(&world, &scenario, heal_deadline).await;
        if liveness_failure.is_none() && !converged {
            liveness_failure =
                Some("the in-sync replicas did not catch up with their leaders within the heal phase".to_string());
        }
    }
    monitor_stop.notify_waiters();
    let _ = monitor.await;

    let history = recorder.history();
    let mut violations = state_violations.lock().expect("violations").clone();
    violations.extend(check_replica_prefix(&world, &scenario));
    violations.extend(check_epoch_history(&world));
    if let Some(controller) = world.controller_node().controller() {
        let records = controller.lock().expect("controller lock").records_from(0, usize::MAX).to_vec();
        violations.extend(check_leader_from_isr(&records));
    }
    violations.extend(check_history(&history, liveness_failure.is_none()));
    let final_observations = observe_all(&world);
    let faults = faults.lock().expect("faults").clone();
    let disk_faults: Vec<(String, DiskFaultCounts)> =
        world.brokers.iter().chain(world.controller.iter()).map(|b| (b.name.clone(), b.disk.counts())).collect();
    let simulated_ns = started.elapsed().as_nanos() as u64;
    // The final draw summarises every draw the simulator made: any divergence changes it.
    let rng_position: u64 = madsim::rand::random();
    let trace_hash =
        trace_hash(&(&history, &faults, &final_observations, &disk_faults, &violations, simulated_ns, rng_position));
    // Stop every node before the runtime goes: tasks still pending when it is dropped (the
    // brokers' listeners, fetchers, timers) are never freed, and a sweep process grew by
    // megabytes per seed.
    for node in world.brokers.iter().chain(world.controller.iter()) {
        handle.kill(node.node.id());
        node.set_dead();
    }
    RunOutcome {
        scenario: scenario.name.clone(),
        seed,
        budget,
        violations,
        liveness_failure,
        faults,
        history,
        final_observations,
        disk_faults,
        simulated_ns,
        trace_hash,
    }
}

/// FNV-1a over the JSON of everything observable.
fn trace_hash(value: &impl Serialize) -> u64 {
    let json = serde_json::to_vec(value).expect("serializable");
    json.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Every live broker's observations, by node name.
fn observe_all(world: &World) -> Vec<(String, Vec<PartitionObservation>)> {
    world.brokers.iter().filter_map(|b| Some((b.name.clone(), b.broker()?.observe()))).collect()
}

/// Each node's epoch history across its restarts (see `check::epochs`), as its disk saw it.
fn check_epoch_history(world: &World) -> Vec<Violation> {
    let nodes = world.brokers.iter().chain(world.controller.iter());
    nodes
        .flat_map(|node| {
            let name = node.name.clone();
            node.disk
                .epoch_history_violations()
                .into_iter()
                .map(move |detail| violation("epoch-history", -1, vec![], format!("{name}: {detail}")))
        })
        .collect()
}

fn violation(invariant: &'static str, partition: i32, offsets: Vec<i64>, detail: String) -> Violation {
    Violation { invariant, partition, offsets, values: vec![], operations: vec![], detail }
}

/// Per replica: hw-bounded (log start <= LSO <= HW <= LEO), no-truncation-below-hw, and
/// isr-enforced (no acks=all success with an ISR below min.insync.replicas).
pub fn check_state(node: &str, observations: &[PartitionObservation]) -> Vec<Violation> {
    let mut found = Vec::new();
    for o in observations {
        let where_ = format!("{node} {}-{}", o.topic, o.partition);
        if !(o.log_start_offset <= o.high_watermark
            && o.last_stable_offset <= o.high_watermark
            && o.high_watermark <= o.log_end_offset)
        {
            found.push(violation(
                "hw-bounded",
                o.partition,
                vec![o.log_start_offset, o.last_stable_offset, o.high_watermark, o.log_end_offset],
                format!(
                    "{where_}: log start {}, LSO {}, HW {}, LEO {}",
                    o.log_start_offset, o.last_stable_offset, o.high_watermark, o.log_end_offset
                ),
            ));
        }
        if o.truncated_below_high_watermark {
            found.push(violation(
                "no-truncation-below-hw",
                o.partition,
                vec![o.high_watermark],
                format!("{where_}: a follower truncation cut below the high watermark it had"),
            ));
        }
        if let Some(smallest) = o.smallest_isr_acked.filter(|&s| (s as i32) < o.min_insync_replicas) {
            found.push(violation(
                "isr-enforced",
                o.partition,
                vec![],
                format!(
                    "{where_}: an acks=all write was acknowledged with an ISR of {smallest}, min.insync.replicas is {}",
                    o.min_insync_replicas
                ),
            ));
        }
    }
    found
}

/// What the state checks remember between observations.
#[derive(Default)]
pub struct StateTracker {
    /// (node, topic id, partition) → the largest leader epoch that node has reported (a topic
    /// deleted and created again under its name is a new incarnation, starting at epoch 0).
    epochs: BTreeMap<(String, u128, i32), i32>,
    /// Violations already reported (each is reported once).
    reported: std::collections::BTreeSet<String>,
}

impl StateTracker {
    /// The per-replica checks plus the cluster-wide ones: single-leader (at most one replica
    /// claims leadership per leader epoch), epoch-monotonic (a node's leader epoch never goes
    /// back, restarts included), and hw-bounded across replicas (the leader's HW is not above
    /// the log end of any replica that considers itself in the ISR at that epoch).
    pub fn check(&mut self, observed: &[(String, Vec<PartitionObservation>)]) -> Vec<Violation> {
        let mut found = Vec::new();
        for (node, observations) in observed {
            found.extend(check_state(node, observations));
        }
        let mut leaders: BTreeMap<(String, u128, i32, i32), Vec<&str>> = BTreeMap::new();
        for (node, observations) in observed {
            for o in observations {
                if o.leader {
                    leaders.entry((o.topic.clone(), o.topic_id, o.partition, o.leader_epoch)).or_default().push(node);
                }
                let key = (node.clone(), o.topic_id, o.partition);
                let previous = self.epochs.entry(key).or_insert(o.leader_epoch);
                if o.leader_epoch < *previous {
                    found.push(violation(
                        "epoch-monotonic",
                        o.partition,
                        vec![],
                        format!(
                            "{node} {}-{}: leader epoch went from {previous} to {}",
                            o.topic, o.partition, o.leader_epoch
                        ),
                    ));
                }
                *previous = (*previous).max(o.leader_epoch);
            }
        }
        for ((topic, _, partition, epoch), nodes) in &leaders {
            if nodes.len() > 1 {
                found.push(violation(
                    "single-leader",
                    *partition,
                    vec![],
                    format!("{topic}-{partition}: {} all lead at epoch {epoch}", nodes.join(", ")),
                ));
            }
        }
        for (leader_node, observations) in observed {
            for leader in observations.iter().filter(|o| o.leader) {
                for (node, others) in observed {
                    let Some(member) = others.iter().find(|o| {
                        o.topic_id == leader.topic_id
                            && o.partition == leader.partition
                            && !o.leader
                            && o.leader_epoch == leader.leader_epoch
                    }) else {
                        continue;
                    };
                    let node_id: i32 = node.trim_start_matches("broker-").parse().unwrap_or(-1);
                    let in_isr = leader.isr.contains(&node_id) && member.isr.contains(&node_id);
                    if in_isr && leader.high_watermark > member.log_end_offset {
                        found.push(violation(
                            "hw-bounded",
                            leader.partition,
                            vec![leader.high_watermark, member.log_end_offset],
                            format!(
                                "{}-{}: leader {leader_node} has HW {} but ISR member {node} ends at {}",
                                leader.topic, leader.partition, leader.high_watermark, member.log_end_offset
                            ),
                        ));
                    }
                }
            }
        }
        found.retain(|v| self.reported.insert(format!("{} {}", v.invariant, v.detail)));
        found
    }
}

/// leader-from-isr: replaying the controller's records, every leader it elected was in the ISR
/// or the ELR (members that left an ISR below min.insync.replicas) just before, unless the
/// topic allows unclean election.
pub fn check_leader_from_isr(records: &[MetadataRecord]) -> Vec<Violation> {
    let mut image = MetadataImage::default();
    let mut found = Vec::new();
    for record in records {
        if let MetadataRecord::PartitionChange { topic_id, partition, leader, leader_epoch, .. } = record {
            let before = image.partitions.get(&(*topic_id, *partition)).cloned();
            let unclean = image
                .topic_by_id(*topic_id)
                .and_then(|t| t.configs.get("unclean.leader.election.enable"))
                .is_some_and(|v| v == "true");
            if let Some(before) = before {
                let eligible = before.isr.contains(leader) || before.elr.contains(leader);
                if *leader != NO_LEADER && *leader != before.leader && !eligible && !unclean {
                    found.push(violation(
                        "leader-from-isr",
                        *partition,
                        vec![],
                        format!(
                            "partition {partition}: broker {leader} elected at epoch {leader_epoch} from outside the ISR {:?} and ELR {:?}",
                            before.isr, before.elr
                        ),
                    ));
                }
            }
        }
        image.replay(record);
    }
    found
}

/// Waits until, for every partition, each ISR member's log reaches its leader's HW.
async fn wait_for_replicas(world: &World, scenario: &Scenario, deadline: Instant) -> bool {
    loop {
        let observed = observe_all(world);
        let converged = (0..scenario.topic.partitions).all(|partition| {
            let find = |name: &str| {
                observed.iter().find(|(n, _)| n == name).and_then(|(_, obs)| {
                    obs.iter().find(|o| o.topic == scenario.topic.name && o.partition == partition)
                })
            };
            let Some((_, leader)) = observed.iter().find_map(|(n, obs)| {
                obs.iter()
                    .find(|o| o.topic == scenario.topic.name && o.partition == partition && o.leader)
                    .map(|o| (n, o))
            }) else {
                return false;
            };
            leader
                .isr
                .iter()
                .all(|id| find(&format!("broker-{id}")).is_some_and(|o| o.log_end_offset >= leader.high_watermark))
        });
        if converged {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// replica-prefix: below the leader's HW, every ISR member holds byte-identical batches.
fn check_replica_prefix(world: &World, scenario: &Scenario) -> Vec<Violation> {
    let mut found = Vec::new();
    for partition in 0..scenario.topic.partitions {
        let tp = TopicPartition::new(scenario.topic.name.clone(), partition);
        let brokers: Vec<(String, Arc<Broker>)> =
            world.brokers.iter().filter_map(|b| Some((b.name.clone(), b.broker()?))).collect();
        let leader = brokers.iter().find_map(|(name, b)| {
            let o = b.observe().into_iter().find(|o| o.topic == tp.topic && o.partition == partition && o.leader)?;
            Some((name.clone(), o))
        });
        let Some((leader_name, leader)) = leader else { continue };
        let Some((_, leader_broker)) = brokers.iter().find(|(n, _)| *n == leader_name) else { continue };
        let Some(reference) = leader_broker.replica_bytes(&tp, leader.high_watermark) else { continue };
        for id in leader.isr.iter() {
            let name = format!("broker-{id}");
            if name == leader_name {
                continue;
            }
            let Some((_, member)) = brokers.iter().find(|(n, _)| *n == name) else { continue };
            let Some(bytes) = member.replica_bytes(&tp, leader.high_watermark) else { continue };
            if bytes != reference {
                found.push(violation(
                    "replica-prefix",
                    partition,
                    vec![leader.high_watermark],
                    format!(
                        "{tp}: below HW {} {name} (log start {}, {} bytes) differs from leader {leader_name} (log start {}, {} bytes)",
                        leader.high_watermark,
                        bytes.0,
                        bytes.1.len(),
                        reference.0,
                        reference.1.len()
                    ),
                ));
            }
        }
    }
    found
}

fn note(faults: &Mutex<Vec<FaultEvent>>, recorder: &Recorder, target: &str, what: impl Into<String>) {
    faults.lock().expect("faults").push(FaultEvent {
        at_ns: recorder.now_ns(),
        target: target.to_string(),
        what: what.into(),
    });
}

/// The fault injector of one run.
struct Nemesis<'a> {
    handle: &'a Handle,
    world: &'a World,
    scenario: &'a Scenario,
    topic: &'a str,
    faults: &'a Mutex<Vec<FaultEvent>>,
    recorder: &'a Recorder,
}

impl Nemesis<'_> {
    fn note(&self, target: &str, what: impl Into<String>) {
        note(self.faults, self.recorder, target, what);
    }

    /// The nodes a target names now (`leader` / `follower`: of partition 0, from the
    /// controller's committed metadata).
    fn resolve(&self, target: Target) -> Vec<&SimNode> {
        let partition_zero = || {
            let image = self.world.metadata()?;
            image.partition(self.topic, 0).cloned()
        };
        match target {
            Target::Broker(index) => vec![&self.world.brokers[index]],
            Target::Controller => vec![self.world.controller_node()],
            Target::All => self.world.brokers.iter().collect(),
            Target::Leader => match partition_zero() {
                Some(p) if p.leader != NO_LEADER => vec![&self.world.brokers[p.leader as usize - 1]],
                _ => vec![],
            },
            Target::Follower => match partition_zero() {
                Some(p) => p
                    .replicas
                    .iter()
                    .find(|&&r| r != p.leader)
                    .map(|&r| vec![&self.world.brokers[r as usize - 1]])
                    .unwrap_or_default(),
                None => vec![],
            },
        }
    }

    /// A swarm fault that destroys a replica's data stays within the budget only while every
    /// replica of every partition is in the ISR: then each acknowledged record has a copy
    /// elsewhere. (A fixed delay between such faults is not enough: a victim kept away by other
    /// faults may not have caught up; the simulator showed that.)
    fn losing_data_now_breaks_budget(&self, fault: &PlannedFault) -> bool {
        if !loses_data(self.scenario, fault) || self.scenario.topic.replication_factor < 2 {
            return false;
        }
        let Some(image) = self.world.metadata() else { return true };
        let Some(topic) = image.topics.get(self.topic) else { return true };
        (0..topic.partitions).any(|p| {
            image
                .partitions
                .get(&(topic.topic_id, p))
                .is_none_or(|p| p.isr.len() < p.replicas.len() || p.leader == NO_LEADER)
        })
    }

    /// Every node but `node`, brokers and controller.
    fn others(&self, node: &SimNode, with_controller: bool) -> Vec<&SimNode> {
        let controller = self.world.controller.iter().filter(|_| with_controller);
        self.world.brokers.iter().chain(controller).filter(|n| n.name != node.name).collect()
    }

    /// Applies the planned faults within the fault phase: swarm faults one after another,
    /// scripted ones each at its time.
    async fn inject(
        &self,
        link_peer: Option<madsim::task::NodeId>,
        planned: &[PlannedFault],
        started: Instant,
        fault_phase: Duration,
    ) {
        let scripted = planned.iter().filter(|f| f.scripted).map(|f| self.apply(f, link_peer, started, fault_phase));
        let swarm = async {
            for fault in planned.iter().filter(|f| !f.scripted) {
                self.apply(fault, link_peer, started, fault_phase).await;
            }
        };
        futures::future::join(futures::future::join_all(scripted), swarm).await;
    }

    async fn apply(
        &self,
        fault: &PlannedFault,
        link_peer: Option<madsim::task::NodeId>,
        started: Instant,
        fault_phase: Duration,
    ) {
        let net = madsim::net::NetSim::current();
        let elapsed = started.elapsed();
        if elapsed >= fault_phase {
            return;
        }
        tokio::time::sleep(fault.at.saturating_sub(elapsed)).await;
        let duration = fault.duration.min(fault_phase.saturating_sub(started.elapsed()));
        let targets = self.resolve(fault.target);
        let Some(first) = targets.first() else {
            self.note(&format!("{:?}", fault.target), format!("{:?} skipped: no such node now", fault.kind));
            // The schedule stays as planned (the budget reasons about it).
            tokio::time::sleep(duration).await;
            return;
        };
        if !fault.scripted && self.losing_data_now_breaks_budget(fault) {
            self.note(&first.name, format!("{:?} skipped: an earlier victim is not back in every ISR yet", fault.kind));
            tokio::time::sleep(duration).await;
            return;
        }
        match fault.kind {
            FaultKind::Crash | FaultKind::Kill | FaultKind::CrashAll | FaultKind::DiskLoss => {
                for node in &targets {
                    self.handle.kill(node.node.id());
                    node.set_dead();
                    let what = match fault.kind {
                        FaultKind::Kill => "kill (process crash)",
                        FaultKind::DiskLoss => {
                            node.disk.wipe();
                            "kill, and the disk is replaced by an empty one"
                        }
                        _ => {
                            node.disk.power_loss(true);
                            "crash (power loss)"
                        }
                    };
                    self.note(&node.name, what);
                }
                tokio::time::sleep(duration).await;
                for node in &targets {
                    node.disk.before_restart(Path::new(DATA_DIR));
                    self.handle.restart(node.node.id());
                    self.note(&node.name, "restart");
                }
            }
            FaultKind::Pause => {
                self.handle.pause(first.node.id());
                self.note(&first.name, "pause");
                tokio::time::sleep(duration).await;
                self.handle.resume(first.node.id());
                self.note(&first.name, "resume");
            }
            FaultKind::Isolate | FaultKind::IsolateOutbound => {
                let id = first.node.id();
                let outbound_only = fault.kind == FaultKind::IsolateOutbound;
                if outbound_only {
                    net.clog_node_out(id);
                } else {
                    net.clog_node(id);
                }
                self.note(&first.name, if outbound_only { "isolate outbound" } else { "isolate" });
                tokio::time::sleep(duration).await;
                if outbound_only {
                    net.unclog_node_out(id);
                } else {
                    net.unclog_node(id);
                }
                self.note(&first.name, "heal network");
            }
            FaultKind::IsolateFromBrokers | FaultKind::IsolateFromCluster => {
                let with_controller = fault.kind == FaultKind::IsolateFromCluster;
                let others = self.others(first, with_controller);
                for other in &others {
                    net.clog_link(first.node.id(), other.node.id());
                    net.clog_link(other.node.id(), first.node.id());
                }
                let what = if with_controller {
                    "cut off from the brokers and the controller"
                } else {
                    "cut off from the brokers"
                };
                self.note(&first.name, what);
                tokio::time::sleep(duration).await;
                for other in &others {
                    net.unclog_link(first.node.id(), other.node.id());
                    net.unclog_link(other.node.id(), first.node.id());
                }
                self.note(&first.name, "links restored");
            }
            FaultKind::ClogLink => {
                let Some(peer) = link_peer else { return };
                let id = first.node.id();
                net.clog_link(id, peer);
                self.note(&first.name, "clog link to producer-1 (one way)");
                tokio::time::sleep(duration).await;
                net.unclog_link(id, peer);
                self.note(&first.name, "unclog link");
            }
            FaultKind::SlowNetwork => {
                net.update_config(|c| {
                    c.packet_loss_rate = 0.05;
                    c.send_latency = Duration::from_millis(5)..Duration::from_millis(50);
                });
                self.note("network", "slow: 5-50 ms latency, 5% loss");
                tokio::time::sleep(duration).await;
                net.update_config(|c| *c = madsim::net::Config::default());
                self.note("network", "normal");
            }
            FaultKind::DiskCorruption | FaultKind::DiskError | FaultKind::DiskSlow => {
                let faults_on = match fault.kind {
                    FaultKind::DiskCorruption => {
                        DiskFaults { corrupt_read: DISK_FAULT_PROBABILITY, ..DiskFaults::default() }
                    }
                    FaultKind::DiskSlow => DiskFaults { slow_ms_max: DISK_SLOW_MS_MAX, ..DiskFaults::default() },
                    _ => DiskFaults {
                        io_error: DISK_FAULT_PROBABILITY,
                        no_space: DISK_FAULT_PROBABILITY / 4.0,
                        ..DiskFaults::default()
                    },
                };
                first.disk.set_faults(faults_on);
                self.note(&first.name, format!("{:?} on", fault.kind));
                tokio::time::sleep(duration).await;
                first.disk.set_faults(DiskFaults::default());
                self.note(&first.name, format!("{:?} off", fault.kind));
            }
        }
    }

    /// Ends every fault: links heal, disks behave, and nodes that died, refused to start or
    /// took their log directory offline restart (a process restart: the disk keeps its data).
    fn heal(&self) {
        let net = madsim::net::NetSim::current();
        net.update_config(|c| *c = madsim::net::Config::default());
        let nodes: Vec<&SimNode> = self.world.brokers.iter().chain(self.world.controller.iter()).collect();
        for node in &nodes {
            let id = node.node.id();
            net.unclog_node(id);
            for other in &nodes {
                net.unclog_link(id, other.node.id());
            }
            node.disk.set_faults(DiskFaults::default());
            let running = node.live.lock().expect("live lock").clone();
            let healthy = match (&running.broker, &running.controller) {
                (Some(broker), _) => broker.offline_reason().is_none(),
                (None, Some(_)) => true,
                (None, None) => false,
            };
            if !healthy {
                self.handle.kill(id);
                node.set_dead();
                node.disk.before_restart(Path::new(DATA_DIR));
                self.handle.restart(id);
                self.note(&node.name, "heal: restart");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each state check shown failing on hand-made observations (the planted bugs show
    //! hw-bounded, replica-prefix and isr-enforced failing on a running broker).
    use super::*;

    fn replica(leader: bool, epoch: i32, isr: &[i32], hw: i64, leo: i64) -> PartitionObservation {
        PartitionObservation {
            topic: "t".to_string(),
            topic_id: 7,
            partition: 0,
            leader,
            leader_epoch: epoch,
            isr: isr.to_vec(),
            min_insync_replicas: 2,
            smallest_isr_acked: None,
            truncated_below_high_watermark: false,
            log_start_offset: 0,
            high_watermark: hw,
            last_stable_offset: hw,
            log_end_offset: leo,
        }
    }

    fn invariants(violations: &[Violation]) -> Vec<&'static str> {
        violations.iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn a_healthy_cluster_passes_every_state_check() {
        let mut tracker = StateTracker::default();
        let observed = vec![
            ("broker-1".to_string(), vec![replica(true, 3, &[1, 2], 10, 12)]),
            ("broker-2".to_string(), vec![replica(false, 3, &[1, 2], 10, 11)]),
        ];
        assert!(tracker.check(&observed).is_empty());
    }

    #[test]
    fn two_leaders_at_one_epoch_break_single_leader() {
        let mut tracker = StateTracker::default();
        let observed = vec![
            ("broker-1".to_string(), vec![replica(true, 3, &[1, 2], 5, 5)]),
            ("broker-2".to_string(), vec![replica(true, 3, &[1, 2], 5, 5)]),
        ];
        assert_eq!(invariants(&tracker.check(&observed)), vec!["single-leader"]);
    }

    #[test]
    fn a_leader_epoch_going_back_breaks_epoch_monotonic() {
        let mut tracker = StateTracker::default();
        assert!(tracker.check(&[("broker-1".to_string(), vec![replica(false, 4, &[1], 0, 0)])]).is_empty());
        let found = tracker.check(&[("broker-1".to_string(), vec![replica(false, 3, &[1], 0, 0)])]);
        assert_eq!(invariants(&found), vec!["epoch-monotonic"]);
    }

    #[test]
    fn a_topic_deleted_and_created_again_starts_its_epochs_over() {
        // Found by the hostile client (swarm-replicated seeds 608 and 868): it deleted and
        // re-created its topic, and the new incarnation's epoch 0 was taken for a regression.
        let mut tracker = StateTracker::default();
        assert!(tracker.check(&[("broker-1".to_string(), vec![replica(true, 2, &[1], 0, 0)])]).is_empty());
        let recreated = PartitionObservation { topic_id: 8, ..replica(true, 0, &[1], 0, 0) };
        assert!(tracker.check(&[("broker-1".to_string(), vec![recreated])]).is_empty());
    }

    #[test]
    fn a_leader_hw_above_an_isr_members_log_breaks_hw_bounded() {
        let mut tracker = StateTracker::default();
        let observed = vec![
            ("broker-1".to_string(), vec![replica(true, 3, &[1, 2], 10, 12)]),
            ("broker-2".to_string(), vec![replica(false, 3, &[1, 2], 6, 8)]),
        ];
        assert_eq!(invariants(&tracker.check(&observed)), vec!["hw-bounded"]);
    }

    #[test]
    fn truncation_below_the_hw_and_acks_below_min_isr_are_reported() {
        let mut truncated = replica(false, 3, &[1, 2], 5, 5);
        truncated.truncated_below_high_watermark = true;
        let mut under_acked = replica(true, 3, &[1], 5, 5);
        under_acked.smallest_isr_acked = Some(1);
        let found = check_state("broker-2", &[truncated, under_acked]);
        assert_eq!(invariants(&found), vec!["no-truncation-below-hw", "isr-enforced"]);
    }

    #[test]
    fn electing_a_leader_outside_isr_and_elr_breaks_leader_from_isr() {
        let topic =
            MetadataRecord::Topic { name: "t".to_string(), topic_id: 7, partitions: 1, configs: Default::default() };
        let partition = MetadataRecord::Partition {
            topic_id: 7,
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        };
        let change = |leader: i32, isr: Vec<i32>| MetadataRecord::PartitionChange {
            topic_id: 7,
            partition: 0,
            isr,
            elr: vec![],
            leader,
            leader_epoch: 1,
            partition_epoch: 1,
        };
        let clean = [topic.clone(), partition.clone(), change(2, vec![2])];
        assert!(check_leader_from_isr(&clean).is_empty());
        let unclean = [topic, partition, change(3, vec![3])];
        assert_eq!(invariants(&check_leader_from_isr(&unclean)), vec!["leader-from-isr"]);
    }
}
