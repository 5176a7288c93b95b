//! One run: a scenario and a seed → a world, a workload, faults, a heal phase, checks.
//!
//! Phases: **setup** (brokers start, the topic is created), **fault phase** (the workload runs
//! while the nemesis injects the planned faults; the supervisor starts every process that exits
//! by itself again), **heal phase** (faults stop, crashed, exited and
//! offline brokers restart, links heal, producers finish, final reads read every partition to
//! its end within `heal_s`: not getting there is a liveness failure), **checks** (history
//! checkers, and the state checkers, which took every replica change as it happened).
//! The world is in `cluster`, the faults in `nemesis`, the checkers in `check`.

use crate::check::availability::{
    catch_up_after_heal, leader_takeover, progress_in_budget, progress_settle, LeaderClaims, ProgressRules,
    TakeoverRules,
};
use crate::check::exits::check_exits;
use crate::check::groups::{group_committed, group_progress};
use crate::check::metadata::{check_leader_from_isr, MetadataDurability};
use crate::check::replicas::check_replica_prefix;
use crate::check::state::StateChecker;
use crate::check::{check_history, final_log_ends, Violation};
use crate::client::{final_read, run_consumer, run_producer, ProducerConfig, Recorder, StopSignal};
use crate::cluster::{create_topic, wait_for_catch_up, World};
use crate::config_draw::ConfigDraw;
use crate::disk::DiskFaultCounts;
use crate::group_client::{run_group_member, MemberConfig};
use crate::history::{History, Process};
use crate::hostile::run_hostile_client;
use crate::nemesis::apply::{note, Nemesis};
use crate::nemesis::{budget, plan, stream_seed, Budget, FaultEvent};
use crate::observation::NodeRef;
use crate::scenario::{Acks, Scenario};
use crate::supervisor::supervise;
use broker::server::state::PartitionObservation;
use madsim::runtime::Handle;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often the state checkers take the replica changes recorded since the last time (each
/// change carries its own time: this is bookkeeping, not a sampling rate).
const STATE_DRAIN_INTERVAL: Duration = Duration::from_millis(100);
/// The group the workload's subscribe-mode consumers share.
/// How often the heal phase looks whether the group has committed everything.
const GROUP_PROGRESS_POLL: Duration = Duration::from_millis(200);
/// How long a stopped member may take to leave (one LeaveGroup, one request timeout).
const GROUP_LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a run produced.
#[derive(Clone, Debug, Serialize)]
pub struct RunOutcome {
    pub scenario: String,
    pub seed: u64,
    /// The settings this seed drew.
    pub config: ConfigDraw,
    /// The fewest segments any replica of any partition held at the end (rolls happened if > 1).
    pub fewest_segments: usize,
    pub budget: Budget,
    pub violations: Vec<Violation>,
    /// Set when the heal phase did not converge in time.
    pub liveness_failure: Option<String>,
    pub faults: Vec<FaultEvent>,
    pub history: History,
    pub final_observations: Vec<(NodeRef, Vec<PartitionObservation>)>,
    /// What each broker's disk did to it.
    pub disk_faults: Vec<(String, DiskFaultCounts)>,
    pub simulated_ns: u64,
    /// Hash of everything observable about the run: same seed, same hash.
    pub trace_hash: u64,
}

/// Runs one seed on the current thread (use a fresh OS thread per seed).
pub fn run(scenario: &Scenario, seed: u64) -> RunOutcome {
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let scenario = scenario.clone();
    runtime.block_on(async move { simulate(scenario, seed).await })
}

async fn simulate(scenario: Scenario, seed: u64) -> RunOutcome {
    // The scenario as this seed runs it: drawn settings filled in where it pins none.
    let config = ConfigDraw::draw(&scenario, seed);
    let scenario = config.apply(&scenario);
    let handle = Handle::current();
    // The recorder's origin is this same simulated instant: state events and history share it.
    let started = Instant::now();
    let recorder = Recorder::new();
    let world = Arc::new(World::start(&handle, &scenario, &config, seed, started));
    let planned = plan(&scenario, seed);
    let budget = budget(&scenario, &planned);
    let bootstrap = world.bootstrap();
    let faults: Arc<Mutex<Vec<FaultEvent>>> = Arc::default();
    let state_checker: Arc<Mutex<StateCheckers>> = Arc::default();
    let state_violations: Arc<Mutex<Vec<Violation>>> = Arc::default();

    // The supervisor starts exited processes again, from the first start on.
    let supervisor_node = handle.create_node().name("supervisor").ip("10.0.6.1".parse().expect("ip")).build();
    let supervisor_stop = Arc::new(Notify::new());
    supervisor_node.spawn(supervise(
        world.clone(),
        stream_seed(seed, "supervisor"),
        faults.clone(),
        recorder.clone(),
        supervisor_stop.clone(),
    ));

    let setup = handle.create_node().name("setup").ip("10.0.2.1".parse().expect("ip")).build();
    let setup_result = setup.spawn({
        let (bootstrap, scenario) = (bootstrap.clone(), scenario.clone());
        async move { create_topic(&bootstrap, &scenario).await }
    });
    if let Err(e) = setup_result.await.expect("setup task") {
        panic!("setup failed: {e}");
    }

    // State checks: every replica change, for the whole run.
    let monitor_stop = Arc::new(Notify::new());
    let monitor = {
        let (world, checker, violations, stop) =
            (world.clone(), state_checker.clone(), state_violations.clone(), monitor_stop.clone());
        setup.spawn(async move {
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                check_state_events(&world, &checker, &violations);
                tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(STATE_DRAIN_INTERVAL) => {}
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
            config.consumer_fetch_max_bytes as i32,
            recorder.clone(),
            workload_stop.clone(),
        );
        workers.push(node.spawn(task));
    }

    // Group members go on through the heal phase until the group has committed what the final
    // reads found (group-progress), so they stop on their own signal.
    // Each member is its own node, started again (from scratch: a new member, or the same
    // static instance) when the nemesis restarts it; `members_left` counts those that left.
    let groups_stop = Arc::new(Notify::new());
    let members_left = Arc::new(AtomicUsize::new(0));
    let mut member_nodes = Vec::new();
    for g in 0..scenario.workload.group_consumers {
        let name = format!("group-member-{}", g + 1);
        let member = MemberConfig {
            process: Process(1500 + g + 1),
            name: name.clone(),
            bootstrap: bootstrap.clone(),
            topic: scenario.topic.name.clone(),
            partitions: scenario.topic.partitions,
            group: crate::group_client::GROUP.to_string(),
            fetch_max_bytes: config.consumer_fetch_max_bytes as i32,
            slow: g == 0 && scenario.workload.group_slow_member,
            instance_id: scenario.workload.group_static_members.then(|| format!("member-{}", g + 1)),
            assignor: config.group_assignor,
            auto_commit: config.group_auto_commit,
            consumer_protocol: scenario.workload.group_protocol.as_deref() == Some("consumer"),
            server_assignor: config.group_assignor.server_side(),
        };
        let (recorder, stop, left) = (recorder.clone(), groups_stop.clone(), members_left.clone());
        let node = handle
            .create_node()
            .name(&name)
            .ip(format!("10.0.7.{}", g + 1).parse().expect("ip"))
            .init(move || {
                let (member, recorder, stop, left) = (member.clone(), recorder.clone(), stop.clone(), left.clone());
                async move {
                    run_group_member(member, recorder, stop).await;
                    left.fetch_add(1, Ordering::SeqCst);
                }
            })
            .build();
        member_nodes.push(node.id());
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
        members: &member_nodes,
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
    let healed_at_ns = recorder.now_ns();
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
            Process::final_reader(partition),
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
    if !member_nodes.is_empty() {
        let ends = final_log_ends(&recorder.history());
        while Instant::now() < heal_deadline {
            let committed = group_committed(&recorder.history());
            if ends.iter().all(|(p, end)| committed.get(p).copied().unwrap_or(0) >= *end) {
                break;
            }
            tokio::time::sleep(GROUP_PROGRESS_POLL).await;
        }
        groups_stop.notify_waiters();
        let leave_deadline = Instant::now() + GROUP_LEAVE_TIMEOUT;
        while members_left.load(Ordering::SeqCst) < member_nodes.len() {
            if Instant::now() >= leave_deadline {
                liveness_failure.get_or_insert_with(|| "a group member did not leave its group in time".to_string());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Caught up: every assigned replica in its leader's ISR, at the leader's log end.
    let caught_up = wait_for_catch_up(&world, &scenario, heal_deadline).await;
    monitor_stop.notify_waiters();
    let _ = monitor.await;
    check_state_events(&world, &state_checker, &state_violations);

    let history = recorder.history();
    let mut violations = state_violations.lock().expect("violations").clone();
    violations.extend(check_acks_all(
        &world,
        &scenario,
        &history,
        &state_checker.lock().expect("state checker").replicas,
    ));
    for (partition, high_watermark, leader, members) in
        world.replica_copies(&scenario.topic.name, scenario.topic.partitions)
    {
        violations.extend(check_replica_prefix(partition, high_watermark, &leader, &members));
    }
    violations.extend(world.epoch_history_violations());
    violations.extend(check_exits(&world.exits.all(), healed_at_ns));
    violations.extend(catch_up_after_heal(&caught_up, scenario.workload.heal_s));
    let topic_id = world.metadata().and_then(|image| Some(image.topics.get(&scenario.topic.name)?.topic_id));
    let rules = TakeoverRules {
        topic_id: topic_id.unwrap_or_default(),
        session_timeout: config.session_timeout(),
        fault_phase_end_ns: healed_at_ns,
    };
    violations.extend(leader_takeover(
        &state_checker.lock().expect("state checker").leaders,
        &world.impairments(),
        rules,
    ));

    if scenario.workload.acks == Acks::All {
        let rules = ProgressRules {
            replicas: caught_up.iter().map(|s| (s.partition, s.replicas.clone())).collect(),
            min_insync_replicas: scenario.topic.min_insync_replicas,
            fault_phase_end_ns: healed_at_ns,
            settle: progress_settle(config.session_timeout(), config.replica_lag_time_max()),
        };
        violations.extend(progress_in_budget(&history, &world.impairments(), &rules));
    }
    violations.extend(world.with_controller_records(|_, records| check_leader_from_isr(records)).unwrap_or_default());
    violations.extend(check_history(&history, liveness_failure.is_none()));
    if scenario.workload.group_consumers > 0 && liveness_failure.is_none() {
        violations.extend(group_progress(&history, &final_log_ends(&history)));
    }
    let final_observations = world.observe_all();
    let fewest_segments = world.fewest_segments(&scenario.topic.name, scenario.topic.partitions);
    let faults = faults.lock().expect("faults").clone();
    let disk_faults: Vec<(String, DiskFaultCounts)> = world.nodes().map(|b| (b.name(), b.disk.counts())).collect();
    let simulated_ns = started.elapsed().as_nanos() as u64;
    // The final draw summarises every draw the simulator made: any divergence changes it.
    let rng_position: u64 = madsim::rand::random();
    let trace_hash =
        trace_hash(&(&history, &faults, &final_observations, &disk_faults, &violations, simulated_ns, rng_position));
    // Stop every node before the runtime goes: tasks still pending when it is dropped (the
    // brokers' listeners, fetchers, timers) are never freed, and a sweep process grew by
    // megabytes per seed.
    supervisor_stop.notify_waiters();
    handle.kill(supervisor_node.id());
    for node in world.nodes() {
        world.kill(node);
    }
    RunOutcome {
        scenario: scenario.name.clone(),
        seed,
        config,
        fewest_segments,
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

/// The checkers that follow the run as it goes.
#[derive(Default)]
struct StateCheckers {
    replicas: StateChecker,
    metadata: MetadataDurability,
    leaders: LeaderClaims,
}

/// Gives the replica changes recorded since the last call, and the controller's committed
/// records, to the state checkers.
fn check_state_events(world: &World, checkers: &Mutex<StateCheckers>, violations: &Mutex<Vec<Violation>>) {
    let events = world.take_state_events();
    let mut checkers = checkers.lock().expect("state checkers");
    events.iter().for_each(|e| checkers.leaders.observe(e));
    let mut found: Vec<Violation> = events.iter().flat_map(|e| checkers.replicas.apply(e)).collect();
    let durability = &mut checkers.metadata;
    found.extend(
        world.with_controller_records(|incarnation, held| durability.observe(incarnation, held)).unwrap_or_default(),
    );
    violations.lock().expect("violations").extend(found);
}

/// isr-enforced, for acks=all workloads: the workload topic's id is what its replicas report.
fn check_acks_all(world: &World, scenario: &Scenario, history: &History, checker: &StateChecker) -> Vec<Violation> {
    if scenario.workload.acks != Acks::All {
        return Vec::new();
    }
    let topic_id = world.metadata().and_then(|image| Some(image.topics.get(&scenario.topic.name)?.topic_id));
    match topic_id {
        Some(topic_id) => checker.check_acks(history, topic_id, scenario.topic.min_insync_replicas),
        None => Vec::new(),
    }
}
