//! Three brokers and a controller as separate processes on one machine (as the README starts
//! them). An idempotent librdkafka producer with acks=all writes to a partition with RF=3 and
//! min.insync.replicas=2; the partition's leader is killed with SIGKILL mid-stream. Another
//! in-sync replica takes over, the producer carries on, and a consumer reads every acknowledged
//! record exactly once, in the order it was sent.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real threads, processes, files and clocks: never simulated

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::rdkafka_util::{client_config, read_to_end};
use tests::ChildCluster;

const TOPIC: &str = "failover";
const KILL_AFTER_ACKS: usize = 3_000;
const ACKS_AFTER_KILL: usize = 3_000;

/// Failure detection scaled down (Kafka's defaults: 2 s heartbeats, 9 s sessions).
fn timings() -> Vec<(&'static str, String)> {
    vec![
        ("broker.heartbeat.interval.ms", "250".to_string()),
        ("broker.session.timeout.ms", "2000".to_string()),
        ("replica.lag.time.max.ms", "5000".to_string()),
    ]
}

#[test]
fn acks_all_records_survive_kill_9_of_the_leader_exactly_once_and_in_order() {
    let binary = env!("CARGO_BIN_EXE_gregor-broker");
    let mut every_node = timings();
    every_node.extend([("default.replication.factor", "3".to_string()), ("num.partitions", "1".to_string())]);
    let mut cluster = ChildCluster::start(binary, 3, &every_node, &[("min.insync.replicas", "2".to_string())]);
    let bootstrap = cluster.bootstrap();

    let producer: FutureProducer = client_config(&bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "60000")
        .set("queue.buffering.max.messages", "20000")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let stop = Arc::new(AtomicBool::new(false));
    let (deliveries_tx, deliveries_rx) = std::sync::mpsc::channel();
    let sender = {
        let (stop, producer) = (stop.clone(), producer.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let payload = format!("value-{i:08}");
                let record = FutureRecord::<(), _>::to(TOPIC).payload(&payload);
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries_tx.send((i, payload, delivery)).unwrap();
                        i += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)), // queue full
                }
            }
        })
    };
    // (send index, payload, offset) of every acknowledged record; failures counted.
    let acked: Arc<Mutex<Vec<(u64, String, i64)>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0usize));
    let collector = {
        let (acked, failed) = (acked.clone(), failed.clone());
        std::thread::spawn(move || {
            for (i, payload, delivery) in deliveries_rx {
                match futures::executor::block_on(delivery).expect("delivery future") {
                    Ok(d) => acked.lock().unwrap().push((i, payload, d.offset)),
                    Err(_) => *failed.lock().unwrap() += 1,
                }
            }
        })
    };
    let wait_for_acks = |n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "{what}: only {} acknowledgements", acked.lock().unwrap().len());
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for_acks(KILL_AFTER_ACKS, "before the kill");

    let metadata = producer.client().fetch_metadata(Some(TOPIC), Duration::from_secs(10)).expect("metadata");
    let partition = &metadata.topics()[0].partitions()[0];
    assert_eq!(partition.replicas().len(), 3, "RF=3");
    let leader = partition.leader();
    cluster.brokers.remove(&leader).expect("the leader is one of ours").kill_9();
    let killed_at = acked.lock().unwrap().len();
    eprintln!("killed leader {leader} with {killed_at} records acknowledged");

    wait_for_acks(killed_at + ACKS_AFTER_KILL, "after the failover");
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    producer.flush(Duration::from_secs(60)).expect("flush");
    drop(producer);
    collector.join().unwrap();

    let acked = acked.lock().unwrap().clone();
    let bootstrap = cluster.bootstrap();
    let read = read_to_end(&bootstrap, TOPIC, 1, Duration::from_secs(60));
    let mut offsets_of: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (_, offset, _, value) in &read {
        offsets_of.entry(String::from_utf8(value.clone()).unwrap()).or_default().push(*offset);
    }
    for (i, payload, offset) in &acked {
        let found = offsets_of.get(payload).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(found, [*offset], "acknowledged record {i} ({payload} at offset {offset}): read at {found:?}");
    }
    let duplicates: Vec<_> = offsets_of.iter().filter(|(_, o)| o.len() > 1).take(5).collect();
    assert!(duplicates.is_empty(), "records stored twice: {duplicates:?}");
    let mut by_send_order = acked.clone();
    by_send_order.sort();
    assert!(by_send_order.windows(2).all(|w| w[0].2 < w[1].2), "acknowledged records are in send order");
    eprintln!(
        "{} acknowledged ({} after the kill), {} failed deliveries, {} records read",
        acked.len(),
        acked.len() - killed_at,
        failed.lock().unwrap(),
        read.len()
    );
}
