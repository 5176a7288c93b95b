//! librdkafka helpers for the tests and the benchmark.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A librdkafka client configuration for `bootstrap`. With `GREGOR_RDKAFKA_DEBUG` set (e.g.
/// `protocol,broker,cgrp,fetch,msg,eos` or `all`) librdkafka logs those contexts to the output,
/// through the `log` crate when `RUST_LOG` is set too (e.g. `RUST_LOG=debug`): that shows every
/// request it sends and every error it gets back from the broker.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    crate::init_logging();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    if let Ok(debug) = std::env::var("GREGOR_RDKAFKA_DEBUG") {
        config.set("debug", debug);
    }
    config
}

/// Creates a topic through librdkafka's admin client (CreateTopics).
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    create_replicated_topic(bootstrap, topic, partitions, 1);
}

/// CreateTopics with `replication` replicas per partition.
pub fn create_replicated_topic(bootstrap: &str, topic: &str, partitions: i32, replication: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create().expect("admin client");
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let results = futures::executor::block_on(admin.create_topics(&[new_topic], &AdminOptions::new()))
        .expect("CreateTopics request");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("creating {name}: {code:?}"));
    }
}

/// (partition, offset, key, payload) of every record read.
pub type Read = Vec<(i32, i64, Vec<u8>, Vec<u8>)>;

/// Reads partitions `0..partitions` of `topic` from the beginning to their end with manual
/// assignment and librdkafka's default isolation level (read_committed).
pub fn read_to_end(bootstrap: &str, topic: &str, partitions: i32, timeout: Duration) -> Read {
    let consumer: BaseConsumer = client_config(bootstrap)
        // librdkafka's assign() fails with "Local: Unknown group" without a group id. With
        // assign() (no subscribe) it never joins the group: start offsets are explicit and
        // nothing is committed.
        .set("group.id", "gregor-tests-assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let mut read = Vec::new();
    let mut at_end: BTreeMap<i32, bool> = (0..partitions).map(|p| (p, false)).collect();
    let deadline = Instant::now() + timeout;
    while at_end.values().any(|eof| !eof) {
        assert!(
            Instant::now() < deadline,
            "did not reach the end of every partition within {timeout:?}; read {} records",
            read.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                at_end.insert(message.partition(), false);
                read.push((
                    message.partition(),
                    message.offset(),
                    message.key().unwrap_or_default().to_vec(),
                    message.payload().unwrap_or_default().to_vec(),
                ));
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition, true);
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
        }
    }
    read
}
