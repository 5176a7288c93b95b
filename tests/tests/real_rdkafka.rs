//! librdkafka (through the `rdkafka` crate) against the broker: the idempotent producer with
//! acks=all, then a consumer with librdkafka's default read_committed isolation.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real threads, processes, files and clocks: never simulated

use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;
use tests::rdkafka_util::{client_config, create_topic, read_to_end};
use tests::InProcessBroker;

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 4;

#[test]
fn rdkafka_idempotent_producer_and_read_committed_consumer_round_trip_100k_records() {
    let broker = InProcessBroker::start("127.0.0.1:0", &[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "round-trip", PARTITIONS);
    let producer: FutureProducer = client_config(&bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .expect("producer");
    let deliveries: Vec<_> = (0..RECORDS)
        .map(|i| {
            let key = format!("key-{}", i % 1000);
            let payload = format!("value-{i:08}");
            producer
                .send_result(FutureRecord::to("round-trip").key(&key).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("enqueued")
        })
        .collect();
    // partition -> (offset, payload) in acknowledgement order
    let mut acked: BTreeMap<i32, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let delivery = futures::executor::block_on(delivery)
            .expect("delivery future")
            .unwrap_or_else(|(e, _)| panic!("record {i} not delivered: {e}"));
        acked.entry(delivery.partition).or_default().push((delivery.offset, format!("value-{i:08}").into_bytes()));
    }
    assert_eq!(acked.values().map(Vec::len).sum::<usize>(), RECORDS);
    for (partition, records) in &mut acked {
        // Send order is kept per partition (idempotence: in-flight retries never reorder).
        assert!(records.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1), "partition {partition} out of order");
        let offsets: Vec<i64> = records.iter().map(|r| r.0).collect();
        assert_eq!(offsets, (0..records.len() as i64).collect::<Vec<_>>(), "partition {partition} offsets are dense");
    }

    let read = read_to_end(&bootstrap, "round-trip", PARTITIONS, Duration::from_secs(120));
    assert_eq!(read.len(), RECORDS, "count");
    let mut by_partition: BTreeMap<i32, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
    for (partition, offset, key, payload) in read {
        let i: usize = String::from_utf8(payload[6..].to_vec()).unwrap().parse().unwrap();
        assert_eq!(key, format!("key-{}", i % 1000).into_bytes(), "content");
        by_partition.entry(partition).or_default().push((offset, payload));
    }
    assert_eq!(by_partition, acked, "order and content per partition");
    broker.shutdown();
}

/// Every compression codec librdkafka is built with here (gzip through the vendored zlib,
/// snappy and lz4 built in, zstd through the vendored libzstd) round-trips through the broker.
#[test]
fn rdkafka_round_trips_every_compression_codec() {
    const PER_CODEC: usize = 5_000;
    let broker = InProcessBroker::start("127.0.0.1:0", &[]);
    let bootstrap = broker.bootstrap();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&bootstrap, &topic, 2);
        let producer: FutureProducer = client_config(&bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", codec)
            .create()
            .expect("producer");
        let deliveries: Vec<_> = (0..PER_CODEC)
            .map(|i| {
                // Repetitive payloads, so every codec really compresses.
                let payload = format!("{codec}-{i:06}-{}", "abcdefgh".repeat(16));
                producer
                    .send_result(FutureRecord::to(&topic).key(&format!("k{}", i % 7)).payload(&payload))
                    .map_err(|(e, _)| e)
                    .expect("enqueued")
            })
            .collect();
        let mut acked: BTreeMap<i32, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
        for (i, delivery) in deliveries.into_iter().enumerate() {
            let delivery = futures::executor::block_on(delivery)
                .expect("delivery future")
                .unwrap_or_else(|(e, _)| panic!("{codec}: record {i} not delivered: {e}"));
            let payload = format!("{codec}-{i:06}-{}", "abcdefgh".repeat(16));
            acked.entry(delivery.partition).or_default().push((delivery.offset, payload.into_bytes()));
        }
        let read = read_to_end(&bootstrap, &topic, 2, Duration::from_secs(60));
        let mut by_partition: BTreeMap<i32, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
        for (partition, offset, _key, payload) in read {
            by_partition.entry(partition).or_default().push((offset, payload));
        }
        for records in acked.values_mut() {
            records.sort();
        }
        assert_eq!(by_partition.values().map(Vec::len).sum::<usize>(), PER_CODEC, "{codec}: count");
        assert_eq!(by_partition, acked, "{codec}: offsets and content per partition");
    }
    broker.shutdown();
}
