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

/// Reads of a small file without a checksum that must agree before it is believed.
const STABLE_READ_ATTEMPTS: usize = 5;

/// Reads a small file until two reads in a row return the same bytes (for files with no
/// checksum: a read that returns different bytes twice in a row is not trusted).
pub fn read_all_stable(disk: &dyn Disk, path: &Path) -> io::Result<Vec<u8>> {
    let mut previous = read_all(disk, path)?;
    for _ in 1..STABLE_READ_ATTEMPTS {
        let next = read_all(disk, path)?;
        if next == previous {
            return Ok(next);
        }
        previous = next;
    }
    Err(io::Error::other(format!("{}: {STABLE_READ_ATTEMPTS} reads returned different bytes", path.display())))
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
