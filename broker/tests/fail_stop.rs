//! Fail-stop: a panic in any task of a broker process ends the process with a clear message,
//! instead of tokio catching it and the broker limping on without that task.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // a real process and real files: never simulated

use broker::server::{self, BrokerConfig};
use broker::storage::real::RealDisk;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHILD: &str = "GREGOR_FAIL_STOP_CHILD";
const TEST: &str = "a_panic_in_a_broker_task_ends_the_process_with_a_clear_message";

#[test]
fn a_panic_in_a_broker_task_ends_the_process_with_a_clear_message() {
    if std::env::var_os(CHILD).is_some() {
        return run_broker_then_panic_in_a_task();
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("still serving"), "the process limped on after the panic:\n{stdout}\n{stderr}");
    assert_eq!(output.status.signal(), Some(6), "ended by SIGABRT, not {:?}:\n{stderr}", output.status);
    assert!(stderr.contains("a handler bug, planted by the fail-stop test"), "{stderr}");
    assert!(stderr.contains("gregor: fail-stop: a panic in thread"), "{stderr}");
}

/// The child: a running broker, then a task that panics while holding a lock (the way a bug
/// in a request handler would).
fn run_broker_then_panic_in_a_task() {
    broker::fail_stop::install();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig::default();
        config.set("listeners", "PLAINTEXT://127.0.0.1:0").unwrap();
        config.set("log.dirs", dir.path().to_str().unwrap()).unwrap();
        let _broker = server::start(config, Arc::new(RealDisk)).await.unwrap();
        let state = Arc::new(Mutex::new(0));
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                let _guard = state.lock().unwrap();
                panic!("a handler bug, planted by the fail-stop test");
            }
        });
        let _ = task.await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!("still serving after a panic");
    });
}
