//! The partition log: segments of v2 record batches, sparse offset and time indexes, the
//! idempotent-producer state, flush policy, recovery and retention.
//!
//! CONTRACT used by the server (`crate::server`). The storage engine may change its insides
//! freely but keeps these signatures and meanings:
//!
//! - [`PartitionLog::open`] recovers the log from disk (see "Recovery" below) or creates it.
//! - [`PartitionLog::append`] validates one client batch (CRC-32C, sizes, magic 2, record count,
//!   `message.max.bytes`), checks producer sequences, assigns offsets (patching `baseOffset`
//!   and `partitionLeaderEpoch`, which are outside the CRC), writes it, indexes it, applies the
//!   flush policy. Returns the offsets, or the offsets of the original batch for a duplicate.
//!   A rejected batch is never stored.
//! - [`PartitionLog::read`] returns whole batches starting with the one that contains
//!   `fetch_offset`, never past `upper_bound` (exclusive), at most `max_bytes` unless
//!   `min_one_batch` (then at least one batch even if larger: KIP-74).
//! - [`PartitionLog::tick`] runs time-based work: `log.flush.interval.ms`, `log.roll.ms`.
//! - [`PartitionLog::apply_retention`] deletes whole segments past `retention.bytes` / `retention.ms`
//!   (topics whose `cleanup.policy` includes `delete`).
//! - [`PartitionLog::clean`] compacts (`cleanup.policy=compact`): the newest record of each key
//!   stays, tombstones go after `delete.retention.ms`; crash-safe (see `cleaner.rs`).
//! - [`PartitionLog::close`] flushes everything for a clean shutdown.
//!
//! Time is always passed in as `now_ms` (milliseconds since the Unix epoch): the log never reads
//! a clock, so the simulator controls it.

pub mod batch;
mod cleaner;
pub mod leader_epoch;
pub mod producer_state;
mod segment;
pub mod topic_config;

#[cfg(test)]
mod cleaner_tests;
#[cfg(test)]
mod tests;

use crate::storage::{self, Disk};
use crate::types::{ErrorCode, LeaderEpoch, Offset, ProducerEpoch, ProducerId};
use batch::BATCH_HEADER_BYTES;
use bytes::{Bytes, BytesMut};
use leader_epoch::LeaderEpochCache;
use producer_state::{BatchMetadata, ProducerStateManager, SequenceCheck};
use segment::Segment;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Per-log settings, with Kafka's names and defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes` / `log.segment.bytes`: roll when the active segment would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms` / `log.roll.ms`: roll when the active segment's first batch is this old.
    pub segment_ms: i64,
    /// `index.interval.bytes`: bytes of batches between two offset/time index entries.
    pub index_interval_bytes: u64,
    /// `flush.messages` / `log.flush.interval.messages`: fsync after this many unflushed records.
    /// `u64::MAX` (Kafka's default) means never by count.
    pub flush_interval_messages: u64,
    /// `flush.ms` / `log.flush.interval.ms`: fsync when the oldest unflushed write is this old.
    /// `None` (Kafka's default) means never by time.
    pub flush_interval_ms: Option<i64>,
    /// `retention.bytes` / `log.retention.bytes`; `None` = unlimited (Kafka's `-1`).
    pub retention_bytes: Option<u64>,
    /// `retention.ms` / `log.retention.ms`; `None` = unlimited (Kafka's `-1`).
    pub retention_ms: Option<i64>,
    /// `max.message.bytes` / `message.max.bytes`: the largest batch accepted.
    pub max_message_bytes: usize,
    /// `cleanup.policy` / `log.cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms` / `log.cleaner.delete.retention.ms`: how long the cleaner keeps a
    /// tombstone (a keyed record with a null value), counted from the batch's max timestamp.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio` / `log.cleaner.min.cleanable.ratio`: clean once the bytes
    /// written since the last clean are at least this share of the cleanable bytes. In `0..=1`.
    pub min_cleanable_dirty_ratio: f64,
    /// `log.cleaner.dedupe.buffer.size`: the most memory one cleaning pass spends on its map
    /// from key to newest offset (key bytes plus [`cleaner::MAP_ENTRY_OVERHEAD_BYTES`] per key).
    /// A pass whose keys do not fit cleans only the segments whose keys did.
    pub cleaner_dedupe_buffer_bytes: usize,
}

/// `cleanup.policy`: `delete` (retention), `compact` (the cleaner), or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy { delete: true, compact: false };
    pub const COMPACT: CleanupPolicy = CleanupPolicy { delete: false, compact: true };

    /// Kafka's syntax: a comma-separated list of `delete` and `compact`, at least one.
    pub fn parse(value: &str) -> Result<CleanupPolicy, String> {
        let mut policy = CleanupPolicy { delete: false, compact: false };
        for word in value.split(',').map(str::trim) {
            match word {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                _ => return Err(format!("expected `delete`, `compact` or `compact,delete`, got `{value}`")),
            }
        }
        Ok(policy)
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush_interval_messages: u64::MAX,
            flush_interval_ms: None,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            max_message_bytes: 1024 * 1024 + 12,
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            cleaner_dedupe_buffer_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Where an appended (or duplicate) batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// `-1` unless the topic uses LogAppendTime.
    pub log_append_time_ms: i64,
    pub log_start_offset: Offset,
}

/// The result of a successful append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch was written at these offsets.
    Appended(AppendInfo),
    /// An idempotent retry of a batch already in the log (same producer, epoch and sequence
    /// range within the last five batches): nothing was written; these are the original offsets.
    Duplicate(AppendInfo),
}

impl AppendOutcome {
    pub fn info(&self) -> AppendInfo {
        match self {
            AppendOutcome::Appended(info) | AppendOutcome::Duplicate(info) => *info,
        }
    }
}

/// The producer-state entry of a stored batch (its offsets and sequences).
fn batch_metadata(header: &batch::BatchHeader) -> BatchMetadata {
    BatchMetadata {
        first_seq: header.base_sequence,
        last_seq: header.last_sequence(),
        first_offset: header.base_offset,
        last_offset: header.last_offset(),
    }
}

/// Why a log operation failed. Each maps to one Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    #[error("record batch of {size} bytes is larger than max.message.bytes ({max})")]
    MessageTooLarge { size: usize, max: usize },
    #[error("unsupported record batch magic {0}: only v2 (magic 2) batches are accepted")]
    UnsupportedMessageFormat(i8),
    #[error("out of order sequence for producer {producer_id:?}: expected {expected}, got {received}")]
    OutOfOrderSequence { producer_id: ProducerId, expected: i32, received: i32 },
    #[error("producer {producer_id:?} is unknown to this log and sent sequence {received}, not 0")]
    UnknownProducerId { producer_id: ProducerId, received: i32 },
    #[error("producer {producer_id:?} epoch {received:?} is older than the current epoch {current:?}")]
    InvalidProducerEpoch { producer_id: ProducerId, received: ProducerEpoch, current: ProducerEpoch },
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { offset: Offset, log_start_offset: Offset, log_end_offset: Offset },
    /// The disk failed; the log directory must be taken offline.
    #[error("storage error in {path}: {source}")]
    Storage { path: PathBuf, source: std::io::Error },
    /// Found on open: corruption that is not a torn tail of the active segment. The broker must
    /// refuse to start rather than serve or overwrite it.
    #[error("log corruption in {path} at byte {position}: {reason}")]
    Corruption { path: PathBuf, position: u64, reason: String },
}

impl LogError {
    /// The Kafka error code a client gets for this error.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            LogError::CorruptMessage(_) => ErrorCode::CORRUPT_MESSAGE,
            LogError::MessageTooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
            LogError::UnsupportedMessageFormat(_) => ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            LogError::OutOfOrderSequence { .. } => ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
            LogError::InvalidProducerEpoch { .. } => ErrorCode::INVALID_PRODUCER_EPOCH,
            LogError::UnknownProducerId { .. } => ErrorCode::UNKNOWN_PRODUCER_ID,
            LogError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
            LogError::InvalidRecord(_) => ErrorCode::INVALID_RECORD,
            LogError::Storage { .. } | LogError::Corruption { .. } => ErrorCode::KAFKA_STORAGE_ERROR,
        }
    }
}

/// What [`PartitionLog::read`] returns.
#[derive(Clone, Debug, Default)]
pub struct ReadResult {
    /// Whole v2 batches, concatenated, exactly as stored.
    pub records: Bytes,
}

/// Files in a partition directory besides segments, indexes and snapshots.
const RECOVERY_CHECKPOINT_FILE: &str = "recovery-point.checkpoint";
const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
/// Producer-state snapshots kept (the newest ones).
const SNAPSHOTS_KEPT: usize = 2;

/// One partition's log. See the module docs for the contract.
///
/// Call order: [`PartitionLog::open`] once; then any of `append`, `read`, `tick`, `flush`,
/// `apply_retention` and the offset queries; finally `close` (clean shutdown) or drop (a crash
/// as far as the disk is concerned). After a storage error every operation fails: a disk that
/// failed a write or an fsync is never trusted again.
#[derive(Debug)]
pub struct PartitionLog {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    config: LogConfig,
    /// Oldest first; the last is the active segment. Invariants: never empty; each segment's
    /// `next_offset` is the next one's `base_offset`; only the active segment grows.
    segments: Vec<Segment>,
    producers: ProducerStateManager,
    /// Every offset below this is fsynced. Invariant: `<= log_end_offset`.
    recovery_point: i64,
    /// Records appended since the last fsync, and when the oldest of them was appended.
    unflushed_messages: u64,
    first_unflushed_ms: Option<i64>,
    /// Set by the first storage error; every later operation fails with it.
    failed: Option<String>,
    /// First offset of each leader epoch. Invariant: no entry starts at or past the log end.
    epochs: LeaderEpochCache,
    /// The cleaner has compacted everything below this offset (as far as it knew the keys);
    /// what lies above was written since. Not persisted: after a restart the whole log counts
    /// as dirty and the first pass cleans it again (idempotent, only slower).
    first_dirty_offset: i64,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Storage { path: path.to_path_buf(), source }
}

impl PartitionLog {
    /// Opens (recovering) or creates the log in `dir`.
    ///
    /// Recovery: without a clean-shutdown marker, sealed segments (fsynced when they were
    /// rolled) are loaded from their indexes; the active segment is scanned batch by batch and
    /// truncated at the first invalid batch (a torn tail). An invalid batch in any sealed
    /// segment that has to be scanned is corruption: `open` fails with [`LogError::Corruption`].
    pub fn open(disk: Arc<dyn Disk>, dir: PathBuf, config: LogConfig, now_ms: i64) -> Result<Self, LogError> {
        let _ = now_ms;
        if !disk.exists(&dir) {
            disk.create_dir_all(&dir).map_err(io_error(&dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                disk.sync_dir(parent).map_err(io_error(parent))?;
            }
        }
        let names = disk.list_dir(&dir).map_err(io_error(&dir))?;
        for stray in
            names.iter().filter(|n| n.ends_with(".tmp") || n.ends_with(".deleted") || cleaner::is_unfinished(n))
        {
            disk.remove_file(&dir.join(stray)).map_err(io_error(&dir))?;
        }
        // A clean that reached its commit point (the swap file) is finished before anything else.
        let names = match cleaner::complete_swaps(&*disk, &dir, &names, config.index_interval_bytes)? {
            true => disk.list_dir(&dir).map_err(io_error(&dir))?,
            false => names,
        };
        let clean = names.iter().any(|n| n == CLEAN_SHUTDOWN_FILE);
        let recovery_point = if clean { i64::MAX } else { read_recovery_point(&*disk, &dir) };
        let mut bases: Vec<i64> =
            names.iter().filter_map(|n| n.strip_suffix(".log")).filter_map(|b| b.parse().ok()).collect();
        bases.sort_unstable();
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            let sealed_and_synced = !is_active && bases[i + 1] <= recovery_point;
            let mut segment = Segment::open(&*disk, dir.join(segment::file_name(base, "log")), base)?;
            if clean || sealed_and_synced {
                segment.load(&*disk, config.index_interval_bytes)?;
            } else {
                segment.recover(config.index_interval_bytes, is_active)?;
            }
            if let Some(previous) = segments.last() {
                if previous.next_offset != base {
                    return Err(LogError::Corruption {
                        path: segment.path.clone(),
                        position: 0,
                        reason: format!(
                            "segment starts at offset {base} but the previous one ends at {}",
                            previous.next_offset
                        ),
                    });
                }
            }
            segments.push(segment);
        }
        if segments.is_empty() {
            segments.push(Segment::create(&*disk, &dir, 0)?);
            disk.sync_dir(&dir).map_err(io_error(&dir))?;
        }
        let log_end = segments.last().expect("never empty").next_offset;
        let mut log = PartitionLog {
            disk,
            dir,
            config,
            segments,
            producers: ProducerStateManager::default(),
            recovery_point: recovery_point.min(log_end),
            unflushed_messages: 0,
            first_unflushed_ms: None,
            failed: None,
            epochs: LeaderEpochCache::default(),
            first_dirty_offset: 0,
        };
        let rebuild_epochs = match LeaderEpochCache::load(&*log.disk, &log.dir) {
            Ok(Some(epochs)) => {
                log.epochs = epochs;
                false
            }
            // A log that never had a leader has no checkpoint; rebuilding finds nothing.
            Ok(None) => true,
            Err(e) => {
                tracing::error!(error = %e, "leader epoch checkpoint cannot be used: rebuilding the epoch history from the log's batches");
                true
            }
        };
        log.epochs.truncate_from_end(log_end);
        if rebuild_epochs {
            log.rebuild_epochs()?;
        }
        log.recover_producer_state()?;
        if !clean && crate::planted::active(crate::planted::Bug::RecoveryDropsSealedSegments) {
            // The sloppy cleanup: files and segments go, nothing else is told.
            while log.segments.len() > 1 {
                log.segments.remove(0).delete_files(&*log.disk)?;
            }
        }
        // Every checkpoint write is atomic; rewrite it once to hold exactly the recovered state.
        log.epochs.write(&*log.disk, &log.dir)?;
        if !clean {
            // What recovery found may exist only in the page cache (say an fsync failed before
            // a process restart). Make it durable before serving it: a record a consumer can
            // read must not disappear in a later power loss (simulator, swarm seed 269).
            log.segments.last().expect("never empty").sync()?;
            log.recovery_point = log_end;
        }
        if clean {
            // From now on the files change again: a crash must trigger recovery.
            log.disk.remove_file(&log.dir.join(CLEAN_SHUTDOWN_FILE)).map_err(io_error(&log.dir))?;
            log.disk.sync_dir(&log.dir).map_err(io_error(&log.dir))?;
        }
        log.check_invariants();
        Ok(log)
    }

    fn check_invariants(&self) {
        assert!(!self.segments.is_empty());
        for pair in self.segments.windows(2) {
            assert_eq!(pair[0].next_offset, pair[1].base_offset, "segments are contiguous");
        }
        assert!(self.recovery_point <= self.log_end_offset().0);
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the config (CreateTopics per-topic overrides, AlterConfigs later).
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn check_healthy(&self) -> Result<(), LogError> {
        match &self.failed {
            Some(reason) => Err(LogError::Storage {
                path: self.dir.clone(),
                source: std::io::Error::other(format!("an earlier storage error: {reason}")),
            }),
            None => Ok(()),
        }
    }

    /// Runs a mutating step; a storage error marks the log failed for good.
    fn guard<T>(&mut self, step: impl FnOnce(&mut Self) -> Result<T, LogError>) -> Result<T, LogError> {
        self.check_healthy()?;
        let result = step(self);
        if let Err(e @ (LogError::Storage { .. } | LogError::Corruption { .. })) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    /// Appends one client batch (see module docs). `leader_epoch` is stamped into the batch.
    pub fn append(&mut self, batch: Bytes, leader_epoch: LeaderEpoch, now_ms: i64) -> Result<AppendOutcome, LogError> {
        self.guard(|log| log.append_inner(batch, leader_epoch, now_ms))
    }

    fn append_inner(
        &mut self,
        batch: Bytes,
        leader_epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<AppendOutcome, LogError> {
        let validated = batch::validate_batch(&batch, self.config.max_message_bytes)?;
        let header = validated.header;
        if header.is_transactional() {
            return Err(LogError::InvalidRecord("transactional batches are not supported yet".to_string()));
        }
        if self.config.cleanup_policy.compact && validated.has_null_key {
            return Err(LogError::InvalidRecord("a compacted topic cannot accept a record without a key".to_string()));
        }
        if header.producer_id >= 0 {
            if header.base_sequence < 0 {
                return Err(LogError::InvalidRecord(format!(
                    "producer {} sent a batch without a sequence number",
                    header.producer_id
                )));
            }
            let check = self.producers.check(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.last_sequence(),
            )?;
            let dedup = !crate::planted::active(crate::planted::Bug::NoDedup);
            if let (SequenceCheck::Duplicate(original), true) = (check, dedup) {
                return Ok(AppendOutcome::Duplicate(AppendInfo {
                    base_offset: Offset(original.first_offset),
                    last_offset: Offset(original.last_offset),
                    log_append_time_ms: -1,
                    log_start_offset: self.log_start_offset(),
                }));
            }
        }
        self.maybe_roll(header.size, now_ms)?;
        let base_offset = self.log_end_offset().0;
        let mut bytes = BytesMut::from(&batch[..]);
        batch::normalize_timestamps(&mut bytes, &validated);
        batch::assign_offsets(&mut bytes, base_offset, leader_epoch.0);
        let stored = batch::parse_header(&bytes)?;
        assert_eq!((stored.base_offset, stored.max_timestamp), (base_offset, validated.max_timestamp));
        // A new epoch is recorded (durably) before its first batch is written.
        if self.epochs.assign(leader_epoch.0, base_offset) {
            self.epochs.write(&*self.disk, &self.dir)?;
        }
        let interval = self.config.index_interval_bytes;
        self.segments.last_mut().expect("never empty").append(&bytes, &stored, interval, now_ms)?;
        if header.producer_id >= 0 {
            // `stored` is the batch as written: the client's sequences at its assigned offsets.
            self.producers.update(header.producer_id, header.producer_epoch, batch_metadata(&stored));
        }
        self.unflushed_messages += header.record_count as u64;
        self.first_unflushed_ms.get_or_insert(now_ms);
        let flush_due = self.unflushed_messages >= self.config.flush_interval_messages;
        if flush_due && !crate::planted::active(crate::planted::Bug::AckBeforeFsync) {
            self.flush_inner()?;
        }
        Ok(AppendOutcome::Appended(AppendInfo {
            base_offset: Offset(base_offset),
            last_offset: Offset(stored.last_offset()),
            log_append_time_ms: -1,
            log_start_offset: self.log_start_offset(),
        }))
    }

    /// A follower appends what its leader sent: whole batches, back to back, with offsets and
    /// leader epochs already assigned. Each batch is validated as a whole and must start at the
    /// log end; producer state and the leader-epoch cache follow the batches (no sequence
    /// checks: the leader made them). Returns the number of batches appended. A batch that
    /// fails validation stops the append before it (nothing of it is stored).
    /// `leader_epoch` is the epoch of the leader the batches came from: a batch stamped with a
    /// newer (or negative) epoch is refused, so a bad peer cannot plant a future epoch in our
    /// epoch cache.
    pub fn append_replicated(
        &mut self,
        batches: &[u8],
        now_ms: i64,
        leader_epoch: LeaderEpoch,
    ) -> Result<usize, LogError> {
        self.guard(|log| {
            let mut position = 0;
            let mut appended = 0;
            while batches.len() - position >= BATCH_HEADER_BYTES {
                let header = batch::parse_header(&batches[position..])?;
                if header.size > batches.len() - position {
                    break; // a partial batch at the end of a fetch response (KIP-74 allows it)
                }
                let sent = &batches[position..position + header.size];
                // The leader's cleaner may have compacted it: gaps in offset deltas, no records.
                let mut header = batch::validate_stored_batch(sent)?;
                let log_end = log.log_end_offset().0;
                let suffix;
                let mut bytes = sent;
                if header.record_count == 0 && header.base_offset < log_end && log_end <= header.last_offset() {
                    // An empty batch the leader's cleaner made of several removed batches, our
                    // log end among them: it says no records remain in its offsets, so its part
                    // past our log end is an empty batch of our own (batches stay contiguous).
                    let delta = i32::try_from(header.last_offset() - log_end).expect("within one batch");
                    suffix = batch::empty_batch(log_end, delta, header.partition_leader_epoch, header.max_timestamp);
                    header = batch::parse_header(&suffix)?;
                    bytes = &suffix;
                }
                if header.base_offset != log_end {
                    return Err(LogError::InvalidRecord(format!(
                        "replicated batch at offset {} but the log ends at {log_end}",
                        header.base_offset
                    )));
                }
                if !(0..=leader_epoch.0).contains(&header.partition_leader_epoch) {
                    return Err(LogError::InvalidRecord(format!(
                        "replicated batch stamped with leader epoch {} from a leader at epoch {}",
                        header.partition_leader_epoch, leader_epoch.0
                    )));
                }
                log.maybe_roll(header.size, now_ms)?;
                if log.epochs.assign(header.partition_leader_epoch, header.base_offset) {
                    log.epochs.write(&*log.disk, &log.dir)?;
                }
                let interval = log.config.index_interval_bytes;
                log.segments.last_mut().expect("never empty").append(bytes, &header, interval, now_ms)?;
                if header.producer_id >= 0 {
                    log.producers.update(header.producer_id, header.producer_epoch, batch_metadata(&header));
                }
                log.unflushed_messages += header.record_count as u64;
                log.first_unflushed_ms.get_or_insert(now_ms);
                if log.unflushed_messages >= log.config.flush_interval_messages {
                    log.flush_inner()?;
                }
                position += sent.len();
                appended += 1;
            }
            Ok(appended)
        })
    }

    fn maybe_roll(&mut self, incoming_bytes: usize, now_ms: i64) -> Result<(), LogError> {
        // Index entries hold 32-bit positions and relative offsets.
        const SEGMENT_BYTES_HARD_MAX: u64 = i32::MAX as u64;
        let active = self.segments.last().expect("never empty");
        if active.is_empty() {
            return Ok(());
        }
        let limit = self.config.segment_bytes.min(SEGMENT_BYTES_HARD_MAX);
        let full = active.size + incoming_bytes as u64 > limit;
        let old = active.first_append_ms.is_some_and(|t| now_ms - t >= self.config.segment_ms);
        let offsets_exhausted = active.next_offset - active.base_offset >= i64::from(u32::MAX) - i64::from(i32::MAX);
        if full || old || offsets_exhausted {
            self.roll()?;
        }
        Ok(())
    }

    /// Seals the active segment (fsync data and indexes, snapshot producer state, advance the
    /// recovery point) and starts a new one at the log end.
    fn roll(&mut self) -> Result<(), LogError> {
        let new_base = self.log_end_offset().0;
        let active = self.segments.last().expect("never empty");
        active.sync()?;
        active.write_indexes(&*self.disk)?;
        self.write_producer_snapshot(new_base)?;
        let segment = Segment::create(&*self.disk, &self.dir, new_base)?;
        self.disk.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        self.segments.push(segment);
        self.recovery_point = new_base;
        self.unflushed_messages = 0;
        self.first_unflushed_ms = None;
        write_recovery_point(&*self.disk, &self.dir, new_base)?;
        tracing::debug!(dir = %self.dir.display(), new_base, "rolled segment");
        Ok(())
    }

    pub fn read(
        &self,
        fetch_offset: Offset,
        max_bytes: usize,
        upper_bound: Offset,
        min_one_batch: bool,
    ) -> Result<ReadResult, LogError> {
        self.check_healthy()?;
        let (log_start, log_end) = (self.log_start_offset(), self.log_end_offset());
        if fetch_offset < log_start || fetch_offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start_offset: log_start,
                log_end_offset: log_end,
            });
        }
        let upper = upper_bound.min(log_end).0;
        let mut out = BytesMut::new();
        let first = self.segments.partition_point(|s| s.base_offset <= fetch_offset.0).saturating_sub(1);
        let mut offset = fetch_offset.0;
        'segments: for segment in &self.segments[first..] {
            let Some((mut position, first_header)) = segment.find(offset)? else { continue };
            let mut expected = first_header.base_offset;
            // Every batch is checked as a whole before it is served: a corrupt record never is.
            while let Some((header, bytes)) = segment.batch_at(position, expected)? {
                let fits = out.len() + header.size <= max_bytes || (min_one_batch && out.is_empty());
                if header.last_offset() >= upper || !fits {
                    break 'segments;
                }
                out.extend_from_slice(&bytes);
                position += header.size as u64;
                expected = header.last_offset() + 1;
            }
            offset = expected;
        }
        Ok(ReadResult { records: out.freeze() })
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        Offset(self.segments[0].base_offset)
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> Offset {
        Offset(self.segments.last().expect("never empty").next_offset)
    }

    /// ListOffsets by timestamp: the first offset whose record timestamp is `>= timestamp_ms`,
    /// with that record's timestamp; `None` if no record is that new.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(Offset, i64)>, LogError> {
        self.check_healthy()?;
        for segment in &self.segments {
            if segment.max_timestamp.is_none_or(|(t, _)| t < timestamp_ms) {
                continue;
            }
            let Some((position, header)) = segment.find_by_timestamp(timestamp_ms)? else { continue };
            let (_, bytes) = segment.batch_at(position, header.base_offset)?.expect("found just now");
            for (delta, t) in batch::record_timestamps(&bytes)? {
                if t >= timestamp_ms {
                    return Ok(Some((Offset(header.base_offset + i64::from(delta)), t)));
                }
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (-3): the offset and timestamp of the record with the largest
    /// timestamp (the first such record); `None` for an empty log.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<(Offset, i64)>, LogError> {
        self.check_healthy()?;
        let mut best: Option<(i64, &Segment, i64)> = None;
        for segment in &self.segments {
            if let Some((t, batch_offset)) = segment.max_timestamp {
                if best.is_none_or(|(b, _, _)| t > b) {
                    best = Some((t, segment, batch_offset));
                }
            }
        }
        let Some((timestamp, segment, batch_offset)) = best else { return Ok(None) };
        let Some((position, header)) = segment.find(batch_offset)? else { return Ok(None) };
        let (_, bytes) = segment.batch_at(position, header.base_offset)?.expect("found just now");
        let delta = batch::record_timestamps(&bytes)?.into_iter().find(|&(_, t)| t == timestamp).map_or(0, |(d, _)| d);
        Ok(Some((Offset(header.base_offset + i64::from(delta)), timestamp)))
    }

    /// The latest leader epoch this log has seen, if any.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.latest_epoch().map(LeaderEpoch)
    }

    /// Becoming leader at `epoch`: the epoch starts at the log end (Kafka does this on every
    /// leadership change, so OffsetForLeaderEpoch can answer before the first append).
    pub fn assign_epoch_start(&mut self, epoch: LeaderEpoch) -> Result<(), LogError> {
        self.guard(|log| {
            let log_end = log.log_end_offset().0;
            if log.epochs.assign(epoch.0, log_end) {
                log.epochs.write(&*log.disk, &log.dir)?;
            }
            Ok(())
        })
    }

    /// OffsetForLeaderEpoch (KIP-279): the largest epoch `<= requested` and where it ends.
    pub fn end_offset_for_epoch(&self, requested: LeaderEpoch) -> (LeaderEpoch, Offset) {
        let (epoch, offset) = self.epochs.end_offset_for(requested.0, self.log_end_offset().0);
        (LeaderEpoch(epoch), Offset(offset))
    }

    /// Follower truncation (KIP-101): removes every batch at or after the one holding
    /// `offset`, so the log ends at a batch boundary `<= offset`; producer state and leader
    /// epochs follow, and the cut is fsynced (a crash must not bring the removed tail back).
    /// Truncating below the log start empties the log and restarts it at `offset`.
    pub fn truncate_to(&mut self, offset: Offset) -> Result<(), LogError> {
        self.guard(|log| log.truncate_inner(offset.0))
    }

    fn truncate_inner(&mut self, target: i64) -> Result<(), LogError> {
        let log_end = self.log_end_offset().0;
        if target >= log_end {
            // Nothing to cut, but an epoch this replica started as leader at its log end
            // without appending is not the history it now follows: forget it (Kafka's
            // `truncateTo` does the same), or it would answer OffsetForLeaderEpoch with that
            // start as the end of the epoch before, and cut a follower below its HW
            // (swarm-replicated seeds 2396, 6669).
            if self.epochs.truncate_from_end(log_end) {
                self.epochs.write(&*self.disk, &self.dir)?;
            }
            return Ok(());
        }
        let interval = self.config.index_interval_bytes;
        if target < self.log_start_offset().0 {
            for segment in std::mem::take(&mut self.segments) {
                segment.delete_files(&*self.disk)?;
            }
            self.segments.push(Segment::create(&*self.disk, &self.dir, target)?);
        } else {
            while self.segments.len() > 1 && self.segments.last().expect("never empty").base_offset >= target {
                let segment = self.segments.pop().expect("checked");
                segment.delete_files(&*self.disk)?;
            }
            let active = self.segments.last_mut().expect("never empty");
            if let Some((position, _)) = active.find_checked(target)? {
                active.truncate_at(position, interval)?;
            }
        }
        self.disk.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        let log_end = self.log_end_offset().0;
        self.first_dirty_offset = self.first_dirty_offset.min(log_end);
        self.producers.truncate_from(log_end);
        self.epochs.truncate_from_end(log_end);
        self.epochs.write(&*self.disk, &self.dir)?;
        self.recovery_point = self.recovery_point.min(log_end);
        self.unflushed_messages = 0;
        self.first_unflushed_ms = None;
        for offset in self.snapshot_offsets()? {
            if offset > log_end {
                let path = self.dir.join(segment::file_name(offset, "snapshot"));
                self.disk.remove_file(&path).map_err(io_error(&path))?;
            }
        }
        self.check_invariants();
        tracing::info!(dir = %self.dir.display(), log_end, "truncated");
        Ok(())
    }

    /// Empties the log and restarts it at `offset` (a follower whose log end is below its
    /// leader's log start: what it holds is not on the leader any more).
    pub fn restart_at(&mut self, offset: Offset) -> Result<(), LogError> {
        self.guard(|log| {
            for segment in std::mem::take(&mut log.segments) {
                segment.delete_files(&*log.disk)?;
            }
            log.segments.push(Segment::create(&*log.disk, &log.dir, offset.0)?);
            for snapshot in log.snapshot_offsets()? {
                let path = log.dir.join(segment::file_name(snapshot, "snapshot"));
                log.disk.remove_file(&path).map_err(io_error(&path))?;
            }
            log.disk.sync_dir(&log.dir).map_err(io_error(&log.dir))?;
            log.producers.remove_before(i64::MAX);
            log.epochs.truncate_from_end(i64::MIN);
            log.epochs.write(&*log.disk, &log.dir)?;
            log.recovery_point = offset.0;
            log.first_dirty_offset = offset.0;
            write_recovery_point(&*log.disk, &log.dir, offset.0)?;
            log.unflushed_messages = 0;
            log.first_unflushed_ms = None;
            log.check_invariants();
            tracing::info!(dir = %log.dir.display(), start = offset.0, "log restarted empty");
            Ok(())
        })
    }

    /// Time-based work: flush by `flush.ms`, roll by `segment.ms`.
    pub fn tick(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.guard(|log| {
            let flush_due = match (log.config.flush_interval_ms, log.first_unflushed_ms) {
                (Some(interval), Some(first)) => now_ms - first >= interval,
                _ => false,
            };
            if flush_due {
                log.flush_inner()?;
            }
            let active = log.segments.last().expect("never empty");
            if !active.is_empty() && active.first_append_ms.is_some_and(|t| now_ms - t >= log.config.segment_ms) {
                log.roll()?;
            }
            Ok(())
        })
    }

    /// fsyncs every unflushed byte. Afterwards everything appended so far survives a crash.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.guard(|log| log.flush_inner())
    }

    fn flush_inner(&mut self) -> Result<(), LogError> {
        let log_end = self.log_end_offset().0;
        if self.recovery_point < log_end {
            // Sealed segments were synced when rolled: only the active one can be dirty.
            self.segments.last().expect("never empty").sync()?;
            self.recovery_point = log_end;
        }
        self.unflushed_messages = 0;
        self.first_unflushed_ms = None;
        Ok(())
    }

    /// Deletes whole segments past retention; returns how many were deleted. Only segments
    /// wholly below `high_watermark` may go (Kafka's rule too): a record not yet committed is
    /// never deleted, and the log start never passes the high watermark.
    pub fn apply_retention(&mut self, now_ms: i64, high_watermark: Offset) -> Result<usize, LogError> {
        self.guard(|log| {
            let mut deleted = 0;
            if !log.config.cleanup_policy.delete {
                return Ok(0); // a compacted topic keeps every key's newest record, however old
            }
            let mut retention_ms = log.config.retention_ms;
            if crate::planted::active(crate::planted::Bug::RetentionWrongUnit) {
                retention_ms = retention_ms.map(|ms| ms / 60_000);
            }
            if let Some(retention_ms) = retention_ms {
                while log.segments[0].max_timestamp.is_some_and(|(t, _)| now_ms - t > retention_ms)
                    && log.oldest_segment_committed(high_watermark)
                {
                    if log.segments.len() == 1 {
                        log.roll()?; // Kafka rolls an expired active segment so it can go too.
                    }
                    log.delete_oldest_segment()?;
                    deleted += 1;
                }
            }
            if let Some(retention_bytes) = log.config.retention_bytes {
                let total: u64 = log.segments.iter().map(|s| s.size).sum();
                let mut excess = total.saturating_sub(retention_bytes);
                while log.segments.len() > 1
                    && excess >= log.segments[0].size
                    && !log.segments[0].is_empty()
                    && log.oldest_segment_committed(high_watermark)
                {
                    excess -= log.segments[0].size;
                    log.delete_oldest_segment()?;
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
    }

    /// Whether every record of the oldest segment is below `high_watermark`.
    fn oldest_segment_committed(&self, high_watermark: Offset) -> bool {
        let next = self.segments.get(1).map_or(self.log_end_offset().0, |s| s.base_offset);
        next <= high_watermark.0
    }

    fn delete_oldest_segment(&mut self) -> Result<(), LogError> {
        assert!(self.segments.len() > 1, "the active segment is never deleted");
        let segment = self.segments.remove(0);
        segment.delete_files(&*self.disk)?;
        self.disk.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        self.producers.remove_before(self.log_start_offset().0);
        if self.epochs.truncate_from_start(self.log_start_offset().0) {
            self.epochs.write(&*self.disk, &self.dir)?;
        }
        tracing::info!(dir = %self.dir.display(), base_offset = segment.base_offset, log_start_offset = self.log_start_offset().0, "deleted segment past retention");
        Ok(())
    }

    /// Clean shutdown: flush and mark the log cleanly closed.
    pub fn close(&mut self) -> Result<(), LogError> {
        self.guard(|log| {
            log.flush_inner()?;
            let log_end = log.log_end_offset().0;
            log.segments.last().expect("never empty").write_indexes(&*log.disk)?;
            log.write_producer_snapshot(log_end)?;
            write_recovery_point(&*log.disk, &log.dir, log_end)?;
            let marker = log.dir.join(CLEAN_SHUTDOWN_FILE);
            log.disk.open(&marker, true).and_then(|f| f.sync()).map_err(io_error(&marker))?;
            log.disk.sync_dir(&log.dir).map_err(io_error(&log.dir))
        })
    }

    /// Removes the whole log directory (DeleteTopics).
    pub fn delete(self) -> Result<(), LogError> {
        self.disk.remove_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        if let Some(parent) = self.dir.parent() {
            self.disk.sync_dir(parent).map_err(io_error(parent))?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ producer-state snapshots

    fn snapshot_offsets(&self) -> Result<Vec<i64>, LogError> {
        let names = self.disk.list_dir(&self.dir).map_err(io_error(&self.dir))?;
        let mut offsets: Vec<i64> =
            names.iter().filter_map(|n| n.strip_suffix(".snapshot")).filter_map(|o| o.parse().ok()).collect();
        offsets.sort_unstable();
        Ok(offsets)
    }

    /// Writes the producer state as of `offset` and keeps only the newest snapshots.
    fn write_producer_snapshot(&self, offset: i64) -> Result<(), LogError> {
        let path = self.dir.join(segment::file_name(offset, "snapshot"));
        let json = serde_json::to_vec(&self.producers).expect("producer state serializes");
        let mut content = crc32c::crc32c(&json).to_be_bytes().to_vec();
        content.extend_from_slice(&json);
        storage::write_atomic(&*self.disk, &path, &content).map_err(io_error(&path))?;
        let offsets = self.snapshot_offsets()?;
        for old in offsets.iter().rev().skip(SNAPSHOTS_KEPT) {
            let old_path = self.dir.join(segment::file_name(*old, "snapshot"));
            self.disk.remove_file(&old_path).map_err(io_error(&old_path))?;
        }
        Ok(())
    }

    /// Loads the newest valid snapshot at or below the log end and replays the batches after it.
    fn recover_producer_state(&mut self) -> Result<(), LogError> {
        let log_end = self.log_end_offset().0;
        let mut from = self.log_start_offset().0;
        for offset in self.snapshot_offsets()?.into_iter().rev() {
            let path = self.dir.join(segment::file_name(offset, "snapshot"));
            if offset > log_end {
                self.disk.remove_file(&path).map_err(io_error(&path))?;
                continue;
            }
            match read_snapshot(&*self.disk, &path) {
                Ok(state) if offset >= from => {
                    self.producers = state;
                    from = offset;
                    if crate::planted::active(crate::planted::Bug::ProducerSnapshotTailSkipped) {
                        from = log_end;
                    }
                    break;
                }
                Ok(_) => break, // older than the log start: replaying the log is complete
                // What the snapshot would have said is rebuilt from the batches before it.
                Err(reason) => {
                    tracing::warn!(path = %path.display(), reason, "ignoring an unusable producer-state snapshot: replaying the log instead")
                }
            }
        }
        self.producers.remove_before(self.log_start_offset().0);
        self.replay_producer_batches(from)?;
        if crate::planted::active(crate::planted::Bug::ProducerStateNotRecovered) {
            self.producers = ProducerStateManager::default();
        }
        Ok(())
    }

    /// The epoch history from the epoch stamped in every batch, from the log start: the first
    /// offset of each epoch (what the checkpoint would hold, less epochs begun with no append).
    fn rebuild_epochs(&mut self) -> Result<(), LogError> {
        self.epochs = LeaderEpochCache::default();
        for segment in &self.segments {
            let Some((mut position, first)) = segment.find(segment.base_offset)? else { continue };
            let mut expected = first.base_offset;
            while let Some((header, _)) = segment.batch_at(position, expected)? {
                self.epochs.assign(header.partition_leader_epoch, header.base_offset);
                position += header.size as u64;
                expected = header.last_offset() + 1;
            }
        }
        Ok(())
    }

    fn replay_producer_batches(&mut self, from: i64) -> Result<(), LogError> {
        let log_end = self.log_end_offset().0;
        for segment in &self.segments {
            if segment.next_offset <= from {
                continue;
            }
            let Some((mut position, first)) = segment.find(from)? else { continue };
            let mut expected = first.base_offset;
            // Checked batches only: replay never trusts a bad read.
            while let Some((header, _)) = segment.batch_at(position, expected)? {
                // Planted (simulator only): stop short of the last batch of the log.
                let skipped = crate::planted::active(crate::planted::Bug::ProducerReplayStopsShort)
                    && header.last_offset() + 1 >= log_end;
                if header.producer_id >= 0 && header.base_offset >= from && !skipped {
                    self.producers.update(header.producer_id, header.producer_epoch, batch_metadata(&header));
                }
                if header.base_offset >= from {
                    self.epochs.assign(header.partition_leader_epoch, header.base_offset);
                }
                position += header.size as u64;
                expected = header.last_offset() + 1;
            }
        }
        Ok(())
    }
}

/// A producer-state snapshot, or why it cannot be used (the caller replays the log instead).
fn read_snapshot(disk: &dyn Disk, path: &Path) -> Result<ProducerStateManager, String> {
    let content = storage::read_all(disk, path).map_err(|e| format!("read failed: {e}"))?;
    let (crc, json) = content.split_at_checked(4).ok_or("shorter than its checksum")?;
    if crc32c::crc32c(json).to_be_bytes() != crc {
        return Err("checksum mismatch".to_string());
    }
    // Passes its checksum but does not parse: serde names the line and column.
    serde_json::from_slice(json).map_err(|e| format!("passes its checksum but does not parse: {e}"))
}

/// Offsets below the recovery point were fsynced. A missing checkpoint is 0; one that cannot
/// be read or parsed is 0 too (the whole log is scanned: slower, never wrong), said in the log.
fn read_recovery_point(disk: &dyn Disk, dir: &Path) -> i64 {
    let path = dir.join(RECOVERY_CHECKPOINT_FILE);
    if !disk.exists(&path) {
        return 0;
    }
    let parsed = storage::read_all_stable(disk, &path).ok().and_then(|bytes| {
        let text = String::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        (lines.next()? == "1").then_some(())?;
        lines.next()?.trim().parse::<i64>().ok().filter(|&offset| offset >= 0)
    });
    parsed.unwrap_or_else(|| {
        tracing::warn!(path = %path.display(), "unusable recovery-point checkpoint: recovering the whole log");
        0
    })
}

fn write_recovery_point(disk: &dyn Disk, dir: &Path, offset: i64) -> Result<(), LogError> {
    let path = dir.join(RECOVERY_CHECKPOINT_FILE);
    storage::write_atomic(disk, &path, format!("1\n{offset}\n").as_bytes()).map_err(io_error(&path))
}

/// Bytes of a batch header, re-exported for callers that walk raw batches.
pub const RECORD_BATCH_HEADER_BYTES: usize = BATCH_HEADER_BYTES;
