//! Group consumers of other clients against the broker: kcat -G and confluent-kafka
//! (librdkafka), aiokafka and kafkajs (Node.js, installed by `cargo xtest real` into
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

/// The values a run of the client's group consumer script read, sorted.
fn consume(client: &str, bootstrap: &str, topic: &str, group: &str, count: usize, idle_s: &str) -> Vec<String> {
    let count = count.to_string();
    let mut command = match client {
        "kafkajs" => {
            let mut node = Command::new(std::env::var("GREGOR_NODE").unwrap_or_else(|_| "node".to_string()));
            node.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("js/group_consume.js"));
            node.args([bootstrap, topic, group, &count, idle_s]);
            node
        }
        "kcat" => {
            // The balanced consumer (-G): librdkafka's group consumer, auto commit, exit at the
            // end of every assigned partition (-e).
            let mut kcat = Command::new(tests::kcat());
            kcat.args(["-b", bootstrap, "-G", group, topic, "-X", "auto.offset.reset=earliest", "-e", "-q"]);
            kcat.args(["-f", "%p %o %s\\n"]);
            kcat
        }
        "confluent" | "aiokafka" => {
            let mut python = Command::new(python());
            python.arg(python_script("group_consume.py")).args([client, bootstrap, topic, group, &count, idle_s]);
            python
        }
        other => panic!("no group consumer script for {other}"),
    };
    let output = run_bounded(&mut command, Duration::from_secs(120));
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
fn kcat_balanced_consumer_resumes_after_its_commits() {
    reads_commits_and_resumes("kcat");
}

#[test]
fn kafkajs_consumer_run_in_a_group_resumes_after_its_commits() {
    reads_commits_and_resumes("kafkajs");
}

/// `broker groups` (the lag view of `kafka-consumer-groups.sh`) against a running broker: the
/// group is listed, and each partition shows the committed offset, the log end and the lag.
#[test]
fn the_groups_command_lists_the_group_and_shows_committed_offsets_log_ends_and_lag() {
    let broker = InProcessBroker::start("127.0.0.1:0", &[("group.initial.rebalance.delay.ms", "0")]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "lagging", PARTITIONS);
    produce(&bootstrap, "lagging", 0, 30);
    assert_eq!(consume("confluent", &bootstrap, "lagging", "lag-group", 30, "1").len(), 30);
    // Five more that nobody reads: partitions 0, 1, 2, 0, 1 (records go to i % 3).
    produce(&bootstrap, "lagging", 30, 35);
    let groups = |args: &[&str]| {
        let output = run_bounded(
            Command::new(env!("CARGO_BIN_EXE_gregor-broker"))
                .arg("groups")
                .args(["--bootstrap-server", &bootstrap])
                .args(args),
            Duration::from_secs(60),
        );
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "broker groups {args:?}: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let listed = groups(&["--list"]);
    assert!(listed.lines().any(|l| l.starts_with("lag-group") && l.contains("Empty")), "{listed}");
    let described = groups(&["--describe", "--group", "lag-group"]);
    let rows: Vec<Vec<&str>> =
        described.lines().filter(|l| l.starts_with("lagging ")).map(|l| l.split_whitespace().collect()).collect();
    let expected =
        [["lagging", "0", "10", "12", "2"], ["lagging", "1", "10", "12", "2"], ["lagging", "2", "10", "11", "1"]];
    assert_eq!(rows.len(), 3, "{described}");
    for (row, expected) in rows.iter().zip(expected) {
        assert_eq!(&row[..5], &expected[..], "{described}");
    }
    // kafka-python's admin deletes the (empty) group's offset of partition 0 (OffsetDelete);
    // the lag view then shows none for it. A group that does not exist is an error.
    let delete = |group: &str| {
        let output = run_bounded(
            Command::new(python())
                .arg(python_script("delete_group_offsets.py"))
                .args([&bootstrap, group, "lagging", "0"]),
            Duration::from_secs(60),
        );
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(delete("lag-group"), "lagging 0 NoError");
    assert_eq!(delete("no-such-group"), "error GroupIdNotFoundError");
    let described = groups(&["--describe", "--group", "lag-group"]);
    let partitions: Vec<&str> =
        described.lines().filter(|l| l.starts_with("lagging ")).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(partitions, ["1", "2"], "an empty group shows only committed offsets: {described}");
    broker.shutdown();
}
