//! The durable metadata log on the controller's disk.

use super::image::MetadataRecord;
use crate::storage::{Disk, DiskFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of the per-append frame header: length (u32) and CRC-32C (u32) of the payload.
const FRAME_HEADER_BYTES: u64 = 8;
/// Reads of a frame that fails its checks before it counts as torn or corrupt.
const READ_ATTEMPTS: usize = 5;
/// A metadata append never approaches this; anything larger is a torn or corrupt frame.
const FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// The durable metadata log: `<dir>/metadata.log`. Each append is one frame,
/// `length u32 | crc32c u32 | JSON array of records`, fsynced before `append` returns, so only
/// the last frame can be torn by a crash. On open a torn last frame (running past the end of
/// the file, failing its checksum at the end, or followed only by zeros) is truncated; an
/// invalid frame followed by other data refuses to open.
#[derive(Debug)]
pub struct MetadataLog {
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    /// Byte length of the valid frames. Invariant: equals the file length after open/append.
    end: u64,
}

/// What is at a position of the log.
enum Frame {
    Valid {
        records: Vec<MetadataRecord>,
        next: u64,
    },
    /// Not a valid frame; `end` is where it claims to end (may be past the file).
    Invalid {
        end: u64,
        reason: String,
    },
    End,
}

impl MetadataLog {
    /// Opens (or creates) the log under `dir` and returns it with every record in it.
    pub fn open(disk: &dyn Disk, dir: &Path) -> io::Result<(MetadataLog, Vec<MetadataRecord>)> {
        if !disk.exists(dir) {
            disk.create_dir_all(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                disk.sync_dir(parent)?;
            }
        }
        let path = dir.join("metadata.log");
        let created = !disk.exists(&path);
        let file = disk.open(&path, true)?;
        if created {
            disk.sync_dir(dir)?;
        }
        let len = file.len()?;
        let mut records = Vec::new();
        let mut position = 0;
        loop {
            // A frame that fails its checks is read again: a transient read error must not
            // truncate durable metadata.
            let mut frame = read_frame(&*file, position, len)?;
            for _ in 1..READ_ATTEMPTS {
                if !matches!(frame, Frame::Invalid { .. }) {
                    break;
                }
                frame = read_frame(&*file, position, len)?;
            }
            match frame {
                Frame::Valid { records: frame, next } => {
                    records.extend(frame);
                    position = next;
                }
                Frame::End => break,
                Frame::Invalid { end, reason } => {
                    if end < len && !is_zeros(&*file, end, len)? {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "{}: corrupt metadata frame at byte {position} ({reason}) followed by more data",
                                path.display()
                            ),
                        ));
                    }
                    tracing::warn!(path = %path.display(), valid_bytes = position, file_bytes = len, reason, "truncating a torn metadata log tail");
                    file.set_len(position)?;
                    file.sync()?;
                    break;
                }
            }
        }
        // Replayed records must be durable: they may have survived a failed fsync in the page cache.
        file.sync()?;
        Ok((MetadataLog { path, file, end: position }, records))
    }

    /// Encodes records as one frame, or says why they cannot be one (too large): a request
    /// error for the operation that asked, never a disk failure.
    pub fn encode_frame(records: &[MetadataRecord]) -> Result<Vec<u8>, String> {
        let payload = serde_json::to_vec(records).map_err(|e| format!("metadata records do not encode: {e}"))?;
        let size = u32::try_from(payload.len()).ok().filter(|&s| s <= FRAME_BYTES_MAX).ok_or_else(|| {
            format!(
                "{} records take {} bytes, more than one metadata frame holds ({FRAME_BYTES_MAX})",
                records.len(),
                payload.len()
            )
        })?;
        let mut buf = Vec::with_capacity(payload.len() + FRAME_HEADER_BYTES as usize);
        buf.extend_from_slice(&size.to_be_bytes());
        buf.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        buf.extend_from_slice(&payload);
        Ok(buf)
    }

    /// Appends records as one frame and fsyncs: when this returns Ok they survive a crash.
    pub fn append(&mut self, records: &[MetadataRecord]) -> io::Result<()> {
        let frame = Self::encode_frame(records).map_err(io::Error::other)?;
        self.append_frame(&frame)
    }

    /// Appends a frame from [`MetadataLog::encode_frame`] and fsyncs.
    pub fn append_frame(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, self.end)?;
        if !crate::planted::active(crate::planted::Bug::MetadataAckBeforeFsync) {
            self.file.sync()?;
        }
        self.end += buf.len() as u64;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_frame(file: &dyn DiskFile, position: u64, len: u64) -> io::Result<Frame> {
    if position == len {
        return Ok(Frame::End);
    }
    if position + FRAME_HEADER_BYTES > len {
        return Ok(Frame::Invalid { end: len, reason: "header cut short".to_string() });
    }
    let mut header = [0u8; 8];
    file.read_exact_at(&mut header, position)?;
    let size = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
    if size == 0 || size > FRAME_BYTES_MAX {
        return Ok(Frame::Invalid { end: position, reason: format!("impossible length {size}") });
    }
    let end = position + FRAME_HEADER_BYTES + u64::from(size);
    if end > len {
        return Ok(Frame::Invalid { end: len, reason: "frame runs past the end of the file".to_string() });
    }
    let mut payload = vec![0u8; size as usize];
    file.read_exact_at(&mut payload, position + FRAME_HEADER_BYTES)?;
    if crc32c::crc32c(&payload) != crc {
        return Ok(Frame::Invalid { end, reason: "checksum mismatch".to_string() });
    }
    let records = serde_json::from_slice(&payload).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("undecodable metadata frame at byte {position} with a valid checksum: {e}"),
        )
    })?;
    Ok(Frame::Valid { records, next: end })
}

fn is_zeros(file: &dyn DiskFile, from: u64, to: u64) -> io::Result<bool> {
    const CHUNK_BYTES: u64 = 64 * 1024;
    let mut position = from;
    while position < to {
        let mut chunk = vec![0u8; CHUNK_BYTES.min(to - position) as usize];
        file.read_exact_at(&mut chunk, position)?;
        if chunk.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        position += chunk.len() as u64;
    }
    Ok(true)
}

impl crate::replay::RecordLog<MetadataRecord> for MetadataLog {
    /// One CRC frame per append, fsynced. A frame too large to store is refused before any byte
    /// is written; a failed write or sync fails the log.
    fn append(&mut self, records: &[MetadataRecord]) -> Result<(), crate::replay::AppendError> {
        let frame = MetadataLog::encode_frame(records).map_err(crate::replay::AppendError::Refused)?;
        self.append_frame(&frame).map_err(|e| crate::replay::AppendError::Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::image::MetadataImage;
    use crate::storage::real::RealDisk;
    use std::collections::BTreeMap;

    fn topic(name: &str, id: u128) -> MetadataRecord {
        MetadataRecord::Topic { name: name.to_string(), topic_id: id, partitions: 2, configs: BTreeMap::new() }
    }

    #[test]
    fn records_replay_to_the_same_image_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, records) = MetadataLog::open(&RealDisk, dir.path()).unwrap();
        assert!(records.is_empty());
        let written =
            vec![topic("a", 1), topic("b", 2), MetadataRecord::RemoveTopic { name: "a".to_string(), topic_id: 1 }];
        log.append(&written).unwrap();
        let (_, read) = MetadataLog::open(&RealDisk, dir.path()).unwrap();
        assert_eq!(read, written);
        let mut image = MetadataImage::default();
        read.iter().for_each(|r| image.replay(r));
        assert_eq!(image.topics.keys().collect::<Vec<_>>(), vec!["b"]);
    }

    #[test]
    fn a_torn_last_record_is_truncated_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(&RealDisk, dir.path()).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        log.append(&[topic("b", 2)]).unwrap();
        let file = RealDisk.open(log.path(), false).unwrap();
        let full = file.len().unwrap();
        for cut in 1..20 {
            // Cut the last append short, or replace its end with zeros (a torn write).
            file.set_len(full - cut).unwrap();
            if cut % 2 == 0 {
                file.set_len(full).unwrap();
            }
            let (_, read) = MetadataLog::open(&RealDisk, dir.path()).unwrap();
            assert_eq!(read, vec![topic("a", 1)], "cut {cut} bytes");
        }
        let (mut log, _) = MetadataLog::open(&RealDisk, dir.path()).unwrap();
        log.append(&[topic("c", 3)]).unwrap();
        let (_, read) = MetadataLog::open(&RealDisk, dir.path()).unwrap();
        assert_eq!(read, vec![topic("a", 1), topic("c", 3)]);
    }

    #[test]
    fn corruption_before_the_tail_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(&RealDisk, dir.path()).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        log.append(&[topic("b", 2)]).unwrap();
        let file = RealDisk.open(log.path(), false).unwrap();
        file.write_all_at(b"X", 10).unwrap();
        let err = MetadataLog::open(&RealDisk, dir.path()).unwrap_err();
        assert!(err.to_string().contains("corrupt metadata frame at byte 0"), "{err}");
    }
}
