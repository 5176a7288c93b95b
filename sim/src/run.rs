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
use crate::nemesis::{plan, stream_seed, FaultEvent, PlannedFault};
use crate::scenario::{Acks, FaultKind, Scenario};
use broker::protocol::client::Connection;
use broker::server::state::PartitionObservation;
use broker::server::{self, Broker, BrokerConfig};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use madsim::runtime::{Handle, NodeHandle};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often the state checks observe every live broker.
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

/// The observation hook of a broker node: `Some` while its broker runs.
type LiveBroker = Arc<Mutex<Option<Arc<Broker>>>>;

/// A broker node: its disk survives restarts; `live` is its observation hook while it runs.
struct BrokerNode {
    name: String,
    node: NodeHandle,
    disk: SimDisk,
    live: LiveBroker,
    addr: String,
}

/// Which brokers can hold all acknowledged writes through these faults.
pub fn budget(scenario: &Scenario, faults: &[PlannedFault]) -> Budget {
    let power_loss = faults.iter().any(|f| f.kind == FaultKind::Crash);
    let fsync_every_message = scenario.topic.flush_messages == Some(1);
    if power_loss && !fsync_every_message && scenario.topic.replication_factor == 1 {
        return Budget {
            within: false,
            reason: "power loss of the only replica without an fsync per message: acknowledged records may be lost"
                .to_string(),
        };
    }
    if power_loss && scenario.workload.acks != Acks::All {
        return Budget { within: false, reason: "power loss with acks below all".to_string() };
    }
    Budget { within: true, reason: "every fault is one the configuration survives".to_string() }
}

fn broker_config(scenario: &Scenario, index: usize, addr: &str) -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.set("node.id", &(index + 1).to_string()).expect("valid");
    config.set("listeners", &format!("PLAINTEXT://{addr}")).expect("valid");
    config.set("log.dirs", "/data").expect("valid");
    config.set("auto.create.topics.enable", "false").expect("valid");
    config.set("log.segment.bytes", "65536").expect("valid");
    let _ = scenario;
    config
}

fn start_broker(handle: &Handle, scenario: &Scenario, seed: u64, index: usize) -> BrokerNode {
    let name = format!("broker-{}", index + 1);
    let ip: IpAddr = format!("10.0.0.{}", index + 1).parse().expect("valid ip");
    let addr = format!("{ip}:9092");
    let disk = SimDisk::new(stream_seed(seed, &format!("disk-{index}")));
    let live: LiveBroker = Arc::default();
    let config = broker_config(scenario, index, &addr);
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
                        *live.lock().expect("live lock") = Some(running.broker.clone());
                        std::future::pending::<()>().await;
                    }
                    // A broker that refuses to start (corruption it will not serve) stays down.
                    Err(e) => tracing::warn!(node = name, error = %format!("{e:#}"), "broker refused to start"),
                }
            }
        })
        .build();
    BrokerNode { name, node, disk, live, addr }
}

/// Creates the workload's topic, retrying until the broker answers.
async fn create_topic(addr: &str, scenario: &Scenario) -> Result<(), String> {
    let mut configs = vec![("min.insync.replicas", scenario.topic.min_insync_replicas.to_string())];
    if let Some(messages) = scenario.topic.flush_messages {
        configs.push(("flush.messages", messages.to_string()));
    }
    if let Some(ms) = scenario.topic.flush_ms {
        configs.push(("flush.ms", ms.to_string()));
    }
    let configs: Vec<CreatableTopicConfig> = configs
        .into_iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str(k))
                .with_value(Some(StrBytes::from_string(v)))
        })
        .collect();
    for _ in 0..100 {
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
    Err("the broker never accepted the topic".to_string())
}

/// Runs one seed on the current thread (use a fresh OS thread per seed).
pub fn run(scenario: &Scenario, seed: u64) -> RunOutcome {
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let scenario = scenario.clone();
    runtime.block_on(async move { simulate(scenario, seed).await })
}

async fn simulate(scenario: Scenario, seed: u64) -> RunOutcome {
    assert_eq!(
        scenario.cluster.brokers, 1,
        "multi-broker clusters arrive with replication (checked when the scenario is loaded)"
    );
    let handle = Handle::current();
    let started = Instant::now();
    let recorder = Recorder::new();
    let brokers: Vec<BrokerNode> =
        (0..scenario.cluster.brokers as usize).map(|i| start_broker(&handle, &scenario, seed, i)).collect();
    let planned = plan(&scenario, seed);
    let budget = budget(&scenario, &planned);
    let addr = brokers[0].addr.clone();
    let faults: Arc<Mutex<Vec<FaultEvent>>> = Arc::default();
    let state_violations: Arc<Mutex<Vec<Violation>>> = Arc::default();

    let setup = handle.create_node().name("setup").ip("10.0.2.1".parse().expect("ip")).build();
    let setup_result = setup.spawn({
        let (addr, scenario) = (addr.clone(), scenario.clone());
        async move { create_topic(&addr, &scenario).await }
    });
    if let Err(e) = setup_result.await.expect("setup task") {
        panic!("setup failed: {e}");
    }

    // State checks at a fixed cadence, for the whole run.
    let monitor_stop = Arc::new(Notify::new());
    let monitor = {
        let lives: Vec<(String, LiveBroker)> = brokers.iter().map(|b| (b.name.clone(), b.live.clone())).collect();
        let (violations, stop) = (state_violations.clone(), monitor_stop.clone());
        setup.spawn(async move {
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                for (name, live) in &lives {
                    let broker = live.lock().expect("live lock").clone();
                    if let Some(broker) = broker {
                        violations.lock().expect("violations").extend(check_state(name, &broker.observe()));
                    }
                }
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
            addr.clone(),
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
            addr.clone(),
            scenario.topic.name.clone(),
            scenario.topic.partitions,
            recorder.clone(),
            workload_stop.clone(),
        );
        workers.push(node.spawn(task));
    }

    // The fault phase.
    let fault_phase = Duration::from_secs(scenario.workload.duration_s);
    let link_peer = producer_nodes.first().copied();
    inject_faults(&handle, &brokers, link_peer, &planned, started, fault_phase, &faults, &recorder).await;
    let remaining = fault_phase.saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await;

    // The heal phase.
    let heal_deadline = Instant::now() + Duration::from_secs(scenario.workload.heal_s);
    heal(&handle, &brokers, &faults, &recorder);
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
    let reader = handle.create_node().name("final-reader").ip("10.0.4.1".parse().expect("ip")).build();
    for partition in 0..scenario.topic.partitions {
        let task = final_read(
            Process(2000 + partition as u32),
            addr.clone(),
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
    monitor_stop.notify_waiters();
    let _ = monitor.await;

    let history = recorder.history();
    let mut violations = state_violations.lock().expect("violations").clone();
    violations.extend(check_history(&history, liveness_failure.is_none()));
    let final_observations: Vec<(String, Vec<PartitionObservation>)> = brokers
        .iter()
        .map(|b| {
            (
                b.name.clone(),
                b.live.lock().expect("live lock").as_ref().map(|broker| broker.observe()).unwrap_or_default(),
            )
        })
        .collect();
    let faults = faults.lock().expect("faults").clone();
    let disk_faults: Vec<(String, DiskFaultCounts)> =
        brokers.iter().map(|b| (b.name.clone(), b.disk.counts())).collect();
    let simulated_ns = started.elapsed().as_nanos() as u64;
    // The final draw summarises every draw the simulator made: any divergence changes it.
    let rng_position: u64 = madsim::rand::random();
    let trace_hash =
        trace_hash(&(&history, &faults, &final_observations, &disk_faults, &violations, simulated_ns, rng_position));
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

/// hw-bounded: log start <= LSO <= HW <= LEO on every partition of a live broker.
pub fn check_state(node: &str, observations: &[PartitionObservation]) -> Vec<Violation> {
    observations
        .iter()
        .filter(|o| {
            !(o.log_start_offset <= o.high_watermark
                && o.last_stable_offset <= o.high_watermark
                && o.high_watermark <= o.log_end_offset)
        })
        .map(|o| Violation {
            invariant: "hw-bounded",
            partition: o.partition,
            offsets: vec![o.log_start_offset, o.last_stable_offset, o.high_watermark, o.log_end_offset],
            values: vec![],
            operations: vec![],
            detail: format!(
                "{node} {}-{}: log start {}, LSO {}, HW {}, LEO {}",
                o.topic, o.partition, o.log_start_offset, o.last_stable_offset, o.high_watermark, o.log_end_offset
            ),
        })
        .collect()
}

fn note(faults: &Mutex<Vec<FaultEvent>>, recorder: &Recorder, target: &str, what: impl Into<String>) {
    faults.lock().expect("faults").push(FaultEvent {
        at_ns: recorder.now_ns(),
        target: target.to_string(),
        what: what.into(),
    });
}

/// Applies the planned faults one after another (never two at once), within the fault phase.
#[allow(clippy::too_many_arguments)]
async fn inject_faults(
    handle: &Handle,
    brokers: &[BrokerNode],
    link_peer: Option<madsim::task::NodeId>,
    planned: &[PlannedFault],
    started: Instant,
    fault_phase: Duration,
    faults: &Mutex<Vec<FaultEvent>>,
    recorder: &Recorder,
) {
    let net = madsim::net::NetSim::current();
    for fault in planned {
        let elapsed = started.elapsed();
        if elapsed >= fault_phase {
            break;
        }
        tokio::time::sleep(fault.at.saturating_sub(elapsed)).await;
        let duration = fault.duration.min(fault_phase.saturating_sub(started.elapsed()));
        let broker = &brokers[fault.target];
        let id = broker.node.id();
        match fault.kind {
            FaultKind::Crash | FaultKind::Kill => {
                handle.kill(id);
                *broker.live.lock().expect("live lock") = None;
                let power_loss = fault.kind == FaultKind::Crash;
                if power_loss {
                    broker.disk.power_loss(true);
                }
                note(
                    faults,
                    recorder,
                    &broker.name,
                    if power_loss { "crash (power loss)" } else { "kill (process crash)" },
                );
                tokio::time::sleep(duration).await;
                handle.restart(id);
                note(faults, recorder, &broker.name, "restart");
            }
            FaultKind::Pause => {
                handle.pause(id);
                note(faults, recorder, &broker.name, "pause");
                tokio::time::sleep(duration).await;
                handle.resume(id);
                note(faults, recorder, &broker.name, "resume");
            }
            FaultKind::Isolate | FaultKind::IsolateOutbound => {
                let outbound_only = fault.kind == FaultKind::IsolateOutbound;
                if outbound_only {
                    net.clog_node_out(id);
                } else {
                    net.clog_node(id);
                }
                note(faults, recorder, &broker.name, if outbound_only { "isolate outbound" } else { "isolate" });
                tokio::time::sleep(duration).await;
                if outbound_only {
                    net.unclog_node_out(id);
                } else {
                    net.unclog_node(id);
                }
                note(faults, recorder, &broker.name, "heal network");
            }
            FaultKind::ClogLink => {
                let Some(peer) = link_peer else { continue };
                net.clog_link(id, peer);
                note(faults, recorder, &broker.name, "clog link to producer-1 (one way)");
                tokio::time::sleep(duration).await;
                net.unclog_link(id, peer);
                note(faults, recorder, &broker.name, "unclog link");
            }
            FaultKind::SlowNetwork => {
                net.update_config(|c| {
                    c.packet_loss_rate = 0.05;
                    c.send_latency = Duration::from_millis(5)..Duration::from_millis(50);
                });
                note(faults, recorder, "network", "slow: 5-50 ms latency, 5% loss");
                tokio::time::sleep(duration).await;
                net.update_config(|c| *c = madsim::net::Config::default());
                note(faults, recorder, "network", "normal");
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
                broker.disk.set_faults(faults_on);
                note(faults, recorder, &broker.name, format!("{:?} on", fault.kind));
                tokio::time::sleep(duration).await;
                broker.disk.set_faults(DiskFaults::default());
                note(faults, recorder, &broker.name, format!("{:?} off", fault.kind));
            }
        }
    }
}

/// Ends every fault: links heal, disks behave, and brokers that died, refused to start or
/// took their log directory offline restart (a process restart: the disk keeps its data).
fn heal(handle: &Handle, brokers: &[BrokerNode], faults: &Mutex<Vec<FaultEvent>>, recorder: &Recorder) {
    let net = madsim::net::NetSim::current();
    net.update_config(|c| *c = madsim::net::Config::default());
    for broker in brokers {
        let id = broker.node.id();
        net.unclog_node(id);
        broker.disk.set_faults(DiskFaults::default());
        let live = broker.live.lock().expect("live lock").clone();
        let healthy = live.as_ref().is_some_and(|b| b.offline_reason().is_none());
        if !healthy {
            handle.kill(id);
            *broker.live.lock().expect("live lock") = None;
            handle.restart(id);
            note(faults, recorder, &broker.name, "heal: restart");
        }
    }
}
