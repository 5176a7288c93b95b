//! Group consumers of other clients against the broker: confluent-kafka (librdkafka in
//! Python), aiokafka and kafkajs (Node.js, installed by `cargo xtest real` into
//! `tests/js/node_modules`). Each reads what was produced, commits, and a second run resumes
//! after its commits.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real threads, processes, files and clocks: never simulated

use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tests::rdkafka_util::{client_config, create_topic};
use tests::{python, python_script, run_bounded, InProcessBroker};

const PARTITIONS: i32 = 3;

fn produce(bootstrap: &str, topic: &str, from: usize, to: usize) {
    let producer: FutureProducer = client_config(bootstrap).set("acks", "all").create().expect("producer");
    let deliveries: Vec<_> = (from..to)
        .map(|i| {
            let payload = format!("value-{i}");
            producer
                .send_result(FutureRecord::<(), _>::to(topic).partition(i as i32 % PARTITIONS).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("enqueued")
        })
        .collect();
    for delivery in deliveries {
        futures::executor::block_on(delivery).expect("delivery").expect("acknowledged");
    }
}

/// The values a run of `group_consume.py` read, sorted.
fn consume(client: &str, bootstrap: &str, topic: &str, group: &str, count: usize, idle_s: &str) -> Vec<String> {
    let output = run_bounded(
        Command::new(python()).arg(python_script("group_consume.py")).args([
            client,
            bootstrap,
            topic,
            group,
            &count.to_string(),
            idle_s,
        ]),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{client} consumer failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let mut values: Vec<String> =
        stdout.lines().map(|l| l.split_whitespace().nth(2).expect("partition offset value").to_string()).collect();
    values.sort();
    values
}

fn values(range: std::ops::Range<usize>) -> Vec<String> {
    let mut v: Vec<String> = range.map(|i| format!("value-{i}")).collect();
    v.sort();
    v
}

fn reads_commits_and_resumes(client: &str) {
    let broker = InProcessBroker::start("127.0.0.1:0", &[("group.initial.rebalance.delay.ms", "0")]);
    let bootstrap = broker.bootstrap();
    let topic = format!("{client}-topic");
    let group = format!("{client}-group");
    create_topic(&bootstrap, &topic, PARTITIONS);
    produce(&bootstrap, &topic, 0, 30);
    assert_eq!(consume(client, &bootstrap, &topic, &group, 30, "1"), values(0..30));
    produce(&bootstrap, &topic, 30, 35);
    // The second run starts at the committed offsets: only the five new records, nothing twice.
    assert_eq!(consume(client, &bootstrap, &topic, &group, 5, "2"), values(30..35));
    broker.shutdown();
}

#[test]
fn confluent_kafka_subscribe_with_manual_commits_resumes_after_them() {
    reads_commits_and_resumes("confluent");
}

#[test]
fn aiokafka_group_consumer_resumes_after_its_commits() {
    reads_commits_and_resumes("aiokafka");
}

#[test]
fn kafkajs_consumer_run_in_a_group_resumes_after_its_commits() {
    reads_commits_and_resumes("kafkajs");
}
