//! SIGTERM (what `kill` and service managers send) shuts the broker down cleanly: it exits 0
//! and every partition log is marked cleanly closed, so the next start skips recovery.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real threads, processes, files and clocks: never simulated

use std::process::Command;
use std::time::{Duration, Instant};
use tests::{free_port, wait_for_port};

#[test]
fn sigterm_flushes_closes_every_log_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gregor-broker"))
        .args(["--override", &format!("listeners=PLAINTEXT://{addr}")])
        .args(["--override", &format!("log.dirs={}", dir.path().display())])
        .args(["--override", "num.partitions=2"])
        .spawn()
        .unwrap();
    wait_for_port(addr, Duration::from_secs(30));
    tests::rdkafka_util::create_topic(&addr.to_string(), "closing", 2);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the broker did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit}");
    for partition in 0..2 {
        let marker = dir.path().join(format!("closing-{partition}")).join(".clean-shutdown");
        assert!(marker.exists(), "{} is missing", marker.display());
    }
}
