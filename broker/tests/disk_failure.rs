//! A failed write or fsync halts the process, and starting it again recovers: the broker and
//! its controller on a disk whose fsyncs fail on demand. Each "process" is its own tokio
//! runtime, dropped to end it without a clean shutdown (as `exit(1)` would); the in-memory disk
//! keeps its page cache across it, as a real one does across a process restart.
#![cfg(not(madsim))]

mod common;

use broker::server::{self, BrokerConfig, BrokerHandle};
use broker::storage::mem::{DiskOp, FaultHook, MemDisk};
use broker::storage::Disk;
use common::{batch, create_topic, fetch, produce, values_of};
use kafka_protocol::records::Compression;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// EIO on every fsync of a file whose path contains `needle`, while switched on.
#[derive(Debug)]
struct FailingSyncs {
    needle: &'static str,
    on: AtomicBool,
}

impl FaultHook for FailingSyncs {
    fn check(&self, op: DiskOp, path: &Path) -> std::io::Result<()> {
        if op == DiskOp::Sync && self.on.load(Ordering::SeqCst) && path.to_string_lossy().contains(self.needle) {
            return Err(std::io::Error::other(format!("EIO syncing {}", path.display())));
        }
        Ok(())
    }
}

fn disk_failing(needle: &'static str) -> (MemDisk, Arc<FailingSyncs>) {
    let disk = MemDisk::new();
    disk.create_dir_all(Path::new("/data")).unwrap();
    disk.sync_dir(Path::new("/")).unwrap();
    let hook = Arc::new(FailingSyncs { needle, on: AtomicBool::new(false) });
    disk.set_fault_hook(Some(hook.clone()));
    (disk, hook)
}

async fn start(disk: &MemDisk) -> BrokerHandle {
    let mut config = BrokerConfig::default();
    config.set("listeners", "PLAINTEXT://127.0.0.1:0").unwrap();
    config.set("log.dirs", "/data").unwrap();
    server::start(config, Arc::new(disk.clone())).await.unwrap()
}

async fn connect(handle: &BrokerHandle) -> broker::protocol::client::Connection<tokio::net::TcpStream> {
    let mut conn = broker::protocol::client::Connection::connect(&handle.local_addr.to_string(), "disk-failure-test")
        .await
        .unwrap();
    conn.request_timeout = Duration::from_secs(20);
    conn
}

/// Runs one broker process on `disk` until `body` returns, then ends it abruptly.
fn process<T>(disk: &MemDisk, body: impl AsyncFnOnce(&BrokerHandle) -> T) -> T {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        let handle = start(disk).await;
        body(&handle).await
    });
    drop(runtime); // every task of the process stops here: nothing more is written
    result
}

async fn halted(handle: &BrokerHandle) -> String {
    tokio::time::timeout(Duration::from_secs(10), handle.halt.halted()).await.expect("the process halts")
}

#[test]
fn a_failed_metadata_fsync_halts_the_process_and_a_restart_keeps_every_committed_decision() {
    let (disk, fault) = disk_failing("metadata.log");
    let reason = process(&disk, async |handle| {
        let mut conn = connect(handle).await;
        assert_eq!(create_topic(&mut conn, "kept", 1, &[]).await, 0);
        let (code, _) = produce(&mut conn, "kept", 0, -1, batch(&["a"], None, Compression::None)).await;
        assert_eq!(code, 0);
        fault.on.store(true, Ordering::SeqCst);
        // The controller's append for this topic fails: it halts instead of answering.
        let mut other = connect(handle).await;
        tokio::spawn(async move { create_topic(&mut other, "never-acknowledged", 1, &[]).await });
        let reason = halted(handle).await;
        assert!(handle.halt.reason().is_some());
        reason
    });
    assert!(reason.contains("metadata log failed") && reason.contains("metadata.log"), "{reason}");
    fault.on.store(false, Ordering::SeqCst);
    process(&disk, async |handle| {
        let mut conn = connect(handle).await;
        let data = fetch(&mut conn, "kept", 0, 0, 0, 0).await;
        assert_eq!(data.error_code, 0);
        assert_eq!(values_of(&data.records), vec![(0, "a".to_string())]);
        let (code, offset) = produce(&mut conn, "kept", 0, -1, batch(&["b"], None, Compression::None)).await;
        assert_eq!((code, offset), (0, 1), "the restarted node takes writes again");
        assert_eq!(handle.halt.reason(), None);
    });
}

#[test]
fn a_failed_partition_fsync_halts_the_process_without_acknowledging_and_a_restart_serves_again() {
    let (disk, fault) = disk_failing("events-0");
    let reason = process(&disk, async |handle| {
        let mut conn = connect(handle).await;
        assert_eq!(create_topic(&mut conn, "events", 1, &[("flush.messages", "1")]).await, 0);
        let (code, _) = produce(&mut conn, "events", 0, -1, batch(&["a"], None, Compression::None)).await;
        assert_eq!(code, 0);
        fault.on.store(true, Ordering::SeqCst);
        let (code, _) = produce(&mut conn, "events", 0, -1, batch(&["b"], None, Compression::None)).await;
        assert_eq!(code, 56, "KAFKA_STORAGE_ERROR: never acknowledged");
        halted(handle).await
    });
    assert!(reason.contains("log directory /data is offline") && reason.contains("events-0"), "{reason}");
    fault.on.store(false, Ordering::SeqCst);
    disk.crash(); // and the power goes too: only what was synced is left
    process(&disk, async |handle| {
        let mut conn = connect(handle).await;
        let data = fetch(&mut conn, "events", 0, 0, 0, 0).await;
        assert_eq!(values_of(&data.records), vec![(0, "a".to_string())], "exactly the synced prefix");
        let (code, offset) = produce(&mut conn, "events", 0, -1, batch(&["c"], None, Compression::None)).await;
        assert_eq!((code, offset), (0, 1));
    });
}
