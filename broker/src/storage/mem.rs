//! An in-memory disk that models what survives a crash.
//!
//! Per file there are two images: the *volatile* one (what reads see: the page cache) and the
//! *durable* one (what is on the platter). [`DiskFile::sync`] copies volatile to durable.
//! Directory entries are modelled the same way: creating, renaming or removing an entry changes
//! the volatile namespace; [`Disk::sync_dir`] makes the directory's entries durable.
//!
//! [`MemDisk::crash`] is a power loss: every file reverts to its durable image and the
//! namespace to its durable entries. [`MemDisk::crash_with`] lets the caller decide, per file
//! with unsynced data, what survived (a prefix, a torn write, garbage): the simulator drives it
//! from the seed. Nothing in here is random; callers pass every decision in.
//!
//! An optional [`FaultHook`] is consulted on every operation (EIO, ENOSPC, corrupt reads).

use super::{Disk, DiskFile};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Which operation a [`FaultHook`] is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskOp {
    Read,
    Write,
    Sync,
    SyncDir,
    Create,
    Rename,
    Remove,
}

/// Fault injection: return an error to fail the operation; `corrupt_read` may flip bytes.
pub trait FaultHook: Send + Sync + std::fmt::Debug {
    fn check(&self, op: DiskOp, path: &Path) -> io::Result<()>;
    fn corrupt_read(&self, _path: &Path, _offset: u64, _buf: &mut [u8]) {}
    /// A file was renamed into place at `to` with `content` (observers record what a node
    /// persisted, e.g. the simulator's epoch-history check; called outside the disk's lock).
    fn renamed(&self, _to: &Path, _content: &[u8]) {}
    /// Latency this operation adds (reported through [`Disk::take_delay`]).
    fn latency(&self, _op: DiskOp) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

type FileId = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(FileId),
}

#[derive(Clone, Debug, Default)]
struct FileData {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    /// The lowest byte written or truncated since the last sync. Invariant: `None` means the
    /// two images are equal; `Some(f)` means they agree on their common prefix below `f`.
    dirty_from: Option<usize>,
}

impl FileData {
    fn touch(&mut self, from: usize) {
        self.dirty_from = Some(self.dirty_from.map_or(from, |d| d.min(from)));
    }

    /// fsync: copy only what changed since the last one.
    fn sync(&mut self) {
        if let Some(from) = self.dirty_from.take() {
            let from = from.min(self.volatile.len()).min(self.durable.len());
            self.durable.truncate(from);
            self.durable.extend_from_slice(&self.volatile[from..]);
        }
        debug_assert_eq!(self.durable.len(), self.volatile.len());
    }
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<FileId, FileData>,
    /// The namespace reads see.
    volatile: BTreeMap<PathBuf, Entry>,
    /// The namespace a crash reverts to.
    durable: BTreeMap<PathBuf, Entry>,
    /// Entries changed in `volatile` since their directory was last synced, by directory: what
    /// the next `sync_dir` of that directory makes durable (so a sync costs what changed, not
    /// what the directory holds).
    unsynced: BTreeMap<PathBuf, std::collections::BTreeSet<PathBuf>>,
    next_file_id: FileId,
    fault_hook: Option<Arc<dyn FaultHook>>,
    /// Latency accrued since the last `take_delay`.
    pending_delay: std::time::Duration,
}

impl State {
    /// Notes that `path`'s entry changed in the volatile namespace.
    fn changed(&mut self, path: &Path) {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.unsynced.entry(dir).or_default().insert(path.to_path_buf());
    }
}

/// The in-memory disk. Clones share the same storage (one disk per node).
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct MemFile {
    disk: MemDisk,
    id: FileId,
    path: PathBuf,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file or directory", path.display()))
}

impl MemDisk {
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("mem disk lock poisoned")
    }

    /// Installs (or removes) the fault hook.
    pub fn set_fault_hook(&self, hook: Option<Arc<dyn FaultHook>>) {
        self.lock().fault_hook = hook;
    }

    fn check(&self, op: DiskOp, path: &Path) -> io::Result<()> {
        let hook = self.lock().fault_hook.clone();
        match hook {
            Some(hook) => {
                let latency = hook.latency(op);
                if !latency.is_zero() {
                    self.lock().pending_delay += latency;
                }
                hook.check(op, path)
            }
            None => Ok(()),
        }
    }

    /// Power loss: everything not synced is gone.
    pub fn crash(&self) {
        self.crash_with(|_, durable, _| durable.to_vec());
    }

    /// Power loss where `survivor(path, durable, volatile)` decides the content of each file
    /// whose volatile image differs from its durable one (for example the durable image plus
    /// part of the unsynced tail). Unsynced directory changes are always lost.
    pub fn crash_with(&self, mut survivor: impl FnMut(&Path, &[u8], &[u8]) -> Vec<u8>) {
        let mut state = self.lock();
        let State { files, volatile, durable, unsynced, .. } = &mut *state;
        // An entry whose parent directory's own entry never became durable is unreachable.
        let snapshot = durable.clone();
        durable.retain(|path, _| {
            path.ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty() && *a != Path::new("/"))
                .all(|a| snapshot.get(a) == Some(&Entry::Dir))
        });
        *volatile = durable.clone();
        unsynced.clear();
        let mut names: BTreeMap<FileId, PathBuf> = BTreeMap::new();
        for (path, entry) in durable.iter() {
            if let Entry::File(id) = entry {
                names.entry(*id).or_insert_with(|| path.clone());
            }
        }
        files.retain(|id, _| names.contains_key(id));
        for (id, data) in files.iter_mut() {
            if data.volatile != data.durable {
                data.durable = survivor(&names[id], &data.durable, &data.volatile);
            }
            data.volatile = data.durable.clone();
            data.dirty_from = None;
        }
    }

    /// The disk is replaced by an empty one (the fault hook and its pending delay stay).
    pub fn wipe(&self) {
        let mut state = self.lock();
        state.files.clear();
        state.volatile.clear();
        state.durable.clear();
        state.unsynced.clear();
    }

    /// Files whose volatile image differs from the durable one (tests and the simulator).
    pub fn unsynced_files(&self) -> Vec<PathBuf> {
        let state = self.lock();
        state
            .volatile
            .iter()
            .filter_map(|(path, entry)| match entry {
                Entry::File(id) if state.files[id].volatile != state.files[id].durable => Some(path.clone()),
                _ => None,
            })
            .collect()
    }

    /// Overwrites bytes of a file in both images, bypassing the hook (tests: bit rot).
    pub fn corrupt(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        let Some(Entry::File(id)) = state.volatile.get(path).cloned() else { return Err(not_found(path)) };
        let data = state.files.get_mut(&id).expect("entry points at a file");
        for image in [&mut data.volatile, &mut data.durable] {
            let end = offset as usize + bytes.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[offset as usize..end].copy_from_slice(bytes);
        }
        Ok(())
    }
}

fn parent_of(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

impl Disk for MemDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check(DiskOp::Create, path)?;
        let mut state = self.lock();
        let mut ancestors: Vec<&Path> =
            path.ancestors().filter(|p| !p.as_os_str().is_empty() && *p != Path::new("/")).collect();
        ancestors.reverse();
        for dir in ancestors {
            match state.volatile.get(dir) {
                Some(Entry::Dir) => {}
                Some(Entry::File(_)) => {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is a file", dir.display())))
                }
                None => {
                    state.volatile.insert(dir.to_path_buf(), Entry::Dir);
                    state.changed(dir);
                }
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        let is_root = path == Path::new("/") || path.as_os_str().is_empty();
        if !is_root && state.volatile.get(path) != Some(&Entry::Dir) {
            return Err(not_found(path));
        }
        // Paths order by components, so a directory's descendants are one contiguous range.
        let names = state
            .volatile
            .range(path.to_path_buf()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(path) || is_root)
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        Ok(names) // BTreeMap order: sorted
    }

    fn exists(&self, path: &Path) -> bool {
        self.lock().volatile.contains_key(path)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let existing = self.lock().volatile.get(path).cloned();
        let id = match existing {
            Some(Entry::File(id)) => id,
            Some(Entry::Dir) => {
                return Err(io::Error::new(io::ErrorKind::IsADirectory, format!("{} is a directory", path.display())))
            }
            None if !create => return Err(not_found(path)),
            None => {
                self.check(DiskOp::Create, path)?;
                let mut state = self.lock();
                if let Some(parent) = parent_of(path) {
                    if state.volatile.get(parent) != Some(&Entry::Dir) {
                        return Err(not_found(parent));
                    }
                }
                let id = state.next_file_id;
                state.next_file_id += 1;
                state.files.insert(id, FileData::default());
                state.volatile.insert(path.to_path_buf(), Entry::File(id));
                state.changed(path);
                id
            }
        };
        Ok(Arc::new(MemFile { disk: self.clone(), id, path: path.to_path_buf() }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check(DiskOp::Remove, path)?;
        let mut state = self.lock();
        match state.volatile.get(path) {
            Some(Entry::File(_)) => {
                state.volatile.remove(path);
                state.changed(path);
                Ok(())
            }
            Some(Entry::Dir) => {
                Err(io::Error::new(io::ErrorKind::IsADirectory, format!("{} is a directory", path.display())))
            }
            None => Err(not_found(path)),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check(DiskOp::Remove, path)?;
        let mut state = self.lock();
        if !state.volatile.contains_key(path) {
            return Err(not_found(path));
        }
        state.volatile.retain(|p, _| !p.starts_with(path));
        state.changed(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(DiskOp::Rename, from)?;
        let mut state = self.lock();
        if !state.volatile.contains_key(from) {
            return Err(not_found(from));
        }
        // Paths order component by component, so `from` and everything below it are one range.
        let moved: Vec<(PathBuf, Entry)> = state
            .volatile
            .range(from.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(from))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        let replaced: Vec<PathBuf> = state
            .volatile
            .range(to.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(to))
            .map(|(p, _)| p.clone())
            .collect();
        for path in replaced {
            state.volatile.remove(&path);
            state.changed(&path);
        }
        for (path, entry) in moved {
            state.volatile.remove(&path);
            state.changed(&path);
            let suffix = path.strip_prefix(from).expect("filtered by prefix");
            let target = if suffix.as_os_str().is_empty() { to.to_path_buf() } else { to.join(suffix) };
            state.changed(&target);
            state.volatile.insert(target, entry);
        }
        let observed = state.fault_hook.clone().and_then(|hook| match state.volatile.get(to) {
            Some(Entry::File(id)) => Some((hook, state.files[id].volatile.clone())),
            _ => None,
        });
        drop(state);
        if let Some((hook, content)) = observed {
            hook.renamed(to, &content);
        }
        Ok(())
    }

    /// Makes the directory's direct entries durable as they are now (new, renamed, removed).
    /// Entries below a new subdirectory become durable when that subdirectory is synced.
    fn take_delay(&self) -> std::time::Duration {
        std::mem::take(&mut self.lock().pending_delay)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.check(DiskOp::SyncDir, path)?;
        let mut state = self.lock();
        // What changed in this directory since its last sync becomes durable: entries still
        // there as they are now, entries gone with everything below them.
        let changed = state.unsynced.remove(path).unwrap_or_default();
        for child in changed {
            match state.volatile.get(&child).cloned() {
                Some(entry) => {
                    state.durable.insert(child, entry);
                }
                None => {
                    let below: Vec<PathBuf> = state
                        .durable
                        .range(child.clone()..)
                        .take_while(|(p, _)| p.starts_with(&child))
                        .map(|(p, _)| p.clone())
                        .collect();
                    for p in below {
                        state.durable.remove(&p);
                    }
                }
            }
        }
        Ok(())
    }
}

impl MemFile {
    fn with_data<T>(&self, f: impl FnOnce(&mut FileData) -> T) -> T {
        let mut state = self.disk.lock();
        f(state.files.get_mut(&self.id).expect("open files are kept until a crash"))
    }
}

impl DiskFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.with_data(|d| d.volatile.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.disk.check(DiskOp::Read, &self.path)?;
        let end = offset as usize + buf.len();
        self.with_data(|d| {
            if end > d.volatile.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: read past the end", self.path.display()),
                ));
            }
            buf.copy_from_slice(&d.volatile[offset as usize..end]);
            Ok(())
        })?;
        let hook = self.disk.lock().fault_hook.clone();
        if let Some(hook) = hook {
            hook.corrupt_read(&self.path, offset, buf);
        }
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.disk.check(DiskOp::Write, &self.path)?;
        let end = offset as usize + buf.len();
        self.with_data(|d| {
            d.touch((offset as usize).min(d.volatile.len()));
            if d.volatile.len() < end {
                d.volatile.resize(end, 0);
            }
            d.volatile[offset as usize..end].copy_from_slice(buf);
        });
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.check(DiskOp::Write, &self.path)?;
        self.with_data(|d| {
            d.touch((len as usize).min(d.volatile.len()));
            d.volatile.resize(len as usize, 0);
        });
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.disk.check(DiskOp::Sync, &self.path)?;
        self.with_data(FileData::sync);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn unsynced_data_is_lost_in_a_crash_and_synced_data_survives() {
        let disk = MemDisk::new();
        disk.create_dir_all(&path("/d")).unwrap();
        disk.sync_dir(&path("/")).unwrap();
        let f = disk.open(&path("/d/a"), true).unwrap();
        disk.sync_dir(&path("/d")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync().unwrap();
        f.write_all_at(b" world", 5).unwrap();
        assert_eq!(disk.unsynced_files(), vec![path("/d/a")]);
        disk.crash();
        let f = disk.open(&path("/d/a"), false).unwrap();
        let mut buf = vec![0; f.len().unwrap() as usize];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, b"hello");
    }

    #[test]
    fn a_new_file_vanishes_unless_its_directory_was_synced() {
        let disk = MemDisk::new();
        disk.create_dir_all(&path("/d")).unwrap();
        disk.sync_dir(&path("/")).unwrap();
        let f = disk.open(&path("/d/new"), true).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.sync().unwrap();
        disk.crash();
        assert!(!disk.exists(&path("/d/new")), "file data was synced but its directory entry was not");
    }

    #[test]
    fn a_synced_file_in_a_directory_whose_own_entry_was_never_synced_is_lost() {
        let disk = MemDisk::new();
        disk.create_dir_all(&path("/d/e")).unwrap();
        disk.open(&path("/d/e/f"), true).unwrap().sync().unwrap();
        disk.sync_dir(&path("/d/e")).unwrap();
        disk.sync_dir(&path("/d")).unwrap();
        disk.crash();
        assert!(!disk.exists(&path("/d/e/f")), "/d itself was never synced into /");
    }

    #[test]
    fn rename_and_remove_are_durable_only_after_a_directory_sync() {
        let disk = MemDisk::new();
        disk.create_dir_all(&path("/d")).unwrap();
        disk.sync_dir(&path("/")).unwrap();
        disk.open(&path("/d/a"), true).unwrap().sync().unwrap();
        disk.sync_dir(&path("/d")).unwrap();
        disk.rename(&path("/d/a"), &path("/d/b")).unwrap();
        disk.crash();
        assert_eq!(disk.list_dir(&path("/d")).unwrap(), vec!["a"]);
        disk.rename(&path("/d/a"), &path("/d/b")).unwrap();
        disk.sync_dir(&path("/d")).unwrap();
        disk.remove_file(&path("/d/b")).unwrap();
        disk.crash();
        assert_eq!(disk.list_dir(&path("/d")).unwrap(), vec!["b"]);
    }

    #[test]
    fn crash_with_keeps_what_the_caller_decides() {
        let disk = MemDisk::new();
        disk.create_dir_all(&path("/d")).unwrap();
        disk.sync_dir(&path("/")).unwrap();
        let f = disk.open(&path("/d/a"), true).unwrap();
        disk.sync_dir(&path("/d")).unwrap();
        f.write_all_at(b"0123456789", 0).unwrap();
        disk.crash_with(|_, durable, volatile| {
            assert!(durable.is_empty());
            volatile[..4].to_vec()
        });
        let f = disk.open(&path("/d/a"), false).unwrap();
        assert_eq!(f.len().unwrap(), 4);
    }

    #[derive(Debug)]
    struct FailSyncs;
    impl FaultHook for FailSyncs {
        fn check(&self, op: DiskOp, path: &Path) -> io::Result<()> {
            match op {
                DiskOp::Sync => Err(io::Error::other(format!("EIO on fsync of {}", path.display()))),
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn the_fault_hook_fails_operations() {
        let disk = MemDisk::new();
        disk.create_dir_all(&path("/d")).unwrap();
        let f = disk.open(&path("/d/a"), true).unwrap();
        disk.set_fault_hook(Some(Arc::new(FailSyncs)));
        f.write_all_at(b"x", 0).unwrap();
        assert!(f.sync().is_err());
        disk.set_fault_hook(None);
        assert!(f.sync().is_ok());
    }
}
