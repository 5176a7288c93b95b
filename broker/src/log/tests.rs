//! The partition log against a model, through crashes at every byte, and with corruption.

use super::*;
use crate::protocol::client::{encode_batch, BatchProducer, BatchRecord};
use crate::storage::mem::MemDisk;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use proptest::prelude::*;

const DIR: &str = "/data/events-0";

/// A disk whose every fsync fails with EIO.
#[derive(Debug)]
struct FailSync;

impl crate::storage::mem::FaultHook for FailSync {
    fn check(&self, op: crate::storage::mem::DiskOp, _: &Path) -> std::io::Result<()> {
        if op == crate::storage::mem::DiskOp::Sync {
            return Err(std::io::Error::other("EIO"));
        }
        Ok(())
    }
}

/// A memory disk with `/data` created and durable.
pub(super) fn disk() -> MemDisk {
    let disk = MemDisk::new();
    disk.create_dir_all(Path::new("/data")).unwrap();
    disk.sync_dir(Path::new("/")).unwrap();
    disk
}

fn config() -> LogConfig {
    LogConfig { segment_bytes: 400, index_interval_bytes: 100, retention_ms: None, ..LogConfig::default() }
}

fn open(disk: &MemDisk, config: LogConfig) -> PartitionLog {
    PartitionLog::open(Arc::new(disk.clone()), PathBuf::from(DIR), config, 0).unwrap()
}

/// A batch of `values`; `producer` = (id, epoch, base sequence).
fn batch(values: &[u64], timestamp: i64, producer: Option<(i64, i16, i32)>) -> Bytes {
    let records: Vec<BatchRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| BatchRecord {
            key: None,
            value: Some(Bytes::from(v.to_be_bytes().to_vec())),
            timestamp: timestamp + i as i64,
        })
        .collect();
    let producer = producer.map(|(producer_id, producer_epoch, base_sequence)| BatchProducer {
        producer_id,
        producer_epoch,
        base_sequence,
    });
    encode_batch(&records, producer, Compression::None)
}

/// (offset, value) of every record in `records`.
fn decode(records: &Bytes) -> Vec<(i64, u64)> {
    let mut buf = records.clone();
    let mut out = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut buf).unwrap() {
        for record in set.records {
            let value = record.value.unwrap();
            out.push((record.offset, u64::from_be_bytes(value[..8].try_into().unwrap())));
        }
    }
    out
}

fn read_all(log: &PartitionLog) -> Vec<(i64, u64)> {
    let records = log.read(log.log_start_offset(), usize::MAX, log.log_end_offset(), true).unwrap().records;
    decode(&records)
}

fn append(log: &mut PartitionLog, values: &[u64], timestamp: i64) -> AppendInfo {
    match log.append(batch(values, timestamp, None), LeaderEpoch(0), timestamp).unwrap() {
        AppendOutcome::Appended(info) => info,
        other => panic!("{other:?}"),
    }
}

#[derive(Clone, Debug)]
enum Action {
    // Values, and how far the producer's clock lags (timestamps need not grow).
    Append(Vec<u64>, u8),
    Read { offset_pick: u16, max_bytes: u16 },
    Flush,
    Retention { retention_bytes: u16 },
    CloseAndReopen,
    CrashAndReopen,
    OffsetForTimestamp(u16),
    Truncate(u16),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (prop::collection::vec(any::<u64>(), 1..6), any::<u8>()).prop_map(|(v, lag)| Action::Append(v, lag)),
        3 => (any::<u16>(), any::<u16>()).prop_map(|(offset_pick, max_bytes)| Action::Read { offset_pick, max_bytes }),
        1 => Just(Action::Flush),
        1 => (200u16..2000).prop_map(|retention_bytes| Action::Retention { retention_bytes }),
        1 => Just(Action::CloseAndReopen),
        1 => Just(Action::CrashAndReopen),
        1 => any::<u16>().prop_map(Action::OffsetForTimestamp),
        1 => any::<u16>().prop_map(Action::Truncate),
    ]
}

/// The model: every record ever appended, by offset; the log keeps those at or after its start.
struct Model {
    records: Vec<(i64, u64, i64)>,
    log_start: i64,
    /// Base offset of every appended batch (truncation cuts at batch boundaries).
    batch_bases: Vec<i64>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// With an fsync per append, the log behaves like a Vec through rolls, retention, clean
    /// restarts and crashes.
    #[test]
    fn the_log_matches_a_simple_model(actions in prop::collection::vec(action(), 1..60)) {
        let disk = disk();
        let cfg = LogConfig { flush_interval_messages: 1, ..config() };
        let mut log = open(&disk, cfg.clone());
        let mut model = Model { records: Vec::new(), log_start: 0, batch_bases: Vec::new() };
        let mut clock = 1_000_000;
        for action in actions {
            clock += 10;
            match action {
                Action::Append(values, lag) => {
                    let timestamp = clock - i64::from(lag);
                    let info = append(&mut log, &values, timestamp);
                    let base = model.records.len() as i64;
                    prop_assert_eq!(info.base_offset.0, base);
                    model.batch_bases.push(base);
                    for (i, v) in values.iter().enumerate() {
                        model.records.push((base + i as i64, *v, timestamp + i as i64));
                    }
                }
                Action::Read { offset_pick, max_bytes } => {
                    let span = (model.records.len() as i64 - model.log_start + 1).max(1);
                    let offset = model.log_start + i64::from(offset_pick) % span;
                    let read = log.read(Offset(offset), usize::from(max_bytes), log.log_end_offset(), true).unwrap();
                    let got = decode(&read.records);
                    let expected: Vec<(i64, u64)> = model.records.iter().filter(|r| r.0 >= model.log_start).map(|r| (r.0, r.1)).collect();
                    // Whole batches from the one holding `offset`: a prefix of what is at or after its batch start.
                    if offset < model.records.len() as i64 {
                        prop_assert!(!got.is_empty(), "at least one batch");
                        prop_assert!(got[0].0 <= offset && got.last().unwrap().0 >= offset);
                        let start = expected.iter().position(|r| r.0 == got[0].0).unwrap();
                        prop_assert_eq!(&got[..], &expected[start..start + got.len()]);
                        prop_assert!(read.records.len() <= usize::from(max_bytes) || got.len() <= 5, "over max_bytes only for the first batch");
                    } else {
                        prop_assert!(got.is_empty());
                    }
                    let below = log.read(Offset(model.log_start - 1), 100, log.log_end_offset(), true);
                    let out_of_range = matches!(below, Err(LogError::OffsetOutOfRange { .. }));
                    prop_assert!(model.log_start == 0 || out_of_range, "a read below the log start is out of range");
                }
                Action::Flush => log.flush().unwrap(),
                Action::Retention { retention_bytes } => {
                    let mut cfg = log.config().clone();
                    cfg.retention_bytes = Some(u64::from(retention_bytes));
                    log.set_config(cfg);
                    log.apply_retention(clock, log.log_end_offset()).unwrap();
                    let start = log.log_start_offset().0;
                    prop_assert!(start >= model.log_start, "log start never goes back");
                    model.log_start = start;
                    log.set_config(LogConfig { flush_interval_messages: 1, ..config() });
                }
                Action::CloseAndReopen => {
                    log.close().unwrap();
                    log = open(&disk, cfg.clone());
                }
                Action::CrashAndReopen => {
                    drop(log);
                    disk.crash();
                    log = open(&disk, cfg.clone());
                }
                Action::Truncate(pick) => {
                    let end = model.records.len() as i64;
                    let span = (end - model.log_start + 1).max(1);
                    let target = model.log_start + i64::from(pick) % span;
                    log.truncate_to(Offset(target)).unwrap();
                    if target < end {
                        let cut = *model.batch_bases.iter().filter(|&&b| b <= target).max().expect("a batch holds the target");
                        model.records.truncate(cut as usize);
                        model.batch_bases.retain(|&b| b < cut);
                    }
                }
                Action::OffsetForTimestamp(pick) => {
                    let target = 1_000_000 - 256 + i64::from(pick % 1024);
                    let kept = || model.records.iter().filter(|r| r.0 >= model.log_start);
                    let expected = kept().find(|r| r.2 >= target).map(|r| (Offset(r.0), r.2));
                    prop_assert_eq!(log.offset_for_timestamp(target).unwrap(), expected);
                    let newest = kept().map(|r| r.2).max();
                    let expected = kept().find(|r| Some(r.2) == newest).map(|r| (Offset(r.0), r.2));
                    prop_assert_eq!(log.offset_of_max_timestamp().unwrap(), expected, "the first record with the largest timestamp");
                }
            }
            prop_assert_eq!(log.log_end_offset().0, model.records.len() as i64);
            prop_assert_eq!(log.log_start_offset().0, model.log_start);
        }
        let expected: Vec<(i64, u64)> = model.records.iter().filter(|r| r.0 >= model.log_start).map(|r| (r.0, r.1)).collect();
        prop_assert_eq!(read_all(&log), expected);
    }
}

/// Cuts the unsynced tail of the active segment at every byte and checks recovery keeps
/// exactly the complete batches, then appends after them.
#[test]
fn a_crash_mid_write_keeps_exactly_the_complete_batches_at_every_cut() {
    let setup = || {
        let disk = disk();
        let mut log = open(&disk, LogConfig { segment_bytes: 1 << 20, ..config() });
        append(&mut log, &[1, 2], 1000);
        log.flush().unwrap();
        let synced = log.log_end_offset().0;
        let mut ends = vec![];
        for i in 0..3u64 {
            append(&mut log, &[10 + i, 20 + i, 30 + i], 2000);
            ends.push((log.segments.last().unwrap().size, log.log_end_offset().0));
        }
        (disk, synced, ends)
    };
    let (_, synced, ends) = setup();
    let durable_len = ends[0].0 - batch(&[10, 20, 30], 2000, None).len() as u64;
    for cut in 0..=(ends.last().unwrap().0 - durable_len) {
        let (disk, _, _) = setup();
        disk.crash_with(|path, durable, volatile| {
            if path.extension().is_some_and(|e| e == "log") {
                volatile[..durable.len() + cut as usize].to_vec()
            } else {
                durable.to_vec()
            }
        });
        let kept = durable_len + cut;
        let expected_end = ends.iter().filter(|(size, _)| *size <= kept).map(|&(_, end)| end).max().unwrap_or(synced);
        let mut log = open(&disk, config());
        assert_eq!(log.log_end_offset().0, expected_end, "cut at {cut}");
        let offsets: Vec<i64> = read_all(&log).into_iter().map(|(o, _)| o).collect();
        assert_eq!(offsets, (0..expected_end).collect::<Vec<_>>(), "cut at {cut}");
        let info = append(&mut log, &[99], 3000);
        assert_eq!(info.base_offset.0, expected_end, "appends continue after the recovered end");
    }
}

#[test]
fn a_torn_write_in_the_middle_of_the_tail_truncates_at_the_first_bad_batch() {
    let disk = disk();
    let mut log = open(&disk, LogConfig { segment_bytes: 1 << 20, ..config() });
    append(&mut log, &[1], 1000);
    log.flush().unwrap();
    let first_unsynced = log.segments.last().unwrap().size as usize;
    append(&mut log, &[2, 3], 1000);
    append(&mut log, &[4], 1000);
    drop(log);
    // Some sectors of the unsynced tail made it, some did not: the second batch is torn, the
    // third is intact behind it. Everything from the torn batch on must go.
    disk.crash_with(|path, _, volatile| {
        let mut survived = volatile.to_vec();
        if path.extension().is_some_and(|e| e == "log") {
            survived[first_unsynced + 30..first_unsynced + 40].fill(0);
        }
        survived
    });
    let log = open(&disk, config());
    assert_eq!(read_all(&log), vec![(0, 1)]);
}

fn segment_files(disk: &MemDisk) -> Vec<PathBuf> {
    disk.list_dir(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .map(|n| Path::new(DIR).join(n))
        .collect()
}

#[test]
fn corruption_in_a_sealed_segment_is_refused_at_open_when_scanned_and_at_read_otherwise() {
    let disk = disk();
    let mut log = open(&disk, config());
    for i in 0..20 {
        append(&mut log, &[i, i + 1], 1000);
    }
    log.close().unwrap();
    let sealed = segment_files(&disk)[0].clone();
    disk.corrupt(&sealed, 70, b"\xff\xff").unwrap();
    // Opened from its indexes (it was synced when rolled): the corruption is caught on read.
    let log = open(&disk, config());
    match log.read(Offset(0), 1 << 20, log.log_end_offset(), true) {
        Err(LogError::Corruption { path, .. }) => assert_eq!(path, sealed),
        other => panic!("corrupt batch served: {other:?}"),
    }
    drop(log);
    // Without a recovery point (and no clean shutdown), the sealed segment is scanned: refuse.
    disk.remove_file(&Path::new(DIR).join(RECOVERY_CHECKPOINT_FILE)).unwrap();
    disk.remove_file(&Path::new(DIR).join(CLEAN_SHUTDOWN_FILE)).unwrap_or(());
    match PartitionLog::open(Arc::new(disk.clone()), PathBuf::from(DIR), config(), 0) {
        Err(e @ LogError::Corruption { .. }) => assert!(e.to_string().contains("00000000000000000000.log"), "{e}"),
        other => panic!("opened a corrupt log: {other:?}"),
    }
}

#[test]
fn idempotent_producer_state_survives_clean_restarts_crashes_and_rolls() {
    let disk = disk();
    let cfg = LogConfig { flush_interval_messages: 1, ..config() };
    let mut log = open(&disk, cfg.clone());
    let mut sequence = 0;
    let mut batches = vec![];
    for i in 0..12u64 {
        let b = batch(&[i, i + 100], 1000, Some((42, 3, sequence)));
        sequence += 2;
        log.append(b.clone(), LeaderEpoch(0), 1000).unwrap();
        batches.push(b);
    }
    assert!(log.segments.len() > 2, "the appends rolled segments (and wrote snapshots)");
    let last = batches.last().unwrap().clone();
    let expect_duplicate = |log: &mut PartitionLog| match log.append(last.clone(), LeaderEpoch(0), 1000).unwrap() {
        AppendOutcome::Duplicate(info) => assert_eq!((info.base_offset.0, info.last_offset.0), (22, 23)),
        other => panic!("retry was not recognised: {other:?}"),
    };
    expect_duplicate(&mut log);
    log.close().unwrap();
    let mut log = open(&disk, cfg.clone());
    expect_duplicate(&mut log);
    drop(log);
    disk.crash();
    let mut log = open(&disk, cfg.clone());
    expect_duplicate(&mut log);
    assert!(matches!(
        log.append(batch(&[1], 1000, Some((42, 3, sequence + 1))), LeaderEpoch(0), 1000),
        Err(LogError::OutOfOrderSequence { .. })
    ));
    assert!(matches!(
        log.append(batch(&[1], 1000, Some((42, 2, sequence))), LeaderEpoch(0), 1000),
        Err(LogError::InvalidProducerEpoch { .. })
    ));
    assert_eq!(log.log_end_offset().0, 24, "nothing rejected was stored");
}

/// Found with the simulator's planted retention-wrong-unit: after a restart a leader's HW starts
/// low, and retention deleted segments above it (log start 70, HW 0). Kafka deletes only
/// segments wholly below the HW; so does Gregor now.
#[test]
fn retention_never_deletes_a_segment_above_the_high_watermark() {
    let disk = disk();
    let mut log = open(&disk, LogConfig { retention_ms: Some(60_000), ..config() });
    for i in 0..20 {
        append(&mut log, &[i, i, i], 1_000_000);
    }
    assert!(log.segments.len() > 2);
    assert_eq!(log.apply_retention(10_000_000, Offset(0)).unwrap(), 0, "nothing is committed: nothing goes");
    let second = log.segments[1].base_offset;
    assert_eq!(log.apply_retention(10_000_000, Offset(second)).unwrap(), 1, "only the segment below the HW");
    assert_eq!(log.log_start_offset().0, second);
}

#[test]
fn time_retention_deletes_old_segments_and_reads_below_the_start_are_out_of_range() {
    let disk = disk();
    let mut log = open(&disk, LogConfig { retention_ms: Some(60_000), ..config() });
    for i in 0..10 {
        append(&mut log, &[i, i, i], 1_000_000);
    }
    for i in 0..10 {
        append(&mut log, &[i], 2_000_000);
    }
    let deleted = log.apply_retention(1_000_000 + 100_000, log.log_end_offset()).unwrap();
    assert!(deleted > 0);
    let start = log.log_start_offset().0;
    assert!(start > 0 && start <= 30, "old segments went, new ones stayed: start {start}");
    assert!(matches!(log.read(Offset(0), 100, log.log_end_offset(), true), Err(LogError::OffsetOutOfRange { .. })));
    assert_eq!(log.offset_for_timestamp(0).unwrap().unwrap().0 .0, start);
    // Everything expires: the active segment is rolled and deleted too, the end stays.
    log.apply_retention(10_000_000, log.log_end_offset()).unwrap();
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    assert_eq!(log.log_end_offset().0, 40);
    drop(log);
    let log = open(&disk, config());
    assert_eq!(log.log_start_offset().0, 40, "the start survives a restart");
}

#[test]
fn list_offsets_by_timestamp_finds_the_first_record_at_or_after_it() {
    let disk = disk();
    let mut log = open(&disk, config());
    for i in 0..30 {
        append(&mut log, &[i, i], 10_000 + i as i64 * 10);
    }
    assert_eq!(log.offset_for_timestamp(10_000).unwrap(), Some((Offset(0), 10_000)));
    assert_eq!(log.offset_for_timestamp(10_001).unwrap(), Some((Offset(1), 10_001)));
    assert_eq!(log.offset_for_timestamp(10_002).unwrap(), Some((Offset(2), 10_010)));
    assert_eq!(log.offset_for_timestamp(10_292).unwrap(), None);
    assert_eq!(log.offset_of_max_timestamp().unwrap(), Some((Offset(59), 10_291)));
    log.close().unwrap();
    let log = open(&disk, config());
    assert_eq!(
        log.offset_for_timestamp(10_150).unwrap(),
        Some((Offset(30), 10_150)),
        "after loading indexes from disk"
    );
}

#[test]
fn a_failed_fsync_fails_the_log_for_good() {
    let disk = disk();
    let mut log = open(&disk, LogConfig { flush_interval_messages: 1, ..config() });
    disk.set_fault_hook(Some(Arc::new(FailSync)));
    assert!(matches!(log.append(batch(&[1], 1, None), LeaderEpoch(0), 1), Err(LogError::Storage { .. })));
    disk.set_fault_hook(None);
    assert!(
        matches!(log.append(batch(&[2], 1, None), LeaderEpoch(0), 1), Err(LogError::Storage { .. })),
        "never trusted again"
    );
    assert!(log.read(Offset(0), 100, Offset(1), true).is_err());
}

#[test]
fn after_a_failed_fsync_a_power_loss_keeps_exactly_the_synced_prefix() {
    let disk = disk();
    let cfg = LogConfig { flush_interval_messages: 1, ..config() };
    let mut log = open(&disk, cfg.clone());
    append(&mut log, &[1], 1000);
    append(&mut log, &[2], 1000);
    disk.set_fault_hook(Some(Arc::new(FailSync)));
    assert!(log.append(batch(&[3], 1000, None), LeaderEpoch(0), 1000).is_err(), "the fsync failed");
    disk.set_fault_hook(None);
    assert!(log.append(batch(&[4], 1000, None), LeaderEpoch(0), 1000).is_err(), "nothing appended after it");
    drop(log);
    disk.crash();
    let log = open(&disk, cfg);
    assert_eq!(read_all(&log), vec![(0, 1), (1, 2)], "exactly the synced prefix");
}

/// Found by the simulator (swarm seed 16): recovery ran while reads flipped bits, took a
/// transient checksum failure for a torn tail, and truncated fsynced, acknowledged data.
#[test]
fn transient_read_corruption_during_recovery_never_truncates_synced_data() {
    use crate::storage::mem::{DiskOp, FaultHook};
    use std::sync::atomic::{AtomicU64, Ordering};
    #[derive(Debug, Default)]
    struct FlipEveryThirdRead(AtomicU64);
    impl FaultHook for FlipEveryThirdRead {
        fn check(&self, _: DiskOp, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn corrupt_read(&self, _: &Path, _: u64, buf: &mut [u8]) {
            if self.0.fetch_add(1, Ordering::SeqCst) % 3 == 2 && !buf.is_empty() {
                buf[buf.len() / 2] ^= 0x10;
            }
        }
    }
    let disk = disk();
    let cfg = LogConfig { flush_interval_messages: 1, ..config() };
    let mut log = open(&disk, cfg.clone());
    for i in 0..40 {
        append(&mut log, &[i, i + 1], 1000);
    }
    let expected = read_all(&log);
    drop(log);
    disk.crash();
    disk.set_fault_hook(Some(Arc::new(FlipEveryThirdRead::default())));
    let log = open(&disk, cfg);
    assert_eq!(log.log_end_offset().0, 80, "nothing synced was truncated");
    assert_eq!(read_all(&log), expected, "and nothing corrupt was served");
}

/// Found by the simulator (swarm-single-node seed 25579): five bad reads in a row of one
/// batch made recovery take it for a torn tail and truncate 104 acknowledged, fsynced records.
#[test]
fn a_burst_of_bad_reads_at_one_batch_never_truncates_synced_data() {
    let disk = disk();
    let cfg = LogConfig { flush_interval_messages: 1, ..config() };
    let mut log = open(&disk, cfg.clone());
    for i in 0..4 {
        append(&mut log, &[i], 1000);
    }
    let expected = read_all(&log);
    let second = log.segments[0].find(1).unwrap().unwrap().0;
    drop(log);
    disk.crash();
    let burst = crate::storage::testing::FlipReadsAt::new("00000000000000000000.log", second, 10, false);
    disk.set_fault_hook(Some(Arc::new(burst)));
    let log = open(&disk, cfg);
    assert_eq!(read_all(&log), expected, "nothing synced was truncated");
}

/// A disk that never reads a batch the same way twice gives no verdict: opening fails with a
/// storage error (the broker fails stop) and the file is left as it was.
#[test]
fn reads_that_never_agree_fail_the_open_and_truncate_nothing() {
    let disk = disk();
    let cfg = LogConfig { flush_interval_messages: 1, ..config() };
    let mut log = open(&disk, cfg.clone());
    for i in 0..4 {
        append(&mut log, &[i], 1000);
    }
    let expected = read_all(&log);
    let second = log.segments[0].find(1).unwrap().unwrap().0;
    drop(log);
    disk.crash();
    let never = crate::storage::testing::FlipReadsAt::new("00000000000000000000.log", second, u64::MAX, false);
    disk.set_fault_hook(Some(Arc::new(never)));
    let opened = PartitionLog::open(Arc::new(disk.clone()), PathBuf::from(DIR), cfg.clone(), 0);
    assert!(matches!(opened, Err(LogError::Storage { .. })), "{opened:?}");
    disk.set_fault_hook(None);
    assert_eq!(read_all(&open(&disk, cfg)), expected, "the disk healed: everything is there");
}

/// Found by the simulator (disk-corruption seeds 11 and 14): baseOffset is outside the CRC, so
/// a corrupt one passed the checksum and a record was served at offset 2^57 + 69.
#[test]
fn a_corrupt_base_offset_is_never_served() {
    let disk = disk();
    let mut log = open(&disk, LogConfig { segment_bytes: 1 << 20, ..config() });
    let first = batch(&[1, 2], 1000, None).len() as u64;
    append(&mut log, &[1, 2], 1000);
    append(&mut log, &[3], 1000);
    let segment = segment_files(&disk)[0].clone();
    disk.corrupt(&segment, first, &(1i64 << 57).to_be_bytes()).unwrap();
    match log.read(Offset(0), 1 << 20, log.log_end_offset(), true) {
        Err(LogError::Corruption { path, .. }) => assert_eq!(path, segment),
        Ok(read) => panic!("served {:?}", decode(&read.records)),
        Err(other) => panic!("{other}"),
    }
}

/// Found by the simulator (swarm seed 16, second time): recovery parsed a header from one read
/// and checked the CRC of another; a bit flip in the first (lastOffsetDelta) moved the log end
/// to offset 1048741 and later appends landed there.
#[test]
fn a_corrupt_header_read_during_recovery_cannot_move_the_log_end() {
    use crate::storage::mem::{DiskOp, FaultHook};
    use std::sync::atomic::{AtomicU64, Ordering};
    /// Flips a bit of lastOffsetDelta in every other 61-byte header read.
    #[derive(Debug, Default)]
    struct FlipHeaderReads(AtomicU64);
    impl FaultHook for FlipHeaderReads {
        fn check(&self, _: DiskOp, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn corrupt_read(&self, _: &Path, _: u64, buf: &mut [u8]) {
            if buf.len() == batch::BATCH_HEADER_BYTES && self.0.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                buf[24] ^= 0x10;
            }
        }
    }
    let disk = disk();
    let cfg = LogConfig { flush_interval_messages: 1, segment_bytes: 1 << 20, ..config() };
    let mut log = open(&disk, cfg.clone());
    for i in 0..20 {
        append(&mut log, &[i], 1000);
    }
    drop(log);
    disk.crash();
    disk.set_fault_hook(Some(Arc::new(FlipHeaderReads::default())));
    let mut log = open(&disk, cfg);
    assert_eq!(log.log_end_offset().0, 20);
    disk.set_fault_hook(None);
    assert_eq!(append(&mut log, &[99], 1000).base_offset.0, 20);
}

/// Found by the simulator (swarm-replicated seed 1129): a follower truncating to 552 read a
/// header whose last offset delta had a flipped bit, took that batch (at 525) for the one holding
/// 552, and cut there: below the HW it had shown.
#[test]
fn a_corrupt_header_read_never_moves_a_truncation() {
    use crate::storage::mem::{DiskOp, FaultHook};
    use std::sync::atomic::{AtomicU64, Ordering};
    /// Flips a bit of lastOffsetDelta in the first few 61-byte header reads.
    #[derive(Debug, Default)]
    struct FlipFirstHeaderReads(AtomicU64);
    impl FaultHook for FlipFirstHeaderReads {
        fn check(&self, _: DiskOp, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn corrupt_read(&self, _: &Path, _: u64, buf: &mut [u8]) {
            if buf.len() == batch::BATCH_HEADER_BYTES && self.0.fetch_add(1, Ordering::SeqCst) < 3 {
                buf[25] ^= 0x10;
            }
        }
    }
    let disk = disk();
    let cfg = LogConfig { flush_interval_messages: 1, segment_bytes: 1 << 20, ..config() };
    let mut log = open(&disk, cfg);
    for i in 0..30 {
        append(&mut log, &[i], 1000);
    }
    disk.set_fault_hook(Some(Arc::new(FlipFirstHeaderReads::default())));
    log.truncate_to(Offset(27)).unwrap();
    disk.set_fault_hook(None);
    assert_eq!(log.log_end_offset().0, 27, "cut exactly at the batch holding offset 27");
    assert_eq!(read_all(&log).len(), 27);
}

/// Found by the simulator (swarm seed 269): an fsync failed, the process restarted, recovery
/// served the batch from the page cache, and a later power loss took it away again.
#[test]
fn what_a_restarted_log_serves_survives_the_next_power_loss() {
    let disk = disk();
    let cfg = LogConfig { flush_interval_messages: 1, ..config() };
    let mut log = open(&disk, cfg.clone());
    append(&mut log, &[1], 1000);
    disk.set_fault_hook(Some(Arc::new(FailSync)));
    assert!(log.append(batch(&[2], 1000, None), LeaderEpoch(0), 1000).is_err(), "the fsync failed: not acknowledged");
    disk.set_fault_hook(None);
    drop(log); // process crash: the page cache keeps the batch
    let log = open(&disk, cfg.clone());
    let served = read_all(&log);
    assert_eq!(served, vec![(0, 1), (1, 2)], "recovered from the page cache");
    drop(log);
    disk.crash(); // power loss
    let log = open(&disk, cfg);
    assert_eq!(read_all(&log), served, "what was served is still there");
}

#[test]
fn truncation_forgets_producer_state_and_epochs_after_the_cut() {
    let disk = disk();
    let cfg = LogConfig { flush_interval_messages: 1, ..config() };
    let mut log = open(&disk, cfg.clone());
    log.assign_epoch_start(LeaderEpoch(0)).unwrap();
    log.append(batch(&[1, 2], 1000, Some((9, 0, 0))), LeaderEpoch(0), 1000).unwrap();
    let retried = batch(&[3], 1000, Some((9, 0, 2)));
    log.append(retried.clone(), LeaderEpoch(2), 1000).unwrap();
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), (LeaderEpoch(0), Offset(2)));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(1)), (LeaderEpoch(0), Offset(2)));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(2)), (LeaderEpoch(2), Offset(3)));
    // A follower told that epoch 0 ends at 2 cuts its epoch-2 batch.
    log.truncate_to(Offset(2)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(2));
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(0)));
    // The cut batch is no longer a duplicate: its retry is appended again.
    assert!(matches!(log.append(retried, LeaderEpoch(3), 1000).unwrap(), AppendOutcome::Appended(_)));
    drop(log);
    disk.crash();
    let log = open(&disk, cfg);
    assert_eq!(read_all(&log).len(), 3);
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(2)), (LeaderEpoch(0), Offset(2)), "epochs survive the crash");
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(3)));
}

/// Found by the deep sweep (swarm-replicated seeds 2396, 6669): a replica elected at its log
/// end (98) appended nothing, then followed a leader whose log went on at epoch 1 to 100. Its
/// truncation to 98 cut nothing, but kept "epoch 2 starts at 98": after fetching 98..100 it
/// answered that epoch 1 ends at 98, and a follower cut committed records.
#[test]
fn a_truncation_at_the_log_end_forgets_an_epoch_started_there_without_an_append() {
    let disk = disk();
    let mut log = open(&disk, config());
    log.append(batch(&[1, 2], 1000, None), LeaderEpoch(1), 1000).unwrap();
    log.assign_epoch_start(LeaderEpoch(2)).unwrap(); // elected at offset 2, appends nothing
    log.truncate_to(Offset(2)).unwrap(); // told epoch 1 ends at 2 (or later): nothing to cut
    log.append(batch(&[3, 4], 1000, None), LeaderEpoch(1), 1000).unwrap(); // the leader's epoch-1 tail
    log.append(batch(&[5], 1000, None), LeaderEpoch(3), 1000).unwrap();
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(1)), (LeaderEpoch(1), Offset(4)));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(2)), (LeaderEpoch(1), Offset(4)));
    drop(log);
    let log = open(&disk, config());
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(1)), (LeaderEpoch(1), Offset(4)), "and so after a restart");
}

#[test]
fn truncating_below_the_log_start_restarts_the_log_there() {
    let disk = disk();
    let mut log = open(&disk, LogConfig { retention_bytes: Some(1), ..config() });
    for i in 0..30 {
        append(&mut log, &[i, i], 1000);
    }
    log.apply_retention(1000, log.log_end_offset()).unwrap();
    let start = log.log_start_offset().0;
    assert!(start > 0);
    log.truncate_to(Offset(start - 5)).unwrap();
    assert_eq!((log.log_start_offset().0, log.log_end_offset().0), (start - 5, start - 5));
    assert_eq!(append(&mut log, &[7], 1000).base_offset.0, start - 5);
}

/// Producers set their own timestamps, so they need not grow: a batch between two index
/// entries can be newer than the entry after it. Lookups by time must still find it, before
/// and after a restart that loads the indexes from disk.
#[test]
fn out_of_order_timestamps_between_index_entries_are_still_found() {
    let disk = disk();
    let mut log = open(&disk, LogConfig { segment_bytes: 1 << 20, ..config() });
    // One-record batches are ~80 bytes and the index interval is 100: every other batch is
    // indexed, so the 500 batch sits between the 100 and the 200 entries.
    for (value, timestamp) in [(0, 100), (1, 500), (2, 200), (3, 150), (4, 250)] {
        append(&mut log, &[value], timestamp);
    }
    let check = |log: &PartitionLog| {
        assert_eq!(log.offset_for_timestamp(300).unwrap(), Some((Offset(1), 500)));
        assert_eq!(log.offset_for_timestamp(160).unwrap(), Some((Offset(1), 500)));
        assert_eq!(log.offset_for_timestamp(501).unwrap(), None);
        assert_eq!(log.offset_of_max_timestamp().unwrap(), Some((Offset(1), 500)));
    };
    check(&log);
    log.close().unwrap();
    let log = open(&disk, config());
    check(&log);
}

/// Index files are derived data: missing, odd-sized or pointing at the wrong bytes, they are
/// rebuilt from the segment instead of failing the open or misleading a lookup.
#[test]
fn damaged_index_files_are_rebuilt_not_trusted() {
    let disk = disk();
    let mut log = open(&disk, config());
    for i in 0..30 {
        append(&mut log, &[i, i + 1], 10_000 + i as i64 * 10);
    }
    let expected = read_all(&log);
    let by_time = log.offset_for_timestamp(10_151).unwrap();
    log.close().unwrap();
    let segments = segment_files(&disk);
    assert!(segments.len() >= 4, "enough sealed segments to damage three indexes");
    let index = |i: usize, ext: &str| segments[i].with_extension(ext);
    disk.remove_file(&index(0, "index")).unwrap();
    disk.open(&index(1, "timeindex"), false).unwrap().set_len(5).unwrap();
    let wrong = disk.open(&index(2, "index"), false).unwrap();
    wrong.set_len(0).unwrap();
    wrong.write_all_at(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7], 0).unwrap();
    let log = open(&disk, config());
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.offset_for_timestamp(10_151).unwrap(), by_time);
    assert_eq!(by_time, Some((Offset(31), 10_151)));
}

/// A snapshot at an offset the log no longer reaches would bring back producer state for
/// batches that are gone: truncation deletes it, and a restart replays the log instead.
#[test]
fn producer_snapshots_past_a_truncation_are_deleted_and_never_loaded() {
    let disk = disk();
    let cfg = LogConfig { flush_interval_messages: 1, ..config() };
    let mut log = open(&disk, cfg.clone());
    let batches: Vec<Bytes> = (0..12).map(|i| batch(&[i, i], 1000, Some((5, 0, i as i32 * 2)))).collect();
    for b in &batches {
        log.append(b.clone(), LeaderEpoch(0), 1000).unwrap();
    }
    let snapshots = |disk: &MemDisk| -> Vec<i64> {
        let names = disk.list_dir(Path::new(DIR)).unwrap();
        names.iter().filter_map(|n| n.strip_suffix(".snapshot")).map(|o| o.parse().unwrap()).collect()
    };
    let newest = *snapshots(&disk).last().expect("rolls wrote snapshots");
    let cut = newest - 4;
    log.truncate_to(Offset(cut)).unwrap();
    assert!(snapshots(&disk).iter().all(|&o| o <= cut), "{:?} after a cut at {cut}", snapshots(&disk));
    drop(log);
    disk.crash();
    let mut log = open(&disk, cfg);
    assert_eq!(log.log_end_offset().0, cut);
    let last_kept = &batches[cut as usize / 2 - 1];
    assert!(matches!(log.append(last_kept.clone(), LeaderEpoch(0), 1000).unwrap(), AppendOutcome::Duplicate(_)));
    let first_cut = &batches[cut as usize / 2];
    match log.append(first_cut.clone(), LeaderEpoch(0), 1000).unwrap() {
        AppendOutcome::Appended(info) => assert_eq!(info.base_offset.0, cut),
        other => panic!("a truncated batch was taken for a duplicate: {other:?}"),
    }
}

/// A well-behaved batch is stored byte for byte except the two broker-assigned fields; one
/// whose header understates its newest record gets the true maxTimestamp (and a new CRC), as
/// Kafka's validator does, because the time index trusts the header.
#[test]
fn batches_are_stored_as_sent_unless_their_max_timestamp_lies() {
    let disk = disk();
    let mut log = open(&disk, config());
    let honest = batch(&[1, 2], 5_000, None);
    log.append(honest.clone(), LeaderEpoch(7), 0).unwrap();
    let stored = log.read(Offset(0), 1 << 20, log.log_end_offset(), true).unwrap().records;
    assert_eq!(stored.len(), honest.len());
    assert_eq!(stored[8..12], honest[8..12], "batch length as sent");
    assert_eq!(stored[16..], honest[16..], "everything from magic on as sent");
    assert_eq!(stored[12..16], 7i32.to_be_bytes(), "partition leader epoch stamped");

    let mut liar = batch(&[3, 4], 9_000, None).to_vec();
    liar[35..43].copy_from_slice(&1i64.to_be_bytes());
    let crc = crc32c::crc32c(&liar[21..]);
    liar[17..21].copy_from_slice(&crc.to_be_bytes());
    log.append(Bytes::from(liar), LeaderEpoch(7), 0).unwrap();
    assert_eq!(log.offset_for_timestamp(9_000).unwrap(), Some((Offset(2), 9_000)));
    log.close().unwrap();
    let log = open(&disk, config());
    assert_eq!(log.offset_for_timestamp(9_001).unwrap(), Some((Offset(3), 9_001)));
    assert_eq!(log.offset_of_max_timestamp().unwrap(), Some((Offset(3), 9_001)));
    let stored = log.read(Offset(2), 1 << 20, log.log_end_offset(), true).unwrap().records;
    assert_eq!(batch::parse_header(&stored).unwrap().max_timestamp, 9_001);
    assert!(batch::crc_matches(&stored));
}

#[test]
fn an_unusable_or_missing_epoch_checkpoint_is_rebuilt_from_the_batches_not_lost() {
    let disk = disk();
    let cfg = LogConfig { flush_interval_messages: 1, ..config() };
    let mut log = open(&disk, cfg.clone());
    log.assign_epoch_start(LeaderEpoch(1)).unwrap();
    log.append(batch(&[1, 2], 1000, None), LeaderEpoch(1), 1000).unwrap();
    log.assign_epoch_start(LeaderEpoch(2)).unwrap();
    log.assign_epoch_start(LeaderEpoch(3)).unwrap(); // two elections, no append between
    log.append(batch(&[3], 1000, None), LeaderEpoch(3), 1000).unwrap();
    log.append(batch(&[4], 1000, None), LeaderEpoch(5), 1000).unwrap();
    let answers = |log: &PartitionLog| (1..=5).map(|e| log.end_offset_for_epoch(LeaderEpoch(e))).collect::<Vec<_>>();
    let expected = answers(&log);
    assert_eq!(expected[1], (LeaderEpoch(1), Offset(2)), "epoch 2 left no entry");
    drop(log);
    let checkpoint = Path::new(DIR).join(super::leader_epoch::CHECKPOINT_FILE);
    // The checkpoint as written reloads as it was (the same-offset pair did not make it unreadable).
    assert_eq!(answers(&open(&disk, cfg.clone())), expected);
    for damage in [Some(&b"0\n3\n1 0\n3 banana\n"[..]), None] {
        match damage {
            Some(bytes) => crate::storage::write_atomic(&disk, &checkpoint, bytes).unwrap(),
            None => disk.remove_file(&checkpoint).unwrap(),
        }
        let log = open(&disk, cfg.clone());
        assert_eq!(answers(&log), expected, "rebuilt from the batches after {damage:?}");
    }
}
