//! The log cleaner: what it keeps, what it never touches, and crashes at every step of a pass.

use super::tests::disk;
use super::*;
use crate::protocol::client::{encode_batch, BatchProducer, BatchRecord};
use crate::storage::mem::{DiskOp, FaultHook, MemDisk};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

const DIR: &str = "/data/compacted-0";
const NOW: i64 = 1_000_000;

fn compacted() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 100,
        retention_ms: None,
        cleanup_policy: CleanupPolicy::COMPACT,
        delete_retention_ms: 10_000,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

fn open(disk: &MemDisk, config: LogConfig) -> PartitionLog {
    PartitionLog::open(Arc::new(disk.clone()), PathBuf::from(DIR), config, NOW).unwrap()
}

/// One record: key, and value (`None` is a tombstone).
type Kv = (String, Option<String>);

fn batch(records: &[Kv], timestamp: i64, producer: Option<BatchProducer>) -> Bytes {
    let records: Vec<BatchRecord> = records
        .iter()
        .map(|(k, v)| BatchRecord { key: Some(Bytes::from(k.clone())), value: v.clone().map(Bytes::from), timestamp })
        .collect();
    encode_batch(&records, producer, Compression::None)
}

fn kv(key: &str, value: &str) -> Kv {
    (key.to_string(), Some(value.to_string()))
}

/// (offset, key, value) of every record the log serves, and the batches it serves them in.
fn read_all(log: &PartitionLog) -> (Vec<(i64, Kv)>, usize) {
    let mut bytes = log.read(log.log_start_offset(), usize::MAX, log.log_end_offset(), true).unwrap().records;
    let mut records = Vec::new();
    let mut batches = 0;
    while !bytes.is_empty() {
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        batches += 1;
        for r in set.records {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let value = r.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
            records.push((r.offset, (key, value)));
        }
    }
    (records, batches)
}

/// `rounds` single-record batches cycling over `keys` keys: values `v<round>`.
fn fill(log: &mut PartitionLog, keys: usize, rounds: usize, timestamp: i64) -> Vec<(i64, Kv)> {
    let mut written = Vec::new();
    for round in 0..rounds {
        let record = kv(&format!("k{}", round % keys), &format!("v{round}"));
        let info =
            log.append(batch(std::slice::from_ref(&record), timestamp, None), LeaderEpoch(0), timestamp).unwrap();
        written.push((info.info().base_offset.0, record));
    }
    written
}

/// What compaction of `written` below `cleaned_end` must leave: every record at or past it,
/// and below it the newest record of each key (among those below it).
fn compacted_model(written: &[(i64, Kv)], cleaned_end: i64) -> Vec<(i64, Kv)> {
    let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
    for (offset, (key, _)) in written.iter().filter(|(o, _)| *o < cleaned_end) {
        newest.insert(key, *offset);
    }
    written.iter().filter(|(o, (k, _))| *o >= cleaned_end || newest.get(k.as_str()) == Some(o)).cloned().collect()
}

fn sealed_end(log: &PartitionLog) -> i64 {
    log.segments.last().unwrap().base_offset
}

#[test]
fn compaction_keeps_the_newest_record_of_each_key_at_its_offset() {
    let disk = disk();
    let mut log = open(&disk, compacted());
    let written = fill(&mut log, 5, 60, NOW);
    let (end, sealed) = (log.log_end_offset(), sealed_end(&log));
    assert!(log.segments.len() > 3, "the test needs several sealed segments");
    let stats = log.clean(NOW, end).unwrap().expect("there was something to clean");
    assert!(stats.records_removed > 0 && stats.bytes_after < stats.bytes_before / 2, "{stats:?}");
    let expected = compacted_model(&written, sealed);
    assert_eq!(read_all(&log).0, expected);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(0), end), "offsets never move");
    // What a clean restart and a crash both find is the cleaned log.
    log.close().unwrap();
    let log = open(&disk, compacted());
    assert_eq!(read_all(&log).0, expected);
    drop(log);
    disk.crash();
    let log = open(&disk, compacted());
    assert_eq!(read_all(&log).0, expected);
}

#[test]
fn the_cleaner_touches_neither_the_active_segment_nor_anything_above_the_high_watermark() {
    let disk = disk();
    let mut log = open(&disk, compacted());
    let written = fill(&mut log, 3, 60, NOW);
    let second_segment_end = log.segments[1].next_offset;
    // The HW inside the third segment: only the first two may be cleaned.
    log.clean(NOW, Offset(second_segment_end + 1)).unwrap().expect("two segments to clean");
    assert_eq!(read_all(&log).0, compacted_model(&written, second_segment_end));
    // With the HW at the log end everything sealed is cleaned, the active segment never.
    let sealed = sealed_end(&log);
    log.clean(NOW, log.log_end_offset()).unwrap();
    assert_eq!(read_all(&log).0, compacted_model(&written, sealed));
    assert!(read_all(&log).0.iter().filter(|(o, _)| *o >= sealed).count() > 0);
}

#[test]
fn a_tombstone_stays_for_delete_retention_and_then_goes_with_its_key() {
    let disk = disk();
    let mut log = open(&disk, compacted());
    let mut written = fill(&mut log, 4, 30, NOW);
    let info = log.append(batch(&[("k1".to_string(), None)], NOW, None), LeaderEpoch(0), NOW).unwrap();
    written.push((info.info().base_offset.0, ("k1".to_string(), None)));
    written.extend(fill(&mut log, 1, 30, NOW));
    let sealed = sealed_end(&log);
    assert!(info.info().base_offset.0 < sealed);
    log.clean(NOW + 5_000, log.log_end_offset()).unwrap();
    let records = read_all(&log).0;
    assert!(records.iter().any(|(_, (k, v))| k == "k1" && v.is_none()), "the tombstone is kept while young");
    assert!(!records.iter().any(|(_, (k, v))| k == "k1" && v.is_some()), "older values of its key are gone");
    log.first_dirty_offset = 0; // as after a restart: everything counts as dirty again
    log.clean(NOW + 10_001, log.log_end_offset()).unwrap();
    assert!(!read_all(&log).0.iter().any(|(_, (k, _))| k == "k1"), "an old tombstone goes");
}

#[test]
fn repeated_passes_keep_the_cleaned_part_bounded_by_the_live_keys() {
    let disk = disk();
    let mut log = open(&disk, compacted());
    let keys = 4;
    for _ in 0..30 {
        fill(&mut log, keys, 20, NOW);
        log.clean(NOW, log.log_end_offset()).unwrap();
    }
    let sealed = sealed_end(&log);
    let cleaned_bytes: u64 = log.segments[..log.segments.len() - 1].iter().map(|s| s.size).sum();
    let cleaned_batches = {
        let bytes = log.read(Offset(0), usize::MAX, Offset(sealed), true).unwrap().records;
        RecordBatchDecoder::decode_all(&mut bytes.clone()).unwrap().len()
    };
    // Each key's record, and at most one empty batch between two of them, per segment.
    let segments = log.segments.len();
    eprintln!("{segments} segments, {cleaned_batches} batches and {cleaned_bytes} bytes below {sealed}");
    // Each key's record, and at most one empty batch between two of them, per segment.
    assert!(segments <= 4, "cleaned segments are merged: {segments}");
    assert!(cleaned_batches <= 2 * keys + 2 * segments, "{cleaned_batches} batches below {sealed}");
    assert!(cleaned_bytes < 1_000, "{cleaned_bytes} bytes for {keys} keys after 600 writes");
}

#[test]
fn a_compacted_topic_refuses_a_record_without_a_key() {
    let disk = disk();
    let mut log = open(&disk, compacted());
    let keyless = encode_batch(
        &[BatchRecord { key: None, value: Some(Bytes::from_static(b"v")), timestamp: NOW }],
        None,
        Compression::None,
    );
    let error = log.append(keyless, LeaderEpoch(0), NOW).unwrap_err();
    assert_eq!(error.error_code(), ErrorCode::INVALID_RECORD, "{error}");
    assert_eq!(log.log_end_offset(), Offset(0));
}

#[test]
fn a_follower_appends_the_cleaned_batches_its_leader_serves() {
    let disk = disk();
    let mut leader = open(&disk, compacted());
    fill(&mut leader, 3, 40, NOW);
    leader.clean(NOW, leader.log_end_offset()).unwrap().expect("cleaned");
    let bytes = leader.read(Offset(0), usize::MAX, leader.log_end_offset(), true).unwrap().records;
    let follower_dir = PathBuf::from("/data/compacted-follower");
    let mut follower = PartitionLog::open(Arc::new(disk.clone()), follower_dir, compacted(), NOW).unwrap();
    follower.append_replicated(&bytes, NOW, LeaderEpoch(0)).unwrap();
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(read_all(&follower).0, read_all(&leader).0);
}

#[test]
fn a_follower_whose_log_end_falls_inside_an_empty_batch_of_its_leader_catches_up() {
    let disk = disk();
    let mut leader = open(&disk, compacted());
    fill(&mut leader, 2, 60, NOW);
    let follower_dir = PathBuf::from("/data/compacted-follower");
    let mut follower = PartitionLog::open(Arc::new(disk.clone()), follower_dir, compacted(), NOW).unwrap();
    let first = leader.read(Offset(0), usize::MAX, Offset(10), true).unwrap().records;
    follower.append_replicated(&first, NOW, LeaderEpoch(0)).unwrap();
    assert_eq!(follower.log_end_offset(), Offset(10));
    leader.clean(NOW, leader.log_end_offset()).unwrap().expect("cleaned");
    let rest = leader.read(Offset(10), usize::MAX, leader.log_end_offset(), true).unwrap().records;
    assert!(batch::parse_header(&rest).unwrap().base_offset < 10, "the leader's first batch spans offset 10");
    follower.append_replicated(&rest, NOW, LeaderEpoch(0)).unwrap();
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    let (leader_records, follower_records) = (read_all(&leader).0, read_all(&follower).0);
    // The follower keeps its own first ten records (its cleaner removes them later), then
    // serves exactly what the leader does.
    assert_eq!(follower_records[..10].iter().map(|r| r.0).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    assert_eq!(follower_records[10..], leader_records[..]);
    // Its own cleaner then removes them, but for what is newest in its own sealed segments.
    follower.clean(NOW, follower.log_end_offset()).unwrap();
    let cleaned = read_all(&follower).0;
    assert!(cleaned.ends_with(&leader_records) && cleaned.len() <= leader_records.len() + 2, "{cleaned:?}");
}

#[test]
fn an_idempotent_producers_remembered_batches_survive_cleaning_and_a_restart_without_snapshots() {
    let disk = disk();
    let mut log = open(&disk, compacted());
    for sequence in 0..40 {
        let producer = BatchProducer { producer_id: 9, producer_epoch: 0, base_sequence: sequence };
        let record = kv("only-key", &format!("v{sequence}"));
        log.append(batch(&[record], NOW, Some(producer)), LeaderEpoch(0), NOW).unwrap();
    }
    log.clean(NOW, log.log_end_offset()).unwrap().expect("cleaned");
    log.flush().unwrap();
    drop(log);
    for name in disk.list_dir(Path::new(DIR)).unwrap().iter().filter(|n| n.ends_with(".snapshot")) {
        disk.remove_file(&Path::new(DIR).join(name)).unwrap();
    }
    disk.crash();
    let mut log = open(&disk, compacted());
    // A retry of the fifth-newest batch is still recognised (rebuilt from the cleaned log).
    let retry = BatchProducer { producer_id: 9, producer_epoch: 0, base_sequence: 35 };
    let outcome = log.append(batch(&[kv("only-key", "v35")], NOW, Some(retry)), LeaderEpoch(0), NOW).unwrap();
    assert!(matches!(outcome, AppendOutcome::Duplicate(info) if info.base_offset == Offset(35)), "{outcome:?}");
}

/// Fails the `n`th disk operation that changes something (and every later one).
#[derive(Debug)]
struct FailFrom {
    n: u64,
    seen: AtomicU64,
}

impl FaultHook for FailFrom {
    fn check(&self, op: DiskOp, _: &Path) -> std::io::Result<()> {
        if op == DiskOp::Read {
            return Ok(());
        }
        if self.seen.fetch_add(1, Ordering::SeqCst) >= self.n {
            return Err(std::io::Error::other("injected: the power went out here"));
        }
        Ok(())
    }
}

#[test]
fn a_crash_at_every_step_of_a_clean_loses_nothing() {
    let setup = || {
        let disk = disk();
        let mut log = open(&disk, compacted());
        let written = fill(&mut log, 5, 60, NOW);
        log.flush().unwrap();
        (disk, log, written)
    };
    let (_, mut reference, written) = setup();
    let sealed = sealed_end(&reference);
    reference.clean(NOW, reference.log_end_offset()).unwrap();
    let cleaned = read_all(&reference).0;
    let newest: BTreeMap<&str, &(i64, Kv)> = written.iter().map(|w| (w.1 .0.as_str(), w)).collect();
    let mut steps = 0;
    for n in 0.. {
        let (disk, mut log, _) = setup();
        let end = log.log_end_offset();
        disk.set_fault_hook(Some(Arc::new(FailFrom { n, seen: AtomicU64::new(0) })));
        let finished = log.clean(NOW, end).is_ok();
        disk.set_fault_hook(None);
        drop(log);
        disk.crash();
        let mut log = open(&disk, compacted());
        let (records, _) = read_all(&log);
        assert_eq!(log.log_end_offset(), end, "step {n}");
        for record in &records {
            assert!(written.contains(record), "step {n}: {record:?} was never written there");
        }
        for (key, newest) in &newest {
            assert!(records.contains(newest), "step {n}: the newest record of {key} is gone");
        }
        // Below the sealed end the log is some groups cleaned and the rest as written; a
        // further pass after the crash always ends in the same cleaned log.
        log.clean(NOW, end).unwrap();
        assert_eq!(read_all(&log).0, cleaned, "step {n}");
        assert!(compacted_model(&written, sealed) == cleaned);
        steps = n;
        if finished {
            break;
        }
    }
    assert!(steps > 10, "a pass has many disk steps; only {steps} were tried");
}
