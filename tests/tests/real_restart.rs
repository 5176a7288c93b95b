//! kill -9 of a broker that fsyncs every message (`log.flush.interval.messages=1`): after a
//! restart on the same data directory, every acknowledged record is there, exactly once.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real threads, processes, files and clocks: never simulated

use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::rdkafka_util::{client_config, read_to_end};
use tests::{free_port, ChildBroker};

const SENT_MAX: usize = 10_000_000;
const KILL_AFTER_ACKS: usize = 2_000;

/// (partition, offset, payload) of an acknowledged record; `None` for a failed delivery.
type Ack = Option<(i32, i64, String)>;

#[test]
fn every_acknowledged_record_survives_kill_9_with_an_fsync_per_message() {
    let broker_binary = env!("CARGO_BIN_EXE_gregor-broker");
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let overrides = [("log.flush.interval.messages", "1"), ("num.partitions", "2")];
    let broker = ChildBroker::start(broker_binary, addr, dir.path(), &overrides);
    let bootstrap = addr.to_string();

    let producer: FutureProducer = client_config(&bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "5000")
        .set("queue.buffering.max.messages", "100000")
        .create()
        .expect("producer");
    // One thread keeps producing until told to stop; another collects acknowledgements in
    // send order; this one kills the broker once enough records were acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let (deliveries_tx, deliveries_rx) = std::sync::mpsc::channel();
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for i in 0..SENT_MAX {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let payload = format!("value-{i:08}");
                let record = FutureRecord::<(), _>::to("durable").payload(&payload);
                match producer.send_result(record) {
                    Ok(delivery) => deliveries_tx.send((payload, delivery)).unwrap(),
                    Err(_) => std::thread::sleep(Duration::from_millis(1)), // queue full
                }
            }
            producer
        })
    };
    let acked: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let collector = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for (payload, delivery) in deliveries_rx {
                let result = futures::executor::block_on(delivery).expect("delivery future");
                acked.lock().unwrap().push(result.ok().map(|d| (d.partition, d.offset, payload)));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().iter().flatten().count() < KILL_AFTER_ACKS {
        assert!(Instant::now() < deadline, "the producer never got {KILL_AFTER_ACKS} acknowledgements");
        std::thread::sleep(Duration::from_millis(1));
    }
    broker.kill_9();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let producer = sender.join().unwrap();
    collector.join().unwrap();
    drop(producer);
    let acked_all = acked.lock().unwrap().clone();
    let acked: Vec<(i32, i64, String)> = acked_all.iter().flatten().cloned().collect();
    let sent = acked_all.len();
    assert!(
        acked.len() >= KILL_AFTER_ACKS && acked.len() < sent,
        "the kill landed mid-stream ({} of {sent} acked)",
        acked.len()
    );

    let _broker = ChildBroker::start(broker_binary, addr, dir.path(), &overrides);
    let read = read_to_end(&bootstrap, "durable", 2, Duration::from_secs(60));
    let stored: BTreeSet<(i32, i64, String)> =
        read.iter().map(|(p, o, _, v)| (*p, *o, String::from_utf8(v.clone()).unwrap())).collect();
    let missing: Vec<_> = acked.iter().filter(|r| !stored.contains(r)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "killed with {} of {sent} sent records acknowledged; {} records read after the restart",
        acked.len(),
        read.len()
    );
    let values: BTreeSet<&str> = read.iter().map(|(_, _, _, v)| std::str::from_utf8(v).unwrap()).collect();
    assert_eq!(values.len(), read.len(), "no record stored twice");
}
