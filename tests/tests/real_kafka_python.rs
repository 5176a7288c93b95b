//! kafka-python (3.x, from the venv `cargo xtest` creates) against the broker on
//! localhost:9092, the address the seed's examples hard-code. One test at a time owns the port.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real threads, processes, files and clocks: never simulated

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use tests::{python, python_script, run_bounded, InProcessBroker};

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
