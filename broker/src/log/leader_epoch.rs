//! The leader epoch cache (KIP-101, KIP-279): for each leader epoch, the first offset written
//! in it. A follower asks the leader (OffsetForLeaderEpoch) where its last epoch ends and
//! truncates there, instead of trusting its own high watermark.
//!
//! Persisted as Kafka's `leader-epoch-checkpoint`: a version line (`0`), a count line, then one
//! `epoch start_offset` line per entry; replaced atomically on every change (rare: leader
//! changes and truncations).

use super::LogError;
use crate::storage::{self, Disk};
use std::path::{Path, PathBuf};

pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// Kafka's "no epoch" and "no offset" answers.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// (epoch, start offset). Invariant: both strictly increasing.
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// Reads the checkpoint; a missing or unreadable one gives an empty cache (it is derived
    /// data: the epochs are also stamped in every batch).
    pub fn load(disk: &dyn Disk, dir: &Path) -> LeaderEpochCache {
        let path = dir.join(CHECKPOINT_FILE);
        let Ok(bytes) = storage::read_all(disk, &path) else { return LeaderEpochCache::default() };
        match parse(&String::from_utf8_lossy(&bytes)) {
            Some(cache) => cache,
            None => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable leader epoch checkpoint");
                LeaderEpochCache::default()
            }
        }
    }

    pub fn write(&self, disk: &dyn Disk, dir: &Path) -> Result<(), LogError> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, offset) in &self.entries {
            text.push_str(&format!("{epoch} {offset}\n"));
        }
        let path: PathBuf = dir.join(CHECKPOINT_FILE);
        storage::write_atomic(disk, &path, text.as_bytes()).map_err(|source| LogError::Storage { path, source })
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether the cache changed. An
    /// epoch older than the latest is ignored (a stale batch never rewrites history).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(&(latest, _)) if epoch <= latest => false,
            Some(&(_, latest_start)) if start_offset < latest_start => {
                // A newer epoch cannot start before an older one: drop what it overlaps.
                self.entries.retain(|&(_, s)| s < start_offset);
                self.entries.push((epoch, start_offset));
                true
            }
            _ => {
                self.entries.push((epoch, start_offset));
                true
            }
        }
    }

    /// OffsetForLeaderEpoch: the largest epoch `<= requested` and the offset where it ends (the
    /// start of the next epoch, or the log end for the latest), as Kafka answers it.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let Some(&(_, higher_start)) = self.entries.iter().find(|&&(e, _)| e > requested) else {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        };
        match self.entries.iter().rev().find(|&&(e, _)| e <= requested) {
            Some(&(floor, _)) => (floor, higher_start),
            None => (requested, higher_start),
        }
    }

    /// Forgets epochs that start at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, start)| start < end_offset);
        self.entries.len() != before
    }

    /// Forgets epochs wholly below `start_offset` (retention); the epoch that holds it now
    /// starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let covering = self.entries.iter().rposition(|&(_, s)| s <= start_offset);
        match covering {
            Some(i) if i > 0 || self.entries[0].1 < start_offset => {
                self.entries.drain(..i);
                self.entries[0].1 = start_offset;
                true
            }
            _ => false,
        }
    }
}

fn parse(text: &str) -> Option<LeaderEpochCache> {
    let mut lines = text.lines();
    (lines.next()?.trim() == "0").then_some(())?;
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut cache = LeaderEpochCache::default();
    for _ in 0..count {
        let mut parts = lines.next()?.split_whitespace();
        let (epoch, offset): (i32, i64) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
        let increasing = cache.entries.last().is_none_or(|&(e, s)| epoch > e && offset > s);
        if !increasing {
            return None;
        }
        cache.entries.push((epoch, offset));
    }
    Some(cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mem::MemDisk;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        LeaderEpochCache { entries: entries.to_vec() }
    }

    #[test]
    fn end_offsets_follow_kip_279() {
        let c = cache(&[(1, 0), (3, 10), (4, 20)]);
        assert_eq!(c.end_offset_for(4, 25), (4, 25), "the latest epoch ends at the log end");
        assert_eq!(c.end_offset_for(3, 25), (3, 20));
        assert_eq!(c.end_offset_for(2, 25), (1, 10), "an epoch this log never saw: the one before it");
        assert_eq!(c.end_offset_for(0, 25), (0, 0), "older than every epoch: ends where the first starts");
        assert_eq!(c.end_offset_for(5, 25), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, 25), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
    }

    #[test]
    fn stale_epochs_are_ignored_and_truncation_trims_both_ends() {
        let mut c = cache(&[(1, 0), (3, 10)]);
        assert!(!c.assign(2, 15));
        assert!(c.assign(4, 20));
        assert!(c.truncate_from_end(15));
        assert_eq!(c.entries(), &[(1, 0), (3, 10)]);
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[(3, 12)]);
    }

    #[test]
    fn the_checkpoint_round_trips_and_a_bad_one_is_ignored() {
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("/p")).unwrap();
        let c = cache(&[(0, 0), (2, 7)]);
        c.write(&disk, Path::new("/p")).unwrap();
        assert_eq!(LeaderEpochCache::load(&disk, Path::new("/p")), c);
        storage::write_atomic(&disk, &Path::new("/p").join(CHECKPOINT_FILE), b"0\n2\n5 9\n3 12\n").unwrap();
        assert_eq!(LeaderEpochCache::load(&disk, Path::new("/p")), LeaderEpochCache::default());
    }
}
