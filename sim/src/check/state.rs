//! State checkers: fed every replica state change as it happened (see
//! [`crate::observation`]), plus the simulator's own record of which node went down when. They
//! never read a flag a broker sets about itself.
//!
//! | checker | must hold |
//! | --- | --- |
//! | `hw-bounded` | per replica, log start <= HW <= log end; a leader's HW is not above the log end of any replica that both it and the replica count in the ISR at that epoch |
//! | `single-leader` | at no instant do two running nodes lead one partition at the same leader epoch |
//! | `epoch-monotonic` | a node's leader epoch for a partition never goes back, restarts included |
//! | `no-truncation-below-hw` | within one process lifetime, a replica's log end never drops below a HW it showed earlier |
//! | `isr-enforced` | when an acks=all write is acknowledged, at least `min.insync.replicas` replicas hold it (judged from their log ends at that instant, not from the broker's ISR) |

use super::Violation;
use crate::history::History;
use crate::observation::{NodeRef, StateEvent};
use broker::replication::ReplicaState;
use std::collections::{BTreeMap, BTreeSet};

/// A partition: (topic id, index). Topic ids keep a deleted and re-created topic apart.
type PartitionKey = (u128, i32);

fn violation(invariant: &'static str, partition: i32, offsets: Vec<i64>, detail: String) -> Violation {
    Violation { invariant, partition, offsets, values: vec![], operations: vec![], detail }
}

/// What the state checkers remember between events.
#[derive(Debug, Default)]
pub struct StateChecker {
    /// Each running node's replicas as they last changed.
    current: BTreeMap<NodeRef, BTreeMap<PartitionKey, ReplicaState>>,
    /// Each node's incarnation as of its latest event.
    incarnations: BTreeMap<NodeRef, u32>,
    /// The largest leader epoch a node has shown per partition (restarts included).
    epochs: BTreeMap<(NodeRef, PartitionKey), i32>,
    /// The largest HW a node has shown per partition in its current incarnation.
    high_watermarks: BTreeMap<(NodeRef, PartitionKey), i64>,
    /// Per partition and node, its log end over time: (at_ns, log end), one entry per change.
    log_ends: BTreeMap<PartitionKey, BTreeMap<NodeRef, Vec<(u64, i64)>>>,
    /// Violations already reported (each once).
    reported: BTreeSet<String>,
}

impl StateChecker {
    /// Takes one event (in time order) and returns the violations it shows.
    pub fn apply(&mut self, event: &StateEvent) -> Vec<Violation> {
        let mut found = Vec::new();
        match event {
            StateEvent::Down { node, .. } => {
                self.current.remove(node);
            }
            StateEvent::Replica { at_ns, node, incarnation, state } => {
                let key = (state.topic_id, state.partition);
                if self.incarnations.insert(*node, *incarnation) != Some(*incarnation) {
                    // A new process: what the old one showed binds it no longer (epochs aside).
                    self.current.remove(node);
                    self.high_watermarks.retain(|(n, _), _| n != node);
                }
                found.extend(self.check_replica(*node, key, state));
                self.current.entry(*node).or_default().insert(key, state.clone());
                found.extend(self.check_partition(key));
                let timeline = self.log_ends.entry(key).or_default().entry(*node).or_default();
                if timeline.last().is_none_or(|&(_, end)| end != state.log_end_offset) {
                    timeline.push((*at_ns, state.log_end_offset));
                }
            }
        }
        found.retain(|v| self.reported.insert(format!("{} {}", v.invariant, v.detail)));
        found
    }

    /// hw-bounded (one replica), epoch-monotonic and no-truncation-below-hw.
    fn check_replica(&mut self, node: NodeRef, key: PartitionKey, state: &ReplicaState) -> Vec<Violation> {
        let mut found = Vec::new();
        let at = format!("{node} partition {}", state.partition);
        let (start, hw, end) = (state.log_start_offset, state.high_watermark, state.log_end_offset);
        if !(start <= hw && hw <= end) {
            let detail = format!("{at}: log start {start}, HW {hw}, log end {end}");
            found.push(violation("hw-bounded", state.partition, vec![start, hw, end], detail));
        }
        let epoch = self.epochs.entry((node, key)).or_insert(state.leader_epoch);
        if state.leader_epoch < *epoch {
            let detail = format!("{at}: leader epoch went from {epoch} to {}", state.leader_epoch);
            found.push(violation("epoch-monotonic", state.partition, vec![], detail));
        }
        *epoch = (*epoch).max(state.leader_epoch);
        let highest = self.high_watermarks.entry((node, key)).or_insert(i64::MIN);
        if end < *highest {
            let detail = format!("{at}: log end {end} is below the HW {highest} it showed earlier in this process");
            found.push(violation("no-truncation-below-hw", state.partition, vec![end, *highest], detail));
        }
        *highest = (*highest).max(hw);
        found
    }

    /// single-leader and hw-bounded across the running replicas of one partition.
    fn check_partition(&self, key: PartitionKey) -> Vec<Violation> {
        let replicas: Vec<(NodeRef, &ReplicaState)> =
            self.current.iter().filter_map(|(node, states)| Some((*node, states.get(&key)?))).collect();
        let mut found = Vec::new();
        for (i, &(leader_node, leader)) in replicas.iter().enumerate() {
            if !leader.leader {
                continue;
            }
            for &(other_node, other) in &replicas[i + 1..] {
                if other.leader && other.leader_epoch == leader.leader_epoch {
                    let detail = format!(
                        "partition {}: {leader_node} and {other_node} both lead at epoch {}",
                        key.1, leader.leader_epoch
                    );
                    found.push(violation("single-leader", key.1, vec![], detail));
                }
            }
            for &(member_node, member) in &replicas {
                let Some(member_id) = member_node.broker_id() else { continue };
                let in_isr = leader.isr.contains(&member_id) && member.isr.contains(&member_id);
                let same_epoch = !member.leader && member.leader_epoch == leader.leader_epoch;
                if in_isr && same_epoch && leader.high_watermark > member.log_end_offset {
                    let detail = format!(
                        "partition {}: leader {leader_node} has HW {} but ISR member {member_node} ends at {}",
                        key.1, leader.high_watermark, member.log_end_offset
                    );
                    found.push(violation(
                        "hw-bounded",
                        key.1,
                        vec![leader.high_watermark, member.log_end_offset],
                        detail,
                    ));
                }
            }
        }
        found
    }

    /// isr-enforced over a finished run: every acks=all acknowledgement in `history` (for the
    /// topic with id `topic_id`) came when at least `min_insync_replicas` nodes' logs held the
    /// record (their log end was past its offset at the instant the client got the answer).
    pub fn check_acks(&self, history: &History, topic_id: u128, min_insync_replicas: i32) -> Vec<Violation> {
        let mut found = Vec::new();
        for (i, operation, partition, value, offset) in history.acknowledged_sends() {
            let holders = self.holders((topic_id, partition), offset, operation.completed_ns);
            if (holders.len() as i32) < min_insync_replicas {
                found.push(Violation {
                    invariant: "isr-enforced",
                    partition,
                    offsets: vec![offset],
                    values: vec![value],
                    operations: vec![i],
                    detail: format!(
                        "{value} was acknowledged at offset {offset} of partition {partition} when only {holders:?} held it; \
                         min.insync.replicas is {min_insync_replicas}"
                    ),
                });
            }
        }
        found
    }

    /// The nodes whose log end was past `offset` at `at_ns` (as of their last change by then).
    fn holders(&self, key: PartitionKey, offset: i64, at_ns: u64) -> Vec<NodeRef> {
        let Some(nodes) = self.log_ends.get(&key) else { return Vec::new() };
        nodes
            .iter()
            .filter(|(_, timeline)| {
                let seen = timeline.partition_point(|&(t, _)| t <= at_ns);
                seen > 0 && timeline[seen - 1].1 > offset
            })
            .map(|(node, _)| *node)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! Each state check failing on hand-built events, and a near miss that passes.
    use super::*;
    use crate::history::{Op, Operation, Outcome, Process, Value};

    const TOPIC: u128 = 7;

    fn state(leader: bool, epoch: i32, isr: &[i32], hw: i64, leo: i64) -> ReplicaState {
        ReplicaState {
            topic_id: TOPIC,
            partition: 0,
            leader,
            leader_epoch: epoch,
            isr: isr.to_vec(),
            min_insync_replicas: 2,
            log_start_offset: 0,
            high_watermark: hw,
            log_end_offset: leo,
        }
    }

    fn at(at_ns: u64, broker: i32, incarnation: u32, state: ReplicaState) -> StateEvent {
        StateEvent::Replica { at_ns, node: NodeRef::Broker(broker), incarnation, state }
    }

    fn run(events: &[StateEvent]) -> (StateChecker, Vec<&'static str>) {
        let mut checker = StateChecker::default();
        let found: Vec<&'static str> = events.iter().flat_map(|e| checker.apply(e)).map(|v| v.invariant).collect();
        (checker, found)
    }

    #[test]
    fn a_healthy_cluster_passes_every_state_check() {
        let (_, found) = run(&[
            at(1, 1, 0, state(true, 3, &[1, 2], 10, 12)),
            at(2, 2, 0, state(false, 3, &[1, 2], 10, 11)),
            at(3, 1, 0, state(true, 3, &[1, 2], 11, 12)),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn two_running_leaders_at_one_epoch_break_single_leader() {
        let (_, found) = run(&[at(1, 1, 0, state(true, 3, &[1, 2], 5, 5)), at(2, 2, 0, state(true, 3, &[1, 2], 5, 5))]);
        assert_eq!(found, vec!["single-leader"]);
    }

    #[test]
    fn a_leader_that_died_before_the_next_one_took_over_is_no_split_brain() {
        let (_, found) = run(&[
            at(1, 1, 0, state(true, 3, &[1, 2], 5, 5)),
            StateEvent::Down { at_ns: 2, node: NodeRef::Broker(1) },
            at(3, 2, 0, state(true, 3, &[2], 5, 5)),
        ]);
        assert!(found.is_empty(), "{found:?}");
        let (_, zombie) = run(&[at(1, 1, 0, state(true, 3, &[1, 2], 5, 5)), at(3, 2, 0, state(true, 4, &[2], 5, 5))]);
        assert!(zombie.is_empty(), "leaders at different epochs are not a split brain: {zombie:?}");
    }

    #[test]
    fn a_leader_epoch_going_back_breaks_epoch_monotonic_even_across_restarts() {
        let (_, found) = run(&[at(1, 1, 0, state(false, 4, &[1], 0, 0)), at(2, 1, 1, state(false, 3, &[1], 0, 0))]);
        assert_eq!(found, vec!["epoch-monotonic"]);
        let (_, recreated) = run(&[
            at(1, 1, 0, state(true, 2, &[1], 0, 0)),
            at(2, 1, 0, ReplicaState { topic_id: TOPIC + 1, ..state(true, 0, &[1], 0, 0) }),
        ]);
        assert!(recreated.is_empty(), "a re-created topic starts its epochs over");
    }

    #[test]
    fn a_leader_hw_above_an_isr_members_log_breaks_hw_bounded() {
        let (_, found) =
            run(&[at(1, 2, 0, state(false, 3, &[1, 2], 6, 8)), at(2, 1, 0, state(true, 3, &[1, 2], 10, 12))]);
        assert_eq!(found, vec!["hw-bounded"]);
        let (_, out_of_isr) =
            run(&[at(1, 2, 0, state(false, 3, &[1], 6, 8)), at(2, 1, 0, state(true, 3, &[1], 10, 12))]);
        assert!(out_of_isr.is_empty(), "a replica outside the ISR may lag");
        let (_, own) = run(&[at(1, 1, 0, state(true, 3, &[1], 13, 12))]);
        assert_eq!(own, vec!["hw-bounded"], "a HW above the replica's own log end");
    }

    #[test]
    fn a_log_end_below_an_earlier_hw_breaks_no_truncation_below_hw_unless_the_process_restarted() {
        let (_, found) =
            run(&[at(1, 2, 0, state(false, 3, &[1, 2], 10, 10)), at(2, 2, 0, state(false, 3, &[1, 2], 7, 7))]);
        assert_eq!(found, vec!["no-truncation-below-hw"]);
        let (_, restarted) =
            run(&[at(1, 2, 0, state(false, 3, &[1, 2], 10, 10)), at(2, 2, 1, state(false, 3, &[1, 2], 0, 7))]);
        assert!(restarted.is_empty(), "a new process may have lost unflushed data: {restarted:?}");
        let (_, to_hw) =
            run(&[at(1, 2, 0, state(false, 3, &[1, 2], 10, 12)), at(2, 2, 0, state(false, 4, &[1, 2], 10, 10))]);
        assert!(to_hw.is_empty(), "truncating down to the HW is allowed");
    }

    fn acked(completed_ns: u64, offset: i64) -> History {
        let mut history = History::default();
        history.push(Operation {
            process: Process(1),
            invoked_ns: 0,
            completed_ns,
            outcome: Outcome::Ok,
            op: Op::Send { partition: 0, value: Value(42), offset: Some(offset) },
        });
        history
    }

    #[test]
    fn an_acks_all_answer_before_min_isr_replicas_held_the_record_breaks_isr_enforced() {
        let (checker, _) = run(&[
            at(10, 1, 0, state(true, 3, &[1, 2], 0, 5)),
            at(20, 2, 0, state(false, 3, &[1, 2], 0, 5)),
            StateEvent::Down { at_ns: 30, node: NodeRef::Broker(2) },
        ]);
        assert_eq!(checker.check_acks(&acked(15, 4), TOPIC, 2).len(), 1, "only the leader held offset 4 at 15");
        assert!(checker.check_acks(&acked(25, 4), TOPIC, 2).is_empty(), "both held it at 25");
        assert!(checker.check_acks(&acked(35, 4), TOPIC, 2).is_empty(), "a holder that died later still held it");
        assert_eq!(checker.check_acks(&acked(25, 5), TOPIC, 2).len(), 1, "offset 5 was on no log");
    }
}
