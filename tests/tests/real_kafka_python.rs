//! kafka-python (3.x, from the venv `cargo xtest` creates) against the broker on
//! localhost:9092, the address the seed's examples hard-code. One test at a time owns the port.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real threads, processes, files and clocks: never simulated

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use tests::{python, python_script, run_bounded, run_until, InProcessBroker};

/// Port 9092 can be held by one broker at a time.
static PORT_9092: Mutex<()> = Mutex::new(());

fn run_python(script: &str, args: &[&str]) -> String {
    let output = run_bounded(Command::new(python()).arg(python_script(script)).args(args), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    stdout
}

#[test]
fn the_seed_producer_example_runs_as_written_and_a_consumer_reads_its_record() {
    let _port = PORT_9092.lock().unwrap_or_else(|e| e.into_inner());
    let broker = InProcessBroker::start("127.0.0.1:9092", &[]);
    let out = run_python("seed_producer.py", &[]);
    assert!(out.contains("Message sent to topic orders"), "{out}");
    assert!(out.contains("Partition: 0"), "{out}");
    assert!(out.contains("Offset: 0"), "{out}");
    assert!(!out.contains("Error sending message"), "{out}");
    let read = run_python("consumer_no_group.py", &["orders", "1"]);
    assert_eq!(
        read.trim(),
        r#"{"topic": "orders", "partition": 0, "offset": 0, "key": "order-123", "value": {"order_id": "123", "product": "laptop"}}"#
    );
    broker.shutdown();
}

#[test]
fn kafka_python_idempotent_producer_round_trips_thousands_of_records_over_three_partitions() {
    let _port = PORT_9092.lock().unwrap_or_else(|e| e.into_inner());
    let broker = InProcessBroker::start("127.0.0.1:9092", &[]);
    let out = run_python("idempotent_round_trip.py", &["many", "3000"]);
    assert!(out.contains("ok: 3000 records over 3 partitions"), "{out}");
    broker.shutdown();
}

/// The "Offset: N" lines the seed's consumer printed, in order.
fn offsets_printed(out: &str) -> Vec<i64> {
    out.lines().filter_map(|l| l.strip_prefix("Offset: ")).map(|n| n.trim().parse().expect("an offset")).collect()
}

/// Runs the seed's consumer (which loops forever) until it has processed `records`, then
/// `settle` longer, then kills it as a crash would (no close, no leave, no final commit).
fn run_seed_consumer(records: usize, settle: Duration) -> String {
    run_until(
        Command::new(python()).arg(python_script("seed_consumer.py")),
        |out| out.matches("Processing order:").count() >= records,
        settle,
        Duration::from_secs(90),
    )
}

/// The seed's consumer example, as written: group `order-processing-group`, earliest, auto
/// commit. It reads what the producer example sent; killed and started again, it resumes from
/// the offsets it committed and reads nothing twice. (Its first member was killed, not closed:
/// the second waits out the first's session, kafka-python's default 45 s, as it would on
/// Kafka, before it gets the partition.)
#[test]
fn the_seed_consumer_example_reads_in_a_group_commits_and_a_second_run_resumes_without_rereading() {
    let _port = PORT_9092.lock().unwrap_or_else(|e| e.into_inner());
    let broker = InProcessBroker::start("127.0.0.1:9092", &[]);
    for _ in 0..3 {
        let out = run_python("seed_producer.py", &[]);
        assert!(!out.contains("Error sending message"), "{out}");
    }
    // kafka-python auto-commits every 5 s: let one commit happen after the last record.
    let first = run_seed_consumer(3, Duration::from_secs(7));
    assert_eq!(offsets_printed(&first), vec![0, 1, 2], "{first}");
    assert!(!first.contains("Error consuming messages"), "{first}");
    let out = run_python("seed_producer.py", &[]);
    assert!(out.contains("Offset: 3"), "{out}");
    let second = run_seed_consumer(1, Duration::from_secs(2));
    assert_eq!(offsets_printed(&second), vec![3], "the second run resumes at the committed offset:\n{second}");
    broker.shutdown();
}
