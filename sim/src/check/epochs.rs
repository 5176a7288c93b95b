//! `epoch-history`: a node's leader-epoch history after a restart continues, consistently, the
//! history it held before.
//!
//! The check does not use the broker's epoch code. It reads what the node persisted: just
//! before a node restarts, the harness reads every `leader-epoch-checkpoint` on its disk with
//! its own parser of Kafka's format ([`parse_checkpoint`]); the first checkpoint the restarted
//! node writes into that directory (the rewrite at the end of log recovery, seen by the disk
//! when it is renamed into place) must be a prefix of it. Recovery may only cut the history
//! where the recovered log ends (entries whose start is past it go); it may never drop, add or
//! move an entry below that point. A history the old checkpoint could not hold (a new entry,
//! a lost one, a changed start offset) is a violation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// `(leader epoch, start offset)` entries, in file order.
pub type EpochHistory = Vec<(i32, i64)>;

/// Kafka's checkpoint text: `0`, a count, then `epoch start_offset` per line. `None` if the
/// text is not that (the check then has nothing to compare against).
pub fn parse_checkpoint(text: &str) -> Option<EpochHistory> {
    let mut lines = text.lines().map(str::trim);
    if lines.next()? != "0" {
        return None;
    }
    let count: usize = lines.next()?.parse().ok()?;
    let mut entries = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut fields = lines.next()?.split_whitespace();
        entries.push((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?));
    }
    Some(entries)
}

/// Whether `after` may follow `before` across a restart: a prefix of it.
pub fn continues(before: &[(i32, i64)], after: &[(i32, i64)]) -> bool {
    after.len() <= before.len() && before[..after.len()] == *after
}

/// One node's restarts, as its disk saw them.
#[derive(Debug, Default)]
pub struct EpochWatch {
    /// Per partition directory: the history on disk when the node last restarted, until the
    /// restarted node writes its first checkpoint there.
    awaiting: BTreeMap<PathBuf, EpochHistory>,
    /// Directories whose checkpoint the checker could not parse at the restart: not judged.
    unreadable: BTreeSet<PathBuf>,
    /// What was found, for the run's report.
    pub violations: Vec<String>,
}

impl EpochWatch {
    /// The node is about to restart; `checkpoints` is what its disk holds now, per directory.
    pub fn restarting(&mut self, checkpoints: Vec<(PathBuf, String)>) {
        self.awaiting.clear();
        for (dir, text) in checkpoints {
            match parse_checkpoint(&text) {
                Some(history) => {
                    self.awaiting.insert(dir, history);
                }
                None => {
                    self.unreadable.insert(dir);
                }
            }
        }
    }

    /// A file was renamed into place: the first checkpoint of a directory after a restart is
    /// judged against the one before.
    pub fn renamed(&mut self, path: &Path, content: &[u8]) {
        if path.file_name().and_then(|n| n.to_str()) != Some(CHECKPOINT_FILE) {
            return;
        }
        let Some(dir) = path.parent() else { return };
        let Some(before) = self.awaiting.remove(dir) else { return };
        let after = std::str::from_utf8(content).ok().and_then(parse_checkpoint);
        match after {
            Some(after) if continues(&before, &after) => {}
            Some(after) => self.violations.push(format!(
                "{}: after the restart the epoch history is {after:?}, which does not continue {before:?}",
                dir.display()
            )),
            None => self.violations.push(format!(
                "{}: after the restart the node wrote an unreadable checkpoint {:?} (before: {before:?})",
                dir.display(),
                String::from_utf8_lossy(content)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(entries: &[(i32, i64)]) -> String {
        let mut s = format!("0\n{}\n", entries.len());
        for (e, o) in entries {
            s.push_str(&format!("{e} {o}\n"));
        }
        s
    }

    fn watch_restart(before: &[(i32, i64)], after: &[(i32, i64)]) -> Vec<String> {
        let mut watch = EpochWatch::default();
        watch.restarting(vec![(PathBuf::from("/data/t-0"), text(before))]);
        watch.renamed(Path::new("/data/t-0/leader-epoch-checkpoint"), text(after).as_bytes());
        // Only the first write after a restart is judged.
        watch.renamed(Path::new("/data/t-0/leader-epoch-checkpoint"), b"0\n0\n");
        watch.violations
    }

    #[test]
    fn a_history_cut_where_the_recovered_log_ends_continues_the_old_one() {
        assert!(watch_restart(&[(0, 0), (2, 50), (5, 120)], &[(0, 0), (2, 50), (5, 120)]).is_empty());
        assert!(watch_restart(&[(0, 0), (2, 50), (5, 120)], &[(0, 0), (2, 50)]).is_empty());
        assert!(watch_restart(&[(0, 0)], &[]).is_empty());
    }

    #[test]
    fn a_lost_added_or_moved_entry_is_a_violation() {
        let before = [(0, 0), (2, 50), (5, 120)];
        assert_eq!(watch_restart(&before, &[(5, 120)]).len(), 1, "history before the newest epoch lost");
        assert_eq!(watch_restart(&before, &[(0, 0), (5, 120)]).len(), 1, "an epoch dropped from the middle");
        assert_eq!(watch_restart(&before, &[(0, 0), (2, 60), (5, 120)]).len(), 1, "a start offset moved");
        assert_eq!(watch_restart(&before, &[(0, 0), (2, 50), (5, 120), (6, 130)]).len(), 1, "an epoch invented");
        let mut watch = EpochWatch::default();
        watch.restarting(vec![(PathBuf::from("/d"), text(&before))]);
        watch.renamed(Path::new("/d/leader-epoch-checkpoint"), b"garbage");
        assert_eq!(watch.violations.len(), 1, "an unreadable rewrite");
    }

    #[test]
    fn other_files_and_directories_without_a_restart_are_not_judged() {
        let mut watch = EpochWatch::default();
        watch.renamed(Path::new("/d/leader-epoch-checkpoint"), b"garbage");
        watch.restarting(vec![(PathBuf::from("/d"), text(&[(1, 0)]))]);
        watch.renamed(Path::new("/d/00000000000000000000.snapshot"), b"anything");
        watch.renamed(Path::new("/e/leader-epoch-checkpoint"), b"garbage");
        assert!(watch.violations.is_empty());
    }

    #[test]
    fn the_parser_reads_kafkas_format_and_nothing_else() {
        assert_eq!(parse_checkpoint("0\n2\n1 0\n3 10\n"), Some(vec![(1, 0), (3, 10)]));
        assert_eq!(parse_checkpoint("0\n2\n1 0\n"), None);
        assert_eq!(parse_checkpoint("1\n0\n"), None);
    }
}
