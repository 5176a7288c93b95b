//! Cluster metadata as a log of records, and the image built by replaying them (the KRaft
//! model). Today one node holds the log on its own disk; the replication issue puts the same
//! records behind a controller, and the KRaft issue behind a Raft quorum.
//!
//! Flow: a handler validates a change and produces [`MetadataRecord`]s; the records are
//! appended durably to the [`MetadataLog`]; only then does [`MetadataImage::replay`] apply them.
//! Startup replays the whole log, so recovery and normal operation take the same path.

use crate::storage::{Disk, DiskFile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One metadata change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A topic was created with this many partitions and these config overrides.
    Topic { name: String, topic_id: u128, partitions: i32, configs: BTreeMap<String, String> },
    /// A topic was deleted.
    RemoveTopic { name: String, topic_id: u128 },
}

/// A topic as the metadata log describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: u128,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

/// The state obtained by replaying every record in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// Topics by name. Invariant: names and ids are unique.
    pub topics: BTreeMap<String, TopicImage>,
}

impl MetadataImage {
    /// Applies one record. Records were validated before they were written, so a record that
    /// does not fit the image is a bug or corruption and panics.
    pub fn replay(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::Topic { name, topic_id, partitions, configs } => {
                assert!(*partitions > 0, "topic {name} with {partitions} partitions");
                let previous = self.topics.insert(
                    name.clone(),
                    TopicImage { name: name.clone(), topic_id: *topic_id, partitions: *partitions, configs: configs.clone() },
                );
                assert!(previous.is_none(), "topic {name} created twice");
            }
            MetadataRecord::RemoveTopic { name, topic_id } => {
                let removed = self.topics.remove(name).expect("removing an unknown topic");
                assert_eq!(removed.topic_id, *topic_id, "topic {name} removed with the wrong id");
            }
        }
    }

    pub fn topic_by_id(&self, topic_id: u128) -> Option<&TopicImage> {
        self.topics.values().find(|t| t.topic_id == topic_id)
    }
}

/// Bytes of the per-record header: length (u32) and CRC-32C (u32) of the payload.
const RECORD_HEADER_BYTES: u64 = 8;
/// A metadata record never approaches this; anything larger is corruption.
const RECORD_BYTES_MAX: u32 = 1024 * 1024;

/// The durable metadata log: `<dir>/metadata.log`, records framed as
/// `length u32 | crc32c u32 | JSON payload`. A torn last record (crash mid-append) is
/// truncated on open; an invalid record before the tail refuses to open.
#[derive(Debug)]
pub struct MetadataLog {
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    /// Byte length of the valid records. Invariant: equals the file length after open/append.
    end: u64,
}

impl MetadataLog {
    /// Opens (or creates) the log under `dir` and returns it with every record in it.
    pub fn open(disk: &dyn Disk, dir: &Path) -> io::Result<(MetadataLog, Vec<MetadataRecord>)> {
        disk.create_dir_all(dir)?;
        let path = dir.join("metadata.log");
        let created = !disk.exists(&path);
        let file = disk.open(&path, true)?;
        if created {
            disk.sync_dir(dir)?;
        }
        let len = file.len()?;
        let mut records = Vec::new();
        let mut position = 0;
        while let Some((record, next)) = read_record(&*file, position, len, &path)? {
            records.push(record);
            position = next;
        }
        if position < len {
            tracing::warn!(path = %path.display(), valid_bytes = position, file_bytes = len, "truncating torn metadata log tail");
            file.set_len(position)?;
            file.sync()?;
        }
        Ok((MetadataLog { path, file, end: position }, records))
    }

    /// Appends records and fsyncs: when this returns Ok they survive a crash.
    pub fn append(&mut self, records: &[MetadataRecord]) -> io::Result<()> {
        let mut buf = Vec::new();
        for record in records {
            let payload = serde_json::to_vec(record).map_err(io::Error::other)?;
            buf.extend_from_slice(&u32::try_from(payload.len()).map_err(io::Error::other)?.to_be_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
            buf.extend_from_slice(&payload);
        }
        self.file.write_all_at(&buf, self.end)?;
        self.file.sync()?;
        self.end += buf.len() as u64;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads the record at `position`. `Ok(None)` at the end or at a torn tail (a record that runs
/// past the end of the file, or whose checksum fails and is the last thing in the file).
fn read_record(file: &dyn DiskFile, position: u64, len: u64, path: &Path) -> io::Result<Option<(MetadataRecord, u64)>> {
    if position + RECORD_HEADER_BYTES > len {
        return Ok(None);
    }
    let mut header = [0u8; 8];
    file.read_exact_at(&mut header, position)?;
    let size = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
    let end = position + RECORD_HEADER_BYTES + u64::from(size);
    if size > RECORD_BYTES_MAX || end > len {
        return Ok(None);
    }
    let mut payload = vec![0u8; size as usize];
    file.read_exact_at(&mut payload, position + RECORD_HEADER_BYTES)?;
    let valid = crc32c::crc32c(&payload) == crc;
    match (valid, end == len) {
        (true, _) => {}
        (false, true) => return Ok(None),
        (false, false) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: corrupt metadata record at byte {position} (checksum mismatch before the end of the log)", path.display()),
            ))
        }
    }
    let record = serde_json::from_slice(&payload).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: undecodable metadata record at byte {position}: {e}", path.display()))
    })?;
    Ok(Some((record, end)))
}
