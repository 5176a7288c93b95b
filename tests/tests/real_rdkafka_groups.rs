//! librdkafka consumer groups against the broker: three members share a six-partition topic
//! with the eager (`range`) and the incremental (`cooperative-sticky`) assignors; one leaves
//! or is killed -9 and the others take over its partitions; across the run every record is
//! delivered and nothing below a committed offset is skipped. In a three-broker cluster the
//! group's coordinator is killed -9 and the group moves on to the new one.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real threads, processes, files and clocks: never simulated

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tests::rdkafka_util::{client_config, create_replicated_topic, create_topic};
use tests::{python, python_script, run_bounded, ChildCluster, InProcessBroker};

const TOPIC: &str = "group-topic";
const PARTITIONS: i32 = 6;
const PER_PARTITION: i64 = 50;

/// (member, partition, offset) of every delivery, in the order members saw them.
type Deliveries = Arc<Mutex<Vec<(String, i32, i64)>>>;

/// Counts the rebalances a member goes through.
#[derive(Clone, Default)]
struct Rebalances(Arc<AtomicUsize>);

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a member takes part in its group.
#[derive(Clone, Copy)]
enum Protocol {
    /// The classic protocol with this client-side assignor (`partition.assignment.strategy`).
    Classic(&'static str),
    /// KIP-848 (`group.protocol=consumer`), with this server-side assignor
    /// (`group.remote.assignor`; `None`: the broker's default). Session and heartbeat timing
    /// are the broker's: librdkafka refuses the classic settings with this protocol.
    Consumer(Option<&'static str>),
}

impl Protocol {
    fn configure(self, config: &mut rdkafka::ClientConfig) {
        match self {
            Protocol::Classic(strategy) => {
                config
                    .set("partition.assignment.strategy", strategy)
                    .set("session.timeout.ms", "6000")
                    .set("heartbeat.interval.ms", "500");
            }
            Protocol::Consumer(assignor) => {
                config.set("group.protocol", "consumer");
                if let Some(assignor) = assignor {
                    config.set("group.remote.assignor", assignor);
                }
            }
        }
    }
}

/// Broker settings for KIP-848 groups: a 6 s session and 1 s heartbeats (Kafka's minimums are
/// lowered to allow them).
const CONSUMER_PROTOCOL_TIMING: [(&str, &str); 5] = [
    ("group.consumer.min.session.timeout.ms", "6000"),
    ("group.consumer.session.timeout.ms", "6000"),
    ("group.consumer.min.heartbeat.interval.ms", "1000"),
    ("group.consumer.heartbeat.interval.ms", "1000"),
    ("group.initial.rebalance.delay.ms", "0"),
];

/// A librdkafka group member polling on its own thread; each delivered record is committed
/// (synchronously) before the next poll.
struct Member {
    stop: Arc<AtomicBool>,
    /// How many partitions the member holds, as librdkafka last said.
    assigned: Arc<AtomicUsize>,
    rebalances: Rebalances,
    thread: Option<JoinHandle<()>>,
}

impl Member {
    fn join(bootstrap: &str, group: &str, name: &str, protocol: Protocol, deliveries: Deliveries) -> Member {
        Member::join_as(bootstrap, group, name, protocol, None, deliveries)
    }

    /// A member, static if `instance` names its `group.instance.id`.
    fn join_as(
        bootstrap: &str,
        group: &str,
        name: &str,
        protocol: Protocol,
        instance: Option<&str>,
        deliveries: Deliveries,
    ) -> Member {
        let stop = Arc::new(AtomicBool::new(false));
        let rebalances = Rebalances::default();
        let mut config = client_config(bootstrap);
        if let Some(instance) = instance {
            config.set("group.instance.id", instance);
        }
        protocol.configure(&mut config);
        let consumer: BaseConsumer<Rebalances> = config
            .set("group.id", group)
            .set("client.id", name)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create_with_context(rebalances.clone())
            .expect("consumer");
        consumer.subscribe(&[TOPIC]).expect("subscribe");
        let (name, flag) = (name.to_string(), stop.clone());
        let assigned = Arc::new(AtomicUsize::new(0));
        let holds = assigned.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                holds.store(consumer.assignment().map(|a| a.count()).unwrap_or(0), Ordering::Relaxed);
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
                deliveries.lock().unwrap().push((name.clone(), message.partition(), message.offset()));
                // A commit may fail while a rebalance is under way (REBALANCE_IN_PROGRESS,
                // ILLEGAL_GENERATION): the record is then delivered again, never skipped.
                let _ = consumer.commit_message(&message, CommitMode::Sync);
            }
            drop(consumer); // close: commits nothing more, leaves the group
        });
        Member { stop, assigned, rebalances, thread: Some(thread) }
    }

    /// Stops polling and leaves the group (LeaveGroup).
    fn leave(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("member thread");
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Produces `PER_PARTITION` records to every partition (acks=all).
fn produce_round(bootstrap: &str, round: usize) {
    let producer: FutureProducer = client_config(bootstrap).set("acks", "all").create().expect("producer");
    let deliveries: Vec<_> = (0..PARTITIONS)
        .flat_map(|p| (0..PER_PARTITION).map(move |i| (p, i)))
        .map(|(p, i)| {
            let payload = format!("round-{round}-p{p}-{i}");
            producer
                .send_result(FutureRecord::<(), _>::to(TOPIC).partition(p).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("enqueued")
        })
        .collect();
    for delivery in deliveries {
        futures::executor::block_on(delivery).expect("delivery").expect("acknowledged");
    }
}

/// Waits until every offset below `PER_PARTITION * rounds` of every partition was delivered to
/// some member; returns the distinct (partition, offset) pairs and who got them.
fn wait_for_all(deliveries: &Deliveries, rounds: i64, timeout: Duration) -> BTreeMap<(i32, i64), BTreeSet<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen: BTreeMap<(i32, i64), BTreeSet<String>> =
            deliveries.lock().unwrap().iter().fold(BTreeMap::new(), |mut seen, (member, p, o)| {
                seen.entry((*p, *o)).or_default().insert(member.clone());
                seen
            });
        let wanted = PARTITIONS as usize * (PER_PARTITION * rounds) as usize;
        let complete = (0..PARTITIONS).all(|p| (0..PER_PARTITION * rounds).all(|o| seen.contains_key(&(p, o))));
        if complete {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "after {timeout:?} the group had delivered {} of {wanted} records; missing e.g. {:?}",
            seen.len(),
            (0..PARTITIONS)
                .flat_map(|p| (0..PER_PARTITION * rounds).map(move |o| (p, o)))
                .find(|k| !seen.contains_key(k))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The group's committed offsets, read back with OffsetFetch.
fn committed(bootstrap: &str, group: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = client_config(bootstrap).set("group.id", group).create().expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition(TOPIC, p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).expect("OffsetFetch");
    committed
        .elements()
        .iter()
        .map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { -1 }))
        .collect()
}

/// Three members share the partitions; after the first round one leaves, and the other two
/// take over its partitions for the second round. Every record is delivered, and the group's
/// commits end at the log end of every partition.
fn three_members_one_leaves(protocol: Protocol, group: &str) {
    let broker = InProcessBroker::start("127.0.0.1:0", &CONSUMER_PROTOCOL_TIMING);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, TOPIC, PARTITIONS);
    let group = group.to_string();
    let deliveries: Deliveries = Arc::default();
    let members: Vec<Member> =
        ["a", "b", "c"].iter().map(|n| Member::join(&bootstrap, &group, n, protocol, deliveries.clone())).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !members.iter().all(|m| m.assigned.load(Ordering::Relaxed) > 0) {
        assert!(Instant::now() < deadline, "the three members never all held partitions");
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Protocol::Consumer(_) = protocol {
        // The broker assigned them, each partition to one member.
        let (epoch, ids, mut partitions) = describe_consumer_group(&bootstrap, &group).expect("a consumer group");
        partitions.sort();
        assert_eq!((ids.len(), partitions), (3, (0..PARTITIONS).collect::<Vec<_>>()), "group epoch {epoch}");
        // `broker groups --describe` shows the broker's assignment, each partition's owner.
        let output = run_bounded(
            Command::new(env!("CARGO_BIN_EXE_gregor-broker")).args([
                "groups",
                "--bootstrap-server",
                &bootstrap,
                "--describe",
                "--group",
                &group,
            ]),
            Duration::from_secs(60),
        );
        let described = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success() && described.contains("protocol consumer (KIP-848"), "{described}");
        let owners: BTreeSet<&str> =
            described.lines().filter(|l| l.starts_with(TOPIC)).filter_map(|l| l.split_whitespace().nth(5)).collect();
        assert_eq!(owners.len(), 3, "three members own the six partitions: {described}");
    } else {
        assert_eq!(describe_consumer_group(&bootstrap, &group), Err(69), "a classic group is not a consumer group");
    }
    produce_round(&bootstrap, 1);
    let first = wait_for_all(&deliveries, 1, Duration::from_secs(60));
    let who: BTreeSet<&String> = first.values().flatten().collect();
    assert!(who.len() >= 2, "the partitions were shared, not all read by one member: {who:?}");
    let mut members = members.into_iter();
    let (a, b, c) = (members.next().unwrap(), members.next().unwrap(), members.next().unwrap());
    c.leave();
    let before = deliveries.lock().unwrap().len();
    produce_round(&bootstrap, 2);
    let all = wait_for_all(&deliveries, 2, Duration::from_secs(60));
    let after: BTreeSet<String> = deliveries.lock().unwrap()[before..].iter().map(|(m, _, _)| m.clone()).collect();
    assert!(!after.contains("c"), "c left the group but got records: {after:?}");
    assert_eq!(all.len(), PARTITIONS as usize * 2 * PER_PARTITION as usize);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let offsets = committed(&bootstrap, &group);
        if offsets.values().all(|&o| o == 2 * PER_PARTITION) {
            break;
        }
        assert!(Instant::now() < deadline, "commits did not reach the log end: {offsets:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    a.leave();
    b.leave();
    broker.shutdown();
}

#[test]
fn rdkafka_group_with_eager_range_assignment_survives_a_member_leaving() {
    three_members_one_leaves(Protocol::Classic("range"), "three-members-range");
}

#[test]
fn rdkafka_group_with_cooperative_sticky_assignment_survives_a_member_leaving() {
    three_members_one_leaves(Protocol::Classic("cooperative-sticky"), "three-members-cooperative");
}

/// KIP-848: the broker assigns (its default `uniform` assignor), members revoke before others
/// get their partitions, commits carry member epochs.
#[test]
fn rdkafka_consumer_protocol_group_survives_a_member_leaving() {
    three_members_one_leaves(Protocol::Consumer(None), "three-members-consumer-protocol");
}

#[test]
fn rdkafka_consumer_protocol_group_with_the_range_assignor_survives_a_member_leaving() {
    three_members_one_leaves(Protocol::Consumer(Some("range")), "three-members-consumer-protocol-range");
}

/// A third member in another process (kafka-python, the same `range` assignor on the wire) is
/// killed -9: it never leaves, so the coordinator removes it when its session (6 s) runs out,
/// and the two librdkafka members take over its partitions from its committed offsets.
#[test]
fn a_member_killed_minus_9_is_expelled_after_its_session_and_its_partitions_move_on() {
    member_killed_minus_9(Protocol::Classic("range"), "group_member.py", "killed-member");
}

/// The same with KIP-848 (the killed member is a confluent-kafka consumer-protocol member): the
/// broker removes it when its 6 s session runs out, and its partitions go to the others.
#[test]
fn a_consumer_protocol_member_killed_minus_9_is_removed_after_its_session_and_its_partitions_move_on() {
    member_killed_minus_9(Protocol::Consumer(None), "consumer_protocol_member.py", "killed-member-consumer-protocol");
}

fn member_killed_minus_9(protocol: Protocol, script: &str, group: &str) {
    let broker = InProcessBroker::start("127.0.0.1:0", &CONSUMER_PROTOCOL_TIMING);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, TOPIC, PARTITIONS);
    let deliveries: Deliveries = Arc::default();
    let a = Member::join(&bootstrap, group, "a", protocol, deliveries.clone());
    let b = Member::join(&bootstrap, group, "b", protocol, deliveries.clone());
    let mut python_member = Command::new(python())
        .arg(python_script(script))
        .args([&bootstrap, group, TOPIC])
        .env("PYTHONUNBUFFERED", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the kafka-python member");
    // What the kafka-python member is given (and commits, one by one) counts as delivered.
    let stdout = python_member.stdout.take().expect("piped");
    let python_deliveries = deliveries.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut fields = line.split_whitespace().map(|f| f.parse::<i64>().expect("partition offset"));
            let (p, o) = (fields.next().expect("partition"), fields.next().expect("offset"));
            python_deliveries.lock().unwrap().push(("python".to_string(), p as i32, o));
        }
    });
    // Produce until the kafka-python member has been given records.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    while !deliveries.lock().unwrap().iter().any(|(m, _, _)| m == "python") {
        assert!(Instant::now() < deadline, "the kafka-python member never got a record");
        produce_round(&bootstrap, round);
        round += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    python_member.kill().expect("kill -9");
    let _ = python_member.wait();
    reader.join().expect("reader");
    let consumer: BaseConsumer = client_config(&bootstrap).create().expect("consumer");
    let (_, high) = consumer.fetch_watermarks(TOPIC, 0, Duration::from_secs(10)).expect("watermarks");
    let rounds_so_far = high / PER_PARTITION;
    produce_round(&bootstrap, 99);
    // Within the session timeout plus a rebalance, the two take over everything, from where
    // the killed member committed: together they deliver every record.
    let before = deliveries.lock().unwrap().len();
    wait_for_all(&deliveries, rounds_so_far + 1, Duration::from_secs(60));
    let held: BTreeSet<i32> =
        deliveries.lock().unwrap().iter().filter(|(m, _, _)| m == "python").map(|(_, p, _)| *p).collect();
    let taken_over: BTreeSet<i32> = deliveries.lock().unwrap()[before..].iter().map(|(_, p, _)| *p).collect();
    assert!(
        held.is_subset(&taken_over),
        "the killed member's partitions {held:?} were read on by the others: {taken_over:?}"
    );
    a.leave();
    b.leave();
    broker.shutdown();
}

/// A static member (`group.instance.id`) that closes and starts again within its session gets
/// its partitions back without a rebalance: the other member never notices.
#[test]
fn a_restarted_static_member_gets_its_partitions_back_and_the_other_member_sees_no_rebalance() {
    static_member_restarts(Protocol::Classic("range"), "static-members");
}

/// The same with KIP-848: the closing member leaves "for now" (member epoch -2) and its
/// returning instance takes its place and partitions without a new group epoch.
#[test]
fn a_restarted_static_consumer_protocol_member_gets_its_partitions_back_and_the_other_sees_no_rebalance() {
    static_member_restarts(Protocol::Consumer(None), "static-members-consumer-protocol");
}

fn static_member_restarts(protocol: Protocol, group: &str) {
    let broker = InProcessBroker::start("127.0.0.1:0", &CONSUMER_PROTOCOL_TIMING);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, TOPIC, PARTITIONS);
    let deliveries: Deliveries = Arc::default();
    let join = |name: &str| Member::join_as(&bootstrap, group, name, protocol, Some(name), deliveries.clone());
    let (a, b) = (join("static-a"), join("static-b"));
    let shared = |a: &Member, b: &Member| {
        let (x, y) = (a.assigned.load(Ordering::Relaxed), b.assigned.load(Ordering::Relaxed));
        x > 0 && y > 0 && x + y == PARTITIONS as usize
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !shared(&a, &b) {
        assert!(Instant::now() < deadline, "the two static members never shared the partitions");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2)); // let any rebalance in flight settle
    let b_rebalances = b.rebalances.0.load(Ordering::Relaxed);
    let a_held = a.assigned.load(Ordering::Relaxed);
    a.leave(); // a static member's close does not leave the group
    let a = join("static-a");
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.assigned.load(Ordering::Relaxed) != a_held {
        assert!(Instant::now() < deadline, "the restarted static member did not get its partitions back");
        std::thread::sleep(Duration::from_millis(50));
    }
    produce_round(&bootstrap, 1);
    wait_for_all(&deliveries, 1, Duration::from_secs(30));
    assert_eq!(b.rebalances.0.load(Ordering::Relaxed), b_rebalances, "the other member went through a rebalance");
    a.leave();
    b.leave();
    broker.shutdown();
}

/// The group's coordinator killed -9 in a cluster of a controller and three brokers: the leader
/// of the group's `__consumer_offsets` partition moves to another replica, which loads the
/// group by replaying it; the members find it and resume from their committed offsets. Every
/// record is delivered, nothing below a committed offset is skipped, and the commits reach the
/// log end.
#[test]
fn the_group_moves_to_a_new_coordinator_when_the_old_one_is_killed_minus_9() {
    coordinator_killed_minus_9(Protocol::Classic("range"), "coordinator-failover");
}

/// KIP-848: the new coordinator replays the members' epochs and assignments, so the members
/// keep their partitions and go on.
#[test]
fn a_consumer_protocol_group_moves_to_a_new_coordinator_when_the_old_one_is_killed_minus_9() {
    coordinator_killed_minus_9(Protocol::Consumer(None), "coordinator-failover-consumer-protocol");
}

fn coordinator_killed_minus_9(protocol: Protocol, group: &str) {
    let binary = env!("CARGO_BIN_EXE_gregor-broker");
    let mut every_node = vec![
        ("broker.heartbeat.interval.ms", "250".to_string()),
        ("broker.session.timeout.ms", "2000".to_string()),
        ("offsets.topic.num.partitions", "3".to_string()),
    ];
    every_node.extend(CONSUMER_PROTOCOL_TIMING.iter().map(|(k, v)| (*k, v.to_string())));
    let mut cluster = ChildCluster::start(binary, 3, &every_node, &[("min.insync.replicas", "2".to_string())]);
    let bootstrap = cluster.bootstrap();
    create_replicated_topic(&bootstrap, TOPIC, PARTITIONS, 3);
    let deliveries: Deliveries = Arc::default();
    let members: Vec<Member> =
        ["a", "b"].iter().map(|n| Member::join(&bootstrap, group, n, protocol, deliveries.clone())).collect();
    produce_round(&bootstrap, 1);
    wait_for_all(&deliveries, 1, Duration::from_secs(60));
    let coordinator = coordinator_of(&bootstrap, group);
    cluster.brokers.remove(&coordinator).expect("the coordinator is one of ours").kill_9();
    eprintln!("killed the coordinator, broker {coordinator}");
    let bootstrap = cluster.bootstrap();
    produce_round(&bootstrap, 2);
    let all = wait_for_all(&deliveries, 2, Duration::from_secs(90));
    assert_eq!(all.len(), PARTITIONS as usize * 2 * PER_PARTITION as usize);
    assert_ne!(coordinator_of(&bootstrap, group), coordinator, "a new coordinator");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let offsets = committed(&bootstrap, group);
        if offsets.values().all(|&o| o == 2 * PER_PARTITION) {
            break;
        }
        assert!(Instant::now() < deadline, "commits did not reach the log end: {offsets:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    members.into_iter().for_each(Member::leave);
}

/// The node id of `group`'s coordinator (FindCoordinator, as librdkafka asks it).
fn coordinator_of(bootstrap: &str, group: &str) -> i32 {
    use broker::protocol::client::Connection;
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, RequestKind, ResponseKind};
    use kafka_protocol::protocol::StrBytes;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for addr in bootstrap.split(',') {
                let Ok(mut conn) = Connection::connect(addr, "coordinator-of").await else { continue };
                let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
                let answer = conn.send(ApiKey::FindCoordinator, 3, RequestKind::FindCoordinator(request)).await;
                if let Ok(ResponseKind::FindCoordinator(r)) = answer {
                    if r.error_code == 0 {
                        return r.node_id.0;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no broker named a coordinator for {group}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// What ConsumerGroupDescribe says of `group` on a single broker: (group epoch, member ids, and
/// every partition of the members' current assignments), or the error code.
fn describe_consumer_group(bootstrap: &str, group: &str) -> Result<(i32, Vec<String>, Vec<i32>), i16> {
    use broker::protocol::client::Connection;
    use kafka_protocol::messages::{ApiKey, ConsumerGroupDescribeRequest, GroupId, RequestKind, ResponseKind};
    use kafka_protocol::protocol::StrBytes;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut conn = Connection::connect(bootstrap, "describe").await.expect("connect");
        let request = ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let answer = conn.send(ApiKey::ConsumerGroupDescribe, 0, RequestKind::ConsumerGroupDescribe(request)).await;
        let Ok(ResponseKind::ConsumerGroupDescribe(r)) = answer else { panic!("no answer: {answer:?}") };
        let g = &r.groups[0];
        if g.error_code != 0 {
            return Err(g.error_code);
        }
        let members = g.members.iter().map(|m| m.member_id.to_string()).collect();
        let partitions = g
            .members
            .iter()
            .flat_map(|m| m.assignment.topic_partitions.iter().flat_map(|t| t.partitions.iter().copied()))
            .collect();
        Ok((g.group_epoch, members, partitions))
    })
}
