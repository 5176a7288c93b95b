//! The broker benchmark (`cargo bench-broker`): in one run, on this machine,
//! - the machine's limits: loopback TCP throughput and sequential write throughput (with a final
//!   fsync) to the directory the broker stores data in;
//! - produce throughput with librdkafka, 1 KiB records: acks=1; acks=all with idempotence (the
//!   default of Kafka's clients since 3.0); acks=all without, to tell the two costs apart;
//! - end-to-end latency, produce to consume, at a steady rate;
//!
//! and prints the ratios. Bounded in volume and time: well under two minutes.
#![allow(clippy::disallowed_methods)] // a real benchmark: real threads, files and clocks

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tests::rdkafka_util::{client_config, create_topic};
use tests::InProcessBroker;

const RECORD_BYTES: usize = 1024;
const PRODUCE_RECORDS: usize = 500_000;
const TCP_BYTES: usize = 1 << 30;
const DISK_BYTES: usize = 512 << 20;
const LATENCY_SAMPLES: usize = 3_000;
const LATENCY_INTERVAL: Duration = Duration::from_millis(1);

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
}

fn loopback_tcp() -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < TCP_BYTES {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "early EOF");
            total += n;
        }
    });
    let mut stream = TcpStream::connect(addr).unwrap();
    let chunk = vec![7u8; RECORD_BYTES];
    let started = Instant::now();
    for _ in 0..TCP_BYTES / RECORD_BYTES {
        stream.write_all(&chunk).unwrap();
    }
    reader.join().unwrap();
    mb_per_s(TCP_BYTES, started.elapsed())
}

fn sequential_disk(dir: &std::path::Path) -> f64 {
    let path = dir.join("bench-sequential-write");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let started = Instant::now();
    for _ in 0..DISK_BYTES / chunk.len() {
        file.write_all(&chunk).unwrap();
    }
    file.sync_all().unwrap();
    let elapsed = started.elapsed();
    std::fs::remove_file(&path).unwrap();
    mb_per_s(DISK_BYTES, elapsed)
}

/// Counts librdkafka's delivery reports, so a throughput figure is never one of failed sends.
#[derive(Default)]
struct CountDeliveries {
    delivered: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for CountDeliveries {}

impl ProducerContext for CountDeliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().unwrap().get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Produces PRODUCE_RECORDS 1 KiB records as fast as librdkafka will and waits for every
/// delivery report; returns (MB/s, records/s).
fn produce(bootstrap: &str, topic: &str, acks: &str, idempotent: bool) -> (f64, f64) {
    create_topic(bootstrap, topic, 4);
    let producer: BaseProducer<CountDeliveries> = client_config(bootstrap)
        .set("acks", acks)
        .set("enable.idempotence", if idempotent { "true" } else { "false" })
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(CountDeliveries::default())
        .expect("producer");
    let payload = vec![b'x'; RECORD_BYTES];
    let started = Instant::now();
    for i in 0..PRODUCE_RECORDS {
        let key = (i % 64).to_string();
        let mut record = BaseRecord::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("every record delivered");
    let elapsed = started.elapsed();
    let context = producer.context();
    let (delivered, failed) = (context.delivered.load(Ordering::Relaxed), context.failed.load(Ordering::Relaxed));
    assert!(
        delivered == PRODUCE_RECORDS && failed == 0,
        "{topic}: {delivered} delivered, {failed} failed of {PRODUCE_RECORDS}; first error: {:?}",
        context.first_error.lock().unwrap()
    );
    (mb_per_s(PRODUCE_RECORDS * RECORD_BYTES, elapsed), PRODUCE_RECORDS as f64 / elapsed.as_secs_f64())
}

/// Sends one record per LATENCY_INTERVAL and measures produce-to-consume time.
fn end_to_end_latency(bootstrap: &str) -> (Duration, Duration) {
    create_topic(bootstrap, "latency", 1);
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", "bench-assign-only")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("latency", 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let producer: BaseProducer = client_config(bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    // Warm up: producer id, metadata and the consumer's first fetch are not latency.
    let warm_up_deadline = Instant::now() + Duration::from_secs(30);
    producer.send(BaseRecord::<(), _>::to("latency").payload("warm-up")).expect("enqueued");
    producer.flush(Duration::from_secs(30)).unwrap();
    while !matches!(consumer.poll(Duration::from_millis(100)), Some(Ok(_))) {
        assert!(Instant::now() < warm_up_deadline, "the warm-up record never arrived");
    }
    let origin = Instant::now();
    let sender = std::thread::spawn(move || {
        for _ in 0..LATENCY_SAMPLES {
            let sent_ns = origin.elapsed().as_nanos().to_string();
            producer.send(BaseRecord::<(), _>::to("latency").payload(&sent_ns)).expect("enqueued");
            producer.poll(Duration::ZERO);
            std::thread::sleep(LATENCY_INTERVAL);
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    });
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    let deadline = Instant::now() + Duration::from_secs(60);
    while samples.len() < LATENCY_SAMPLES && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let sent_ns: u128 = std::str::from_utf8(message.payload().unwrap()).unwrap().parse().unwrap();
            samples.push(Duration::from_nanos((origin.elapsed().as_nanos() - sent_ns) as u64));
        }
    }
    sender.join().unwrap();
    assert_eq!(samples.len(), LATENCY_SAMPLES, "every latency sample was consumed");
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

fn main() {
    println!(
        "Gregor broker benchmark: {} records of {RECORD_BYTES} B per produce run, librdkafka on loopback\n",
        PRODUCE_RECORDS
    );
    let broker = InProcessBroker::start("127.0.0.1:0", &[]);
    let bootstrap = broker.bootstrap();
    eprintln!("loopback TCP ...");
    let tcp = loopback_tcp();
    eprintln!("sequential disk writes ...");
    let disk = sequential_disk(broker.dir.path());
    eprintln!("produce acks=1 ...");
    let (acks1_mb, acks1_rec) = produce(&bootstrap, "bench-acks1", "1", false);
    eprintln!("produce acks=all, idempotent ...");
    let (acks_all_mb, acks_all_rec) = produce(&bootstrap, "bench-acks-all", "all", true);
    eprintln!("produce acks=all, not idempotent ...");
    let (acks_all_plain_mb, acks_all_plain_rec) = produce(&bootstrap, "bench-acks-all-plain", "all", false);
    eprintln!("end-to-end latency ...");
    let (p50, p99) = end_to_end_latency(&bootstrap);
    broker.shutdown();

    println!("| measurement | value |");
    println!("| --- | --- |");
    println!("| loopback TCP, 1 KiB writes | {tcp:.0} MB/s |");
    println!("| sequential write + fsync to the data dir | {disk:.0} MB/s |");
    println!("| produce acks=1 | {acks1_mb:.0} MB/s, {acks1_rec:.0} records/s |");
    println!("| produce acks=all, idempotent | {acks_all_mb:.0} MB/s, {acks_all_rec:.0} records/s |");
    println!("| produce acks=all, not idempotent | {acks_all_plain_mb:.0} MB/s, {acks_all_plain_rec:.0} records/s |");
    println!(
        "| end-to-end latency, acks=all, 1 record/ms | p50 {:.2} ms, p99 {:.2} ms |",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!();
    println!("| ratio | value |");
    println!("| --- | --- |");
    println!("| produce acks=1 / loopback TCP | {:.2} |", acks1_mb / tcp);
    println!("| produce acks=1 / disk | {:.2} |", acks1_mb / disk);
    println!("| produce acks=all / loopback TCP | {:.2} |", acks_all_mb / tcp);
    println!("| produce acks=all / disk | {:.2} |", acks_all_mb / disk);
    println!("| produce acks=all, not idempotent / loopback TCP | {:.2} |", acks_all_plain_mb / tcp);
}
