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
//! - [`PartitionLog::apply_retention`] deletes whole segments past `retention.bytes` / `retention.ms`.
//! - [`PartitionLog::close`] flushes everything for a clean shutdown.
//!
//! Time is always passed in as `now_ms` (milliseconds since the Unix epoch): the log never reads
//! a clock, so the simulator controls it.

pub mod batch;
pub mod producer_state;

use crate::storage::Disk;
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};
use bytes::Bytes;
use std::path::PathBuf;
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
    #[error("producer {producer_id:?} epoch {received:?} is older than the current epoch {current:?}")]
    InvalidProducerEpoch { producer_id: ProducerId, received: ProducerEpoch, current: ProducerEpoch },
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
    pub fn error_code(&self) -> i16 {
        match self {
            LogError::CorruptMessage(_) => 2,
            LogError::MessageTooLarge { .. } => 10,
            LogError::UnsupportedMessageFormat(_) => 43,
            LogError::OutOfOrderSequence { .. } => 45,
            LogError::InvalidProducerEpoch { .. } => 47,
            LogError::OffsetOutOfRange { .. } => 1,
            LogError::Storage { .. } | LogError::Corruption { .. } => 56, // KAFKA_STORAGE_ERROR
        }
    }
}

/// What [`PartitionLog::read`] returns.
#[derive(Clone, Debug, Default)]
pub struct ReadResult {
    /// Whole v2 batches, concatenated, exactly as stored.
    pub records: Bytes,
}

/// One partition's log. See the module docs for the contract.
#[derive(Debug)]
pub struct PartitionLog {
    _disk: Arc<dyn Disk>,
    _dir: PathBuf,
    _config: LogConfig,
}

impl PartitionLog {
    /// Opens (recovering) or creates the log in `dir`.
    pub fn open(disk: Arc<dyn Disk>, dir: PathBuf, config: LogConfig, now_ms: i64) -> Result<Self, LogError> {
        let _ = (disk, dir, config, now_ms);
        todo!("storage engine")
    }

    pub fn config(&self) -> &LogConfig {
        todo!("storage engine")
    }

    /// Replaces the config (CreateTopics per-topic overrides, AlterConfigs later).
    pub fn set_config(&mut self, config: LogConfig) {
        let _ = config;
        todo!("storage engine")
    }

    /// Appends one client batch (see module docs). `leader_epoch` is stamped into the batch.
    pub fn append(&mut self, batch: Bytes, leader_epoch: LeaderEpoch, now_ms: i64) -> Result<AppendOutcome, LogError> {
        let _ = (batch, leader_epoch, now_ms);
        todo!("storage engine")
    }

    pub fn read(&self, fetch_offset: Offset, max_bytes: usize, upper_bound: Offset, min_one_batch: bool) -> Result<ReadResult, LogError> {
        let _ = (fetch_offset, max_bytes, upper_bound, min_one_batch);
        todo!("storage engine")
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        todo!("storage engine")
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> Offset {
        todo!("storage engine")
    }

    /// ListOffsets by timestamp: the first offset whose record timestamp is `>= timestamp_ms`,
    /// with that record's timestamp; `None` if no record is that new.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(Offset, i64)>, LogError> {
        let _ = timestamp_ms;
        todo!("storage engine")
    }

    /// ListOffsets MAX_TIMESTAMP (-3): the offset and timestamp of the record with the largest
    /// timestamp (the first such record); `None` for an empty log.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<(Offset, i64)>, LogError> {
        todo!("storage engine")
    }

    /// Time-based work: flush by `flush.ms`, roll by `segment.ms`.
    pub fn tick(&mut self, now_ms: i64) -> Result<(), LogError> {
        let _ = now_ms;
        todo!("storage engine")
    }

    /// fsyncs every unflushed byte (segments, indexes, directory). Afterwards everything
    /// appended so far survives a crash.
    pub fn flush(&mut self) -> Result<(), LogError> {
        todo!("storage engine")
    }

    /// Deletes whole segments past retention; returns how many were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let _ = now_ms;
        todo!("storage engine")
    }

    /// Clean shutdown: flush and mark the log cleanly closed.
    pub fn close(&mut self) -> Result<(), LogError> {
        todo!("storage engine")
    }

    /// Removes the whole log directory (DeleteTopics).
    pub fn delete(self) -> Result<(), LogError> {
        todo!("storage engine")
    }
}
