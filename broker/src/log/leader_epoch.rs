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
    /// Reads the checkpoint. `Ok(None)`: there is none. `Err`: it exists but cannot be used
    /// (names the file, line and reason); the caller rebuilds the history from the epochs
    /// stamped in the log's batches instead of losing it.
    pub fn load(disk: &dyn Disk, dir: &Path) -> Result<Option<LeaderEpochCache>, String> {
        let path = dir.join(CHECKPOINT_FILE);
        if !disk.exists(&path) {
            return Ok(None);
        }
        let bytes = storage::read_all_stable(disk, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| format!("{}: not text: {e}", path.display()))?;
        let mut cache = parse(text).map_err(|e| format!("{}: {e}", path.display()))?;
        if crate::planted::active(crate::planted::Bug::LoseEpochHistory) {
            cache.entries.drain(..cache.entries.len().saturating_sub(1));
        }
        Ok(Some(cache))
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
    /// epoch older than the latest is ignored (a stale batch never rewrites history). A newer
    /// epoch replaces every entry starting at or after its start, as Kafka's
    /// LeaderEpochFileCache does: two elections with no append between them leave one entry,
    /// the newer, at that offset.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        self.entries.retain(|&(_, s)| s < start_offset);
        self.entries.push((epoch, start_offset));
        true
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

/// Kafka's checkpoint format: `0`, the entry count, then `epoch start_offset` per line, both
/// strictly increasing except that a later entry may replace an earlier one at the same start
/// offset (files written before that rule was enforced hold such pairs; the later epoch is the
/// one in force, exactly what [`LeaderEpochCache::assign`] keeps). Anything else is an error
/// naming the line.
fn parse(text: &str) -> Result<LeaderEpochCache, String> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let mut next = |what: &str| lines.next().ok_or_else(|| format!("ends before {what}"));
    let (line, version) = next("the version line")?;
    if version != "0" {
        return Err(format!("line {line}: unknown version `{version}`"));
    }
    let (line, count) = next("the count line")?;
    let count: usize = count.parse().map_err(|_| format!("line {line}: bad entry count `{count}`"))?;
    let mut cache = LeaderEpochCache::default();
    for n in 0..count {
        let (line, entry) = next(&format!("entry {} of {count}", n + 1))?;
        let mut fields = entry.split_whitespace();
        let parsed = match (fields.next(), fields.next(), fields.next()) {
            (Some(e), Some(o), None) => e.parse::<i32>().ok().zip(o.parse::<i64>().ok()),
            _ => None,
        };
        let (epoch, offset) =
            parsed.ok_or_else(|| format!("line {line}: expected `epoch start_offset`, got `{entry}`"))?;
        let fits = epoch >= 0 && offset >= 0 && cache.entries.last().is_none_or(|&(e, s)| epoch > e && offset >= s);
        if !fits {
            return Err(format!("line {line}: entry `{entry}` does not follow the one before it"));
        }
        cache.assign(epoch, offset);
    }
    if let Some((line, extra)) = lines.find(|(_, l)| !l.is_empty()) {
        return Err(format!("line {line}: unexpected `{extra}` after {count} entries"));
    }
    Ok(cache)
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
    fn the_checkpoint_round_trips_and_a_bad_one_is_an_error_naming_file_and_line() {
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("/p")).unwrap();
        assert_eq!(LeaderEpochCache::load(&disk, Path::new("/p")), Ok(None));
        let c = cache(&[(0, 0), (2, 7)]);
        c.write(&disk, Path::new("/p")).unwrap();
        assert_eq!(LeaderEpochCache::load(&disk, Path::new("/p")), Ok(Some(c)));
        for (content, line) in [
            (&b"0\n2\n5 9\n3 12\n"[..], "line 4"),
            (b"0\n2\n5 9\n", "ends before entry 2 of 2"),
            (b"1\n0\n", "line 1"),
            (b"0\n1\n5 x\n", "line 3"),
            (b"0\n1\n5 9\n6 10\n", "line 4: unexpected"),
        ] {
            storage::write_atomic(&disk, &Path::new("/p").join(CHECKPOINT_FILE), content).unwrap();
            let error = LeaderEpochCache::load(&disk, Path::new("/p")).unwrap_err();
            assert!(error.contains("/p/leader-epoch-checkpoint") && error.contains(line), "{error}");
        }
    }

    #[test]
    fn two_elections_with_no_append_between_leave_one_entry_and_the_file_survives_a_reload() {
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("/p")).unwrap();
        let mut c = cache(&[(0, 0), (2, 7)]);
        assert!(c.assign(3, 12));
        assert!(c.assign(4, 12), "a newer epoch at the same start replaces the older");
        assert_eq!(c.entries(), &[(0, 0), (2, 7), (4, 12)]);
        c.write(&disk, Path::new("/p")).unwrap();
        assert_eq!(LeaderEpochCache::load(&disk, Path::new("/p")), Ok(Some(c.clone())));
        // A file written by the old writer (two epochs at offset 12) reads as the newer one.
        storage::write_atomic(&disk, &Path::new("/p").join(CHECKPOINT_FILE), b"0\n4\n0 0\n2 7\n3 12\n4 12\n").unwrap();
        assert_eq!(LeaderEpochCache::load(&disk, Path::new("/p")), Ok(Some(c)));
    }
}
