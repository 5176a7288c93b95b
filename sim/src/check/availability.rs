//! Availability: the cluster must not stay stuck once the faults allow progress. These are
//! liveness invariants (`verdict::LIVENESS_INVARIANTS`): breaking one loses nothing, but a
//! user would see a partition that never recovers.
//!
//! | checker | must hold |
//! | --- | --- |
//! | `catch-up-after-heal` | by the end of the heal phase every assigned replica of every partition is in its leader's ISR and at the leader's log end |

use super::Violation;
use broker::replication::ReplicaState;
use std::collections::BTreeMap;

/// One partition as its replicas reported it at one instant (from their observation taps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSnapshot {
    pub partition: i32,
    /// The assignment, from the controller's image.
    pub replicas: Vec<i32>,
    /// What each replica that is up reported, by broker id.
    pub reported: BTreeMap<i32, ReplicaState>,
}

impl PartitionSnapshot {
    /// The replica claiming leadership at the highest leader epoch, if any.
    fn leader(&self) -> Option<(i32, &ReplicaState)> {
        self.reported.iter().filter(|(_, s)| s.leader).max_by_key(|(_, s)| s.leader_epoch).map(|(&id, s)| (id, s))
    }

    /// Why the partition has not caught up, or `None` if every assigned replica is in the
    /// leader's ISR at the leader's log end.
    pub fn not_caught_up(&self) -> Option<(Vec<i64>, String)> {
        let Some((leader, state)) = self.leader() else {
            return Some((vec![], "no replica leads it".to_string()));
        };
        let end = state.log_end_offset;
        let mut behind = Vec::new();
        let mut offsets = Vec::new();
        for &replica in &self.replicas {
            let log_end = self.reported.get(&replica).map(|s| s.log_end_offset);
            let in_isr = state.isr.contains(&replica);
            if in_isr && log_end == Some(end) {
                continue;
            }
            let at = log_end.map_or("down".to_string(), |o| format!("at offset {o} of {end}"));
            let isr = if in_isr { "in the ISR" } else { "outside the ISR" };
            behind.push(format!("broker-{replica} {at}, {isr}"));
            offsets.push(log_end.unwrap_or(-1));
        }
        if behind.is_empty() {
            return None;
        }
        offsets.push(end);
        Some((offsets, format!("{} (leader broker-{leader}, ISR {:?})", behind.join("; "), state.isr)))
    }
}

/// `catch-up-after-heal`, on the snapshot taken when the heal phase ended (after waiting for
/// convergence until then).
pub fn catch_up_after_heal(snapshots: &[PartitionSnapshot], heal_s: u64) -> Vec<Violation> {
    snapshots
        .iter()
        .filter_map(|s| {
            let (offsets, why) = s.not_caught_up()?;
            Some(Violation {
                invariant: "catch-up-after-heal",
                partition: s.partition,
                offsets,
                values: vec![],
                operations: vec![],
                detail: format!("{heal_s} s after the faults ended, partition {}: {why}", s.partition),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader: bool, isr: &[i32], log_end: i64) -> ReplicaState {
        ReplicaState {
            topic_id: 7,
            partition: 0,
            leader,
            leader_epoch: 3,
            isr: isr.to_vec(),
            min_insync_replicas: 2,
            log_start_offset: 0,
            high_watermark: log_end.min(318),
            log_end_offset: log_end,
        }
    }

    fn snapshot(reported: &[(i32, ReplicaState)]) -> PartitionSnapshot {
        PartitionSnapshot { partition: 0, replicas: vec![1, 2, 3], reported: reported.iter().cloned().collect() }
    }

    /// The run that once passed: a follower stuck at offset 318 of 1,598, never back in the ISR.
    #[test]
    fn a_follower_left_behind_after_the_heal_is_caught() {
        let stuck = snapshot(&[
            (1, state(true, &[1, 2], 1598)),
            (2, state(false, &[1, 2], 1598)),
            (3, state(false, &[1, 2], 318)),
        ]);
        let found = catch_up_after_heal(&[stuck], 30);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].invariant, "catch-up-after-heal");
        assert!(found[0].detail.contains("broker-3 at offset 318 of 1598, outside the ISR"), "{}", found[0].detail);
        let leaderless = snapshot(&[(2, state(false, &[1, 2, 3], 10)), (3, state(false, &[1, 2, 3], 10))]);
        assert!(catch_up_after_heal(&[leaderless], 30)[0].detail.contains("no replica leads it"));
        let down = snapshot(&[(1, state(true, &[1, 2, 3], 10)), (2, state(false, &[1, 2, 3], 10))]);
        assert!(catch_up_after_heal(&[down], 30)[0].detail.contains("broker-3 down, in the ISR"));
    }

    /// Near miss: every replica in the ISR at the leader's end passes, whatever the HW says.
    #[test]
    fn every_replica_in_the_isr_at_the_log_end_passes() {
        let caught_up = snapshot(&[
            (1, state(true, &[1, 2, 3], 1598)),
            (2, state(false, &[1, 2, 3], 1598)),
            (3, state(false, &[1, 2], 1598)),
        ]);
        assert_eq!(catch_up_after_heal(&[caught_up], 30), vec![]);
    }
}
