//! The disk interface: every byte the broker stores goes through [`Disk`] and [`DiskFile`].
//!
//! Two backends implement it:
//! - [`real::RealDisk`]: the host filesystem (positional IO, fsync of files and directories);
//! - [`mem::MemDisk`]: an in-memory disk that keeps, per file, a durable image and a volatile
//!   (page cache) image, so tests can crash it and see exactly what an fsync-less write loses.
//!   The simulator's disk builds on the same model.
//!
//! The interface is synchronous on purpose: it needs no threads and no runtime, so the same
//! storage code runs in unit tests, in the real server and inside the simulator.
//!
//! Paths are plain `Path`s; a backend may treat them as keys. Directory entries (create, rename,
//! remove) are durable only after [`Disk::sync_dir`] on the parent directory.

pub mod mem;
pub mod real;

use std::io;
use std::path::Path;
use std::sync::Arc;

/// A handle to the storage of one node.
pub trait Disk: Send + Sync + std::fmt::Debug {
    /// Creates `path` and any missing parents. Idempotent.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of a directory, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> bool;
    /// Opens a file for reading and writing, creating it (empty) when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Renames a file or directory, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Time the disk has spent on operations since the last call, for the caller to wait out
    /// (the interface is synchronous; a simulated slow disk reports its latency here). Real
    /// disks block instead and report nothing.
    fn take_delay(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// An open file. Positional reads and writes; no shared cursor.
#[allow(clippy::len_without_is_empty)] // a file's length is an io::Result, not a collection size
pub trait DiskFile: Send + Sync + std::fmt::Debug {
    /// Current length in bytes (of the volatile image: what reads see).
    fn len(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `offset`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (fsync). A failure means the data may be lost.
    fn sync(&self) -> io::Result<()>;
}

/// Reads a whole file, for small metadata files.
pub fn read_all(disk: &dyn Disk, path: &Path) -> io::Result<Vec<u8>> {
    let file = disk.open(path, false)?;
    let len = file.len()? as usize;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Reads that must return the same bytes before they are believed: bytes without a checksum,
/// and bytes whose checksum fails (is the damage on the disk, or was it one bad read?). A
/// transient read error (a flipped bit on the way) rarely repeats itself; damage on the disk
/// does. Two bad reads can be flipped the same way by chance (one in 8 x the length, times the
/// error rate squared: the sweep met it); three, in practice, cannot.
pub const AGREEING_READS: usize = 3;
/// Reads of one range before the disk counts as unable to give a stable answer: an I/O error,
/// never a verdict about the data (the caller fails stop instead of truncating or trusting).
pub const STABLE_READ_ATTEMPTS: usize = 16;

/// Reads `len` bytes at `offset` until [`AGREEING_READS`] reads have returned the same bytes.
/// `Err` (naming `path`) if none do within [`STABLE_READ_ATTEMPTS`] reads, or a read fails.
pub fn read_stable_at(file: &dyn DiskFile, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    // Each distinct answer by its hash, with how many reads gave it: two buffers in memory
    // whatever the range's size, not one per answer.
    let mut answers: Vec<(u64, usize)> = Vec::new();
    let mut read = vec![0u8; len];
    for _ in 0..STABLE_READ_ATTEMPTS {
        file.read_exact_at(&mut read, offset)?;
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            read.hash(&mut hasher);
            hasher.finish()
        };
        let at = match answers.iter().position(|&(h, _)| h == hash) {
            Some(at) => at,
            None => {
                answers.push((hash, 0));
                answers.len() - 1
            }
        };
        answers[at].1 += 1;
        if answers[at].1 == AGREEING_READS {
            return Ok(read);
        }
    }
    Err(io::Error::other(format!(
        "{}: no {AGREEING_READS} of {STABLE_READ_ATTEMPTS} reads of bytes {offset}..{} agreed",
        path.display(),
        offset + len as u64
    )))
}

/// The largest small file [`read_all_stable`] reads (checkpoints, properties, segment indexes:
/// Kafka caps an index at 10 MiB). A longer one is an error, not an allocation.
pub const SMALL_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Reads a small file without a checksum: every byte as [`read_stable_at`] agrees on it.
pub fn read_all_stable(disk: &dyn Disk, path: &Path) -> io::Result<Vec<u8>> {
    let file = disk.open(path, false)?;
    let len = file.len()?;
    if len > SMALL_FILE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {len} bytes, more than a small file may hold ({SMALL_FILE_BYTES_MAX})", path.display()),
        ));
    }
    let len = usize::try_from(len).map_err(io::Error::other)?;
    read_stable_at(&*file, path, 0, len)
}

/// Replaces a small file atomically and durably: write a temp file, fsync it, rename it over
/// the target, fsync the directory. Readers see either the old or the new content, never a mix.
pub fn write_atomic(disk: &dyn Disk, path: &Path, content: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    if disk.exists(&tmp) {
        disk.remove_file(&tmp)?;
    }
    let file = disk.open(&tmp, true)?;
    file.write_all_at(content, 0)?;
    file.sync()?;
    disk.rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        disk.sync_dir(parent)?;
    }
    Ok(())
}

/// Disk hooks for tests of how readers survive bad reads.
#[cfg(test)]
pub(crate) mod testing {
    use super::mem::{DiskOp, FaultHook};
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Flips one bit in each of the first `bad_reads` reads of the file named `file_name` that
    /// start at byte `offset`: a different bit each time (no two bad reads agree), or the same
    /// bit every time when `same_flip` is set (reads that agree on wrong bytes).
    #[derive(Debug)]
    pub struct FlipReadsAt {
        pub file_name: &'static str,
        pub offset: u64,
        pub bad_reads: u64,
        pub same_flip: bool,
        pub seen: AtomicU64,
    }

    impl FlipReadsAt {
        pub fn new(file_name: &'static str, offset: u64, bad_reads: u64, same_flip: bool) -> FlipReadsAt {
            FlipReadsAt { file_name, offset, bad_reads, same_flip, seen: AtomicU64::new(0) }
        }
    }

    impl FaultHook for FlipReadsAt {
        fn check(&self, _: DiskOp, _: &Path) -> std::io::Result<()> {
            Ok(())
        }

        fn corrupt_read(&self, path: &Path, offset: u64, buf: &mut [u8]) {
            if offset != self.offset || buf.is_empty() || !path.ends_with(self.file_name) {
                return;
            }
            let n = self.seen.fetch_add(1, Ordering::SeqCst);
            if n < self.bad_reads {
                let bit = if self.same_flip { 0 } else { n as usize };
                buf[(bit / 8) % buf.len()] ^= 1 << (bit % 8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mem::MemDisk;
    use super::testing::FlipReadsAt;
    use super::*;
    use std::sync::Arc;

    fn disk_with(content: &[u8]) -> (MemDisk, &'static Path) {
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("/data")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        let path = Path::new("/data/leader-epoch-checkpoint");
        write_atomic(&disk, path, content).unwrap();
        (disk, path)
    }

    /// Found by the simulator (swarm-single-node seed 24881): two reads of an 8-byte checkpoint
    /// were flipped the same way, "agreed", and a restart believed epoch 4 where the disk said 0.
    #[test]
    fn two_reads_flipped_the_same_way_are_not_believed() {
        let (disk, path) = disk_with(b"0\n1\n0 0\n");
        disk.set_fault_hook(Some(Arc::new(FlipReadsAt::new("leader-epoch-checkpoint", 0, 2, true))));
        assert_eq!(read_all_stable(&disk, path).unwrap(), b"0\n1\n0 0\n");
    }

    #[test]
    fn reads_that_never_agree_are_an_error_not_bytes() {
        let (disk, path) = disk_with(b"0\n1\n0 0\n");
        disk.set_fault_hook(Some(Arc::new(FlipReadsAt::new("leader-epoch-checkpoint", 0, u64::MAX, false))));
        let error = read_all_stable(&disk, path).unwrap_err().to_string();
        assert!(error.contains("agreed"), "{error}");
    }

    #[test]
    fn a_burst_of_different_bad_reads_ends_in_the_stored_bytes() {
        let (disk, path) = disk_with(b"0\n1\n0 0\n");
        let bad = (STABLE_READ_ATTEMPTS - AGREEING_READS) as u64; // all different
        disk.set_fault_hook(Some(Arc::new(FlipReadsAt::new("leader-epoch-checkpoint", 0, bad, false))));
        assert_eq!(read_all_stable(&disk, path).unwrap(), b"0\n1\n0 0\n");
    }
}
