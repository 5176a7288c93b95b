//! The durable metadata log on the controller's disk.

use super::image::MetadataRecord;
use crate::storage::{Disk, DiskFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of the per-append frame header: length (u32) and CRC-32C (u32) of the payload.
const FRAME_HEADER_BYTES: u64 = 8;
/// A metadata append never approaches this; anything larger is a torn or corrupt frame.
const FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// The durable metadata log: `<dir>/metadata.log`. Each append is one frame,
/// `length u32 | crc32c u32 | JSON array of records`, fsynced before `append` returns, so only
/// the last frame can be torn by a crash. On open a torn last frame (cut short, failing its
/// checksum, or with lost sectors) is truncated; an invalid frame followed by a whole frame, or
/// by more than one frame's worth of bytes, refuses to open (with what to do about it).
///
/// After a failed write or fsync the log refuses every further append: bytes written after a
/// failed fsync could reach the disk while the failed ones do not, and a power loss would then
/// leave a hole before later frames. The process is expected to halt (`server::halt`); reopening
/// it is the recovery.
#[derive(Debug)]
pub struct MetadataLog {
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    /// Byte length of the valid frames. Invariant: equals the file length after open and after
    /// every successful append.
    end: u64,
    /// Set by the first failed write or fsync; from then on nothing is appended.
    failed: Option<String>,
}

/// What is at a position of the log.
enum Frame {
    Valid {
        records: Vec<MetadataRecord>,
        next: u64,
    },
    /// Not a valid frame.
    Invalid {
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
            // A frame that fails its checks is judged on bytes that read the same several times
            // in a row: a transient read error must not truncate durable metadata.
            let mut frame = read_frame(&*file, &path, position, len, Reads::Once)?;
            if matches!(frame, Frame::Invalid { .. }) {
                frame = read_frame(&*file, &path, position, len, Reads::UntilStable)?;
            }
            match frame {
                Frame::Valid { records: frame, next } => {
                    records.extend(frame);
                    position = next;
                }
                Frame::End => break,
                Frame::Invalid { reason } => {
                    if let Some(why) = not_a_torn_tail(&*file, &path, position, len)? {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "{}: corrupt metadata frame at byte {position} ({reason}) followed by {why}: \
                                 the log lost a write before a later one (or the disk corrupted it). Records from \
                                 byte {position} on cannot be trusted; restore this directory from a replica or \
                                 a backup, or truncate the file to {position} bytes to keep the valid prefix",
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
        Ok((MetadataLog { path, file, end: position, failed: None }, records))
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

    /// Appends a frame from [`MetadataLog::encode_frame`] and fsyncs. After a failed write or
    /// fsync, this and every later append fails without touching the file.
    pub fn append_frame(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(reason) = &self.failed {
            return Err(io::Error::other(format!(
                "{}: an earlier write or fsync failed ({reason}); nothing more is appended until restart",
                self.path.display()
            )));
        }
        let written = self.file.write_all_at(buf, self.end).and_then(|()| {
            if crate::planted::active(crate::planted::Bug::MetadataAckBeforeFsync) {
                return Ok(());
            }
            self.file.sync()
        });
        match written {
            Ok(()) => {
                self.end += buf.len() as u64;
                Ok(())
            }
            Err(e) if crate::planted::active(crate::planted::Bug::AppendAfterFailedFsync) => {
                // The planted bug: carry on after the last frame as if the failed one were there.
                self.end += buf.len() as u64;
                Err(e)
            }
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
            }
        }
    }

    /// Why the log stopped taking appends, if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How a frame is read: once, or until the reads agree (before a failed check is believed).
#[derive(Clone, Copy, Debug)]
enum Reads {
    Once,
    UntilStable,
}

fn read_at(file: &dyn DiskFile, path: &Path, position: u64, len: usize, reads: Reads) -> io::Result<Vec<u8>> {
    match reads {
        Reads::Once => {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, position)?;
            Ok(buf)
        }
        Reads::UntilStable => crate::storage::read_stable_at(file, path, position, len),
    }
}

fn read_frame(file: &dyn DiskFile, path: &Path, position: u64, len: u64, reads: Reads) -> io::Result<Frame> {
    if position == len {
        return Ok(Frame::End);
    }
    if position + FRAME_HEADER_BYTES > len {
        return Ok(Frame::Invalid { reason: "header cut short".to_string() });
    }
    let header = read_at(file, path, position, FRAME_HEADER_BYTES as usize, reads)?;
    let size = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
    if size == 0 || size > FRAME_BYTES_MAX {
        return Ok(Frame::Invalid { reason: format!("impossible length {size}") });
    }
    let end = position + FRAME_HEADER_BYTES + u64::from(size);
    if end > len {
        return Ok(Frame::Invalid { reason: "frame runs past the end of the file".to_string() });
    }
    let payload = read_at(file, path, position + FRAME_HEADER_BYTES, size as usize, reads)?;
    if crc32c::crc32c(&payload) != crc {
        return Ok(Frame::Invalid { reason: "checksum mismatch".to_string() });
    }
    let records = serde_json::from_slice(&payload).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("undecodable metadata frame at byte {position} with a valid checksum: {e}"),
        )
    })?;
    Ok(Frame::Valid { records, next: end })
}

/// Whether the bytes from an invalid frame at `from` to the end of the file can be the torn
/// tail of the last append: `None` if so, else what follows instead. Every append is fsynced
/// before the next is written (and none after a failed one), so at most the last frame is
/// unsynced, and a power loss may keep any of its sectors and lose others (a zeroed header
/// followed by the rest of the frame is a torn tail). A torn tail is therefore at most one frame
/// long and holds no whole frame; a whole frame after a bad one means a write was lost before a
/// later one reached the disk.
fn not_a_torn_tail(file: &dyn DiskFile, path: &Path, from: u64, len: u64) -> io::Result<Option<String>> {
    let tail = len - from;
    if tail > FRAME_HEADER_BYTES + u64::from(FRAME_BYTES_MAX) {
        return Ok(Some(format!("{tail} more bytes, more than one frame holds")));
    }
    // Bytes the reads agree on: a flipped bit must not hide a whole frame.
    let bytes = crate::storage::read_stable_at(file, path, from, tail as usize)?;
    for start in 1..bytes.len() {
        let Some(header) = bytes.get(start..start + FRAME_HEADER_BYTES as usize) else { break };
        let size = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
        let payload_start = start + FRAME_HEADER_BYTES as usize;
        if size == 0 || size > FRAME_BYTES_MAX {
            continue;
        }
        match bytes.get(payload_start..payload_start + size as usize) {
            Some(payload) if crc32c::crc32c(payload) == crc => {
                return Ok(Some(format!("a whole frame at byte {}", from + start as u64)));
            }
            _ => {}
        }
    }
    Ok(None)
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

    /// Fails every fsync while switched on.
    #[derive(Debug, Default)]
    struct FailingSyncs(std::sync::atomic::AtomicBool);

    impl crate::storage::mem::FaultHook for FailingSyncs {
        fn check(&self, op: crate::storage::mem::DiskOp, path: &Path) -> io::Result<()> {
            if op == crate::storage::mem::DiskOp::Sync && self.0.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(io::Error::other(format!("EIO syncing {}", path.display())));
            }
            Ok(())
        }
    }

    #[test]
    fn after_a_failed_fsync_nothing_is_appended_and_a_power_loss_keeps_exactly_the_synced_prefix() {
        use crate::storage::mem::MemDisk;
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("/data")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        let hook = Arc::new(FailingSyncs::default());
        disk.set_fault_hook(Some(hook.clone()));
        let dir = Path::new("/data/__cluster_metadata-0");
        let (mut log, _) = MetadataLog::open(&disk, dir).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        hook.0.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = log.append(&[topic("b", 2)]).unwrap_err();
        assert!(err.to_string().contains("metadata.log"), "names the file: {err}");
        hook.0.store(false, std::sync::atomic::Ordering::SeqCst);
        let err = log.append(&[topic("c", 3)]).unwrap_err();
        assert!(err.to_string().contains("nothing more is appended until restart"), "{err}");
        assert!(log.failed().is_some());
        drop(log);
        disk.crash();
        let (_, read) = MetadataLog::open(&disk, dir).unwrap();
        assert_eq!(read, vec![topic("a", 1)], "exactly what was synced");
    }

    #[test]
    fn a_process_restart_after_a_failed_fsync_makes_the_page_cache_durable_before_serving_it() {
        use crate::storage::mem::MemDisk;
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("/data")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        let hook = Arc::new(FailingSyncs::default());
        disk.set_fault_hook(Some(hook.clone()));
        let dir = Path::new("/data/__cluster_metadata-0");
        let (mut log, _) = MetadataLog::open(&disk, dir).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        hook.0.store(true, std::sync::atomic::Ordering::SeqCst);
        log.append(&[topic("b", 2)]).unwrap_err();
        drop(log); // the process halts; the page cache keeps the frame
        assert!(MetadataLog::open(&disk, dir).is_err(), "a restart whose fsync fails does not start");
        hook.0.store(false, std::sync::atomic::Ordering::SeqCst);
        let (_, read) = MetadataLog::open(&disk, dir).unwrap();
        assert_eq!(read, vec![topic("a", 1), topic("b", 2)], "the restart reads the page cache");
        disk.crash();
        let (_, after) = MetadataLog::open(&disk, dir).unwrap();
        assert_eq!(after, read, "and what it read was made durable before it was used");
    }

    #[test]
    fn a_lost_write_before_a_later_frame_refuses_to_open_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(&RealDisk, dir.path()).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        let hole_at = RealDisk.open(log.path(), false).unwrap().len().unwrap();
        log.append(&[topic("b", 2)]).unwrap();
        log.append(&[topic("c", 3)]).unwrap();
        let file = RealDisk.open(log.path(), false).unwrap();
        file.write_all_at(&[0u8; 16], hole_at).unwrap();
        let err = MetadataLog::open(&RealDisk, dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("corrupt metadata frame at byte {hole_at}")), "{err}");
        assert!(err.contains("followed by a whole frame") && err.contains("truncate the file"), "{err}");
    }

    #[test]
    fn a_torn_last_frame_whose_header_sector_was_lost_is_a_torn_tail_not_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(&RealDisk, dir.path()).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        let last_at = RealDisk.open(log.path(), false).unwrap().len().unwrap();
        log.append(&[topic(&"b".repeat(900), 2)]).unwrap();
        // The power loss kept the frame's later sector but not the one with its header.
        let file = RealDisk.open(log.path(), false).unwrap();
        file.write_all_at(&[0u8; 64], last_at).unwrap();
        let (_, read) = MetadataLog::open(&RealDisk, dir.path()).unwrap();
        assert_eq!(read, vec![topic("a", 1)]);
        assert_eq!(RealDisk.open(log.path(), false).unwrap().len().unwrap(), last_at, "truncated");
    }

    /// The metadata twin of swarm-single-node seed 25579: bad reads of the last frame, five
    /// in a row, made it look torn, and the last committed record would have been truncated.
    #[test]
    fn a_burst_of_bad_reads_of_the_last_frame_truncates_nothing() {
        use crate::storage::mem::MemDisk;
        use crate::storage::testing::FlipReadsAt;
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("/data")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        let dir = Path::new("/data/__cluster_metadata-0");
        let (mut log, _) = MetadataLog::open(&disk, dir).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        let last_at = disk.open(log.path(), false).unwrap().len().unwrap();
        log.append(&[topic("b", 2)]).unwrap();
        disk.crash();
        disk.set_fault_hook(Some(Arc::new(FlipReadsAt::new("metadata.log", last_at, 10, false))));
        let (_, read) = MetadataLog::open(&disk, dir).unwrap();
        assert_eq!(read, vec![topic("a", 1), topic("b", 2)]);
        disk.set_fault_hook(Some(Arc::new(FlipReadsAt::new("metadata.log", last_at, u64::MAX, false))));
        let error = MetadataLog::open(&disk, dir).unwrap_err().to_string();
        assert!(error.contains("agreed"), "no verdict without agreeing reads: {error}");
        disk.set_fault_hook(None);
        assert_eq!(MetadataLog::open(&disk, dir).unwrap().1, vec![topic("a", 1), topic("b", 2)], "nothing was cut");
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
