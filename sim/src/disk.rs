//! The simulated disk: the broker's `MemDisk` (durable vs volatile images, directory entries
//! durable only after a directory sync) plus what the seed decides:
//!
//! - **power loss** ([`SimDisk::power_loss`]): unsynced data is lost, except that the seed may
//!   persist an arbitrary subset of unsynced sectors of each file and may tear the last write
//!   (some sectors new, some old, the length anywhere between the durable and volatile length);
//! - **faults** while running, switched on per node by the nemesis: bit flips on read
//!   (corruption that checksums must catch), EIO on write and fsync, ENOSPC on write.
//!
//! Every decision comes from the disk's own random stream, so turning disk faults on or off does
//! not reshuffle the workload or the network faults.

use crate::check::epochs::{EpochWatch, CHECKPOINT_FILE};
use broker::storage::mem::{DiskOp, FaultHook, MemDisk};
use broker::storage::Disk;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Bytes of a disk sector: the unit a torn write is made of.
pub const SECTOR_BYTES: usize = 512;

/// Which faults are on, and how often (probability per operation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DiskFaults {
    /// A read returns one flipped bit.
    pub corrupt_read: f64,
    /// A write or fsync fails with EIO.
    pub io_error: f64,
    /// A write fails with ENOSPC.
    pub no_space: f64,
    /// Each operation takes up to this long (uniform), reported as latency to wait out.
    pub slow_ms_max: u64,
}

impl DiskFaults {
    pub fn is_off(&self) -> bool {
        self.corrupt_read == 0.0 && self.io_error == 0.0 && self.no_space == 0.0 && self.slow_ms_max == 0
    }
}

/// What the disk did, for the report's fault timeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskFaultCounts {
    pub corrupted_reads: u64,
    pub io_errors: u64,
    pub no_space_errors: u64,
    pub torn_files: u64,
}

#[derive(Debug)]
struct Hook {
    state: Mutex<HookState>,
}

#[derive(Debug)]
struct HookState {
    rng: ChaCha8Rng,
    faults: DiskFaults,
    counts: DiskFaultCounts,
    /// The epoch-history check's view of this node's restarts.
    epochs: EpochWatch,
}

impl FaultHook for Hook {
    fn renamed(&self, to: &Path, content: &[u8]) {
        self.state.lock().expect("disk hook lock").epochs.renamed(to, content);
    }

    fn check(&self, op: DiskOp, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock().expect("disk hook lock");
        let faults = state.faults;
        let data_op = matches!(op, DiskOp::Write | DiskOp::Sync);
        if data_op && faults.io_error > 0.0 && state.rng.gen_bool(faults.io_error) {
            state.counts.io_errors += 1;
            return Err(io::Error::other(format!("simulated EIO on {op:?} of {}", path.display())));
        }
        if op == DiskOp::Write && faults.no_space > 0.0 && state.rng.gen_bool(faults.no_space) {
            state.counts.no_space_errors += 1;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("simulated ENOSPC writing {}", path.display()),
            ));
        }
        Ok(())
    }

    fn latency(&self, _op: DiskOp) -> std::time::Duration {
        let mut state = self.state.lock().expect("disk hook lock");
        let max = state.faults.slow_ms_max;
        if max == 0 {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_micros(state.rng.gen_range(0..=max * 1000))
    }

    fn corrupt_read(&self, _path: &Path, _offset: u64, buf: &mut [u8]) {
        let mut state = self.state.lock().expect("disk hook lock");
        let probability = state.faults.corrupt_read;
        if buf.is_empty() || probability == 0.0 || !state.rng.gen_bool(probability) {
            return;
        }
        let at = state.rng.gen_range(0..buf.len());
        let bit = state.rng.gen_range(0..8);
        buf[at] ^= 1 << bit;
        state.counts.corrupted_reads += 1;
    }
}

/// One node's disk.
#[derive(Clone, Debug)]
pub struct SimDisk {
    pub disk: MemDisk,
    hook: Arc<Hook>,
}

impl SimDisk {
    pub fn new(seed: u64) -> SimDisk {
        let hook = Arc::new(Hook {
            state: Mutex::new(HookState {
                rng: ChaCha8Rng::seed_from_u64(seed),
                faults: DiskFaults::default(),
                counts: DiskFaultCounts::default(),
                epochs: EpochWatch::default(),
            }),
        });
        let disk = MemDisk::new();
        disk.set_fault_hook(Some(hook.clone()));
        SimDisk { disk, hook }
    }

    pub fn set_faults(&self, faults: DiskFaults) {
        self.hook.state.lock().expect("disk hook lock").faults = faults;
    }

    pub fn counts(&self) -> DiskFaultCounts {
        self.hook.state.lock().expect("disk hook lock").counts.clone()
    }

    /// The node is about to restart: the epoch-history check takes the leader-epoch checkpoints
    /// under `data_dir` as they are now (read with faults suspended: this is the checker's
    /// read, not the node's).
    pub fn before_restart(&self, data_dir: &Path) {
        let faults = std::mem::take(&mut self.hook.state.lock().expect("disk hook lock").faults);
        let mut checkpoints = Vec::new();
        for name in self.disk.list_dir(data_dir).unwrap_or_default() {
            let dir: PathBuf = data_dir.join(name);
            let path = dir.join(CHECKPOINT_FILE);
            if self.disk.exists(&path) {
                if let Ok(bytes) = broker::storage::read_all(&self.disk, &path) {
                    checkpoints.push((dir, String::from_utf8_lossy(&bytes).into_owned()));
                }
            }
        }
        let mut state = self.hook.state.lock().expect("disk hook lock");
        state.faults = faults;
        state.epochs.restarting(checkpoints);
    }

    /// What the epoch-history check found on this disk.
    pub fn epoch_history_violations(&self) -> Vec<String> {
        self.hook.state.lock().expect("disk hook lock").epochs.violations.clone()
    }

    /// The disk is swapped for an empty one (the node must be down).
    pub fn wipe(&self) {
        self.disk.wipe();
    }

    /// Power loss. With `keep_unsynced`, the seed picks, per file with unsynced changes, which
    /// unsynced sectors reached the platter and where the file ends; otherwise exactly the
    /// durable image survives.
    pub fn power_loss(&self, keep_unsynced: bool) {
        if !keep_unsynced {
            self.disk.crash();
            return;
        }
        let mut state = self.hook.state.lock().expect("disk hook lock");
        let HookState { rng, counts, .. } = &mut *state;
        self.disk.crash_with(|_, durable, volatile| {
            let survived = tear(rng, durable, volatile);
            if survived != durable && survived != volatile {
                counts.torn_files += 1;
            }
            survived
        });
    }
}

/// What a file holds after a power loss when some unsynced sectors made it: each sector that
/// differs between the images is new or old by a coin flip, and the length lands on a sector
/// boundary between the two lengths (or exactly at either end).
pub fn tear(rng: &mut ChaCha8Rng, durable: &[u8], volatile: &[u8]) -> Vec<u8> {
    let longest = durable.len().max(volatile.len());
    let mut out = vec![0u8; longest];
    out[..durable.len()].copy_from_slice(durable);
    let sectors = longest.div_ceil(SECTOR_BYTES);
    for sector in 0..sectors {
        let start = sector * SECTOR_BYTES;
        let end = (start + SECTOR_BYTES).min(longest);
        let old = &durable[start.min(durable.len())..end.min(durable.len())];
        let new = &volatile[start.min(volatile.len())..end.min(volatile.len())];
        if old != new && rng.gen_bool(0.5) {
            out[start..end].fill(0);
            out[start..start + new.len()].copy_from_slice(new);
        }
    }
    let (low, high) = (durable.len().min(volatile.len()), longest);
    let len = match rng.gen_range(0..4) {
        0 => durable.len(),
        1 => volatile.len(),
        _ if high > low => (low + rng.gen_range(0..=(high - low) / SECTOR_BYTES) * SECTOR_BYTES).min(high),
        _ => high,
    };
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker::storage::Disk;

    #[test]
    fn a_torn_file_mixes_old_and_new_sectors_and_never_invents_bytes() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let durable = vec![1u8; 4 * SECTOR_BYTES];
        let volatile = vec![2u8; 6 * SECTOR_BYTES];
        let mut saw_mix = false;
        for _ in 0..50 {
            let out = tear(&mut rng, &durable, &volatile);
            assert!(out.len() >= durable.len().min(volatile.len()) && out.len() <= volatile.len());
            assert_eq!(out.len() % SECTOR_BYTES, 0);
            for chunk in out.chunks(SECTOR_BYTES) {
                assert!(chunk.iter().all(|&b| b == chunk[0]) && (chunk[0] == 1 || chunk[0] == 2 || chunk[0] == 0));
            }
            saw_mix |= out.chunks(SECTOR_BYTES).any(|c| c[0] == 1) && out.chunks(SECTOR_BYTES).any(|c| c[0] == 2);
        }
        assert!(saw_mix, "some power losses tear files");
    }

    #[test]
    fn the_same_seed_tears_the_same_way() {
        let run = |seed| {
            let disk = SimDisk::new(seed);
            disk.disk.create_dir_all(Path::new("/d")).unwrap();
            disk.disk.sync_dir(Path::new("/")).unwrap();
            let f = disk.disk.open(Path::new("/d/f"), true).unwrap();
            disk.disk.sync_dir(Path::new("/d")).unwrap();
            f.write_all_at(&vec![9u8; 10 * SECTOR_BYTES], 0).unwrap();
            disk.power_loss(true);
            let f = disk.disk.open(Path::new("/d/f"), false).unwrap();
            let mut buf = vec![0; f.len().unwrap() as usize];
            f.read_exact_at(&mut buf, 0).unwrap();
            buf
        };
        assert_eq!(run(3), run(3));
    }

    #[test]
    fn a_slow_disk_reports_latency_to_wait_out_and_a_normal_one_none() {
        let disk = SimDisk::new(9);
        disk.disk.create_dir_all(Path::new("/d")).unwrap();
        let f = disk.disk.open(Path::new("/d/f"), true).unwrap();
        f.write_all_at(&[1; 8], 0).unwrap();
        assert_eq!(disk.disk.take_delay(), std::time::Duration::ZERO);
        disk.set_faults(DiskFaults { slow_ms_max: 20, ..DiskFaults::default() });
        for _ in 0..10 {
            f.write_all_at(&[1; 8], 0).unwrap();
            f.sync().unwrap();
        }
        let delay = disk.disk.take_delay();
        assert!(delay > std::time::Duration::ZERO && delay <= std::time::Duration::from_millis(20 * 20), "{delay:?}");
        assert_eq!(disk.disk.take_delay(), std::time::Duration::ZERO, "taken once");
    }

    #[test]
    fn faults_fail_operations_and_flip_bits_when_switched_on() {
        let disk = SimDisk::new(1);
        disk.disk.create_dir_all(Path::new("/d")).unwrap();
        let f = disk.disk.open(Path::new("/d/f"), true).unwrap();
        f.write_all_at(&[0u8; 64], 0).unwrap();
        disk.set_faults(DiskFaults { corrupt_read: 1.0, ..DiskFaults::default() });
        let mut buf = [0u8; 64];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf.iter().map(|b| b.count_ones()).sum::<u32>(), 1, "exactly one bit flipped");
        disk.set_faults(DiskFaults { io_error: 1.0, ..DiskFaults::default() });
        assert!(f.sync().is_err());
        disk.set_faults(DiskFaults::default());
        assert!(f.sync().is_ok());
        assert_eq!(disk.counts().corrupted_reads, 1);
        assert_eq!(disk.counts().io_errors, 1);
    }
}
