//! Availability: the cluster must not stay stuck once the faults allow progress. These are
//! liveness invariants (`verdict::LIVENESS_INVARIANTS`): breaking one loses nothing, but a
//! user would see a partition that never recovers.
//!
//! | checker | must hold |
//! | --- | --- |
//! | `catch-up-after-heal` | by the end of the heal phase every assigned replica of every partition is in its leader's ISR and at the leader's log end |
//! | `progress-in-budget` | acks=all sends to a partition succeed at least every [`PROGRESS_BOUND`] while at least `min.insync.replicas` of its replicas are up and connected (and the controller and the network are), once nothing has changed for [`progress_settle`] |
//! | `leader-takeover` | a partition whose leader went down, was paused or was cut off from the controller has a new leader within the broker session timeout plus [`LEADER_TAKEOVER_SLACK`], whenever another ISR member was up and reaching the controller all along (and so was the controller) |

use super::Violation;
use crate::history::{History, Op, Outcome, Partition};
use crate::observation::{Impairment, NodeRef, StateEvent};
use broker::replication::ReplicaState;
use std::collections::BTreeMap;
use std::time::Duration;

/// Beyond the broker session timeout, a leader takeover may take: the controller's next tick
/// fences the broker and commits the election, and the new leader learns of it with its next
/// heartbeat answer (heartbeats are 200 ms apart in the simulator).
pub const LEADER_TAKEOVER_SLACK: Duration = Duration::from_secs(3);
/// A replica (or the controller) impaired this recently before the leader's trouble began may
/// still be fenced or out of the ISR: it does not count as an eligible, reachable candidate.
pub const TAKEOVER_SETTLE: Duration = Duration::from_secs(3);

/// One replica's claim to lead, as it reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Claim {
    at_ns: u64,
    broker: i32,
    leader_epoch: i32,
    isr: Vec<i32>,
}

/// Every leadership claim of the run, per partition (topic id, index), in time order: what the
/// replicas reported as they became leader or changed their ISR while leading.
#[derive(Debug, Default)]
pub struct LeaderClaims {
    claims: BTreeMap<(u128, i32), Vec<Claim>>,
}

impl LeaderClaims {
    pub fn observe(&mut self, event: &StateEvent) {
        let StateEvent::Replica { at_ns, node: NodeRef::Broker(broker), state, .. } = event else { return };
        if !state.leader {
            return;
        }
        let claims = self.claims.entry((state.topic_id, state.partition)).or_default();
        let same = |c: &Claim| c.broker == *broker && c.leader_epoch == state.leader_epoch && c.isr == state.isr;
        if claims.iter().rev().find(|c| c.broker == *broker).is_some_and(same) {
            return;
        }
        claims.push(Claim { at_ns: *at_ns, broker: *broker, leader_epoch: state.leader_epoch, isr: state.isr.clone() });
    }
}

/// The leader of a partition at `at_ns`: the newest epoch claimed by then (the latest claim
/// of it, for its ISR).
fn leader_at(claims: &[Claim], at_ns: u64) -> Option<&Claim> {
    claims.iter().filter(|c| c.at_ns <= at_ns).max_by_key(|c| (c.leader_epoch, c.at_ns))
}

/// The timings `leader-takeover` judges by.
#[derive(Clone, Copy, Debug)]
pub struct TakeoverRules {
    /// The topic judged (the workload's): other topics (the hostile client's) may be deleted
    /// under their leaders, and a deleted partition needs none.
    pub topic_id: u128,
    pub session_timeout: Duration,
    /// Leaders in trouble after this are left to the heal phase (and `catch-up-after-heal`).
    pub fault_phase_end_ns: u64,
}

/// `leader-takeover`.
pub fn leader_takeover(claims: &LeaderClaims, impairments: &[Impairment], rules: TakeoverRules) -> Vec<Violation> {
    let window = (rules.session_timeout + LEADER_TAKEOVER_SLACK).as_nanos() as u64;
    let settle = TAKEOVER_SETTLE.as_nanos() as u64;
    // Only what keeps a node from the controller matters here.
    let away: Vec<&Impairment> = impairments.iter().filter(|i| i.kind.keeps_from_controller()).collect();
    let impaired =
        |node: NodeRef, from: u64, to: u64| away.iter().any(|i| i.node == Some(node) && i.overlaps(from, to));
    let mut found: BTreeMap<((u128, i32), i32), Violation> = BTreeMap::new();
    for trouble in away.iter().copied() {
        let Some(NodeRef::Broker(leader)) = trouble.node else { continue };
        let (start, deadline) = (trouble.from_ns, trouble.from_ns + window);
        let lasted = trouble.to_ns.is_none_or(|end| end >= deadline);
        if !lasted
            || deadline > rules.fault_phase_end_ns
            || impaired(NodeRef::Controller, start.saturating_sub(settle), deadline)
        {
            continue;
        }
        for (&key, claims) in claims.claims.iter().filter(|((topic_id, _), _)| *topic_id == rules.topic_id) {
            let Some(led) = leader_at(claims, start).filter(|c| c.broker == leader) else { continue };
            let candidates: Vec<i32> = led
                .isr
                .iter()
                .copied()
                .filter(|&r| r != leader && !impaired(NodeRef::Broker(r), start.saturating_sub(settle), deadline))
                .collect();
            let taken_over = claims.iter().any(|c| {
                c.broker != leader && c.leader_epoch > led.leader_epoch && c.at_ns > start && c.at_ns <= deadline
            });
            if candidates.is_empty() || taken_over {
                continue;
            }
            let next =
                claims.iter().find(|c| c.broker != leader && c.leader_epoch > led.leader_epoch && c.at_ns > start);
            let next = next.map_or("no other replica ever led it after that".to_string(), |c| {
                format!("broker-{} led it at epoch {} from {:.3} s", c.broker, c.leader_epoch, c.at_ns as f64 / 1e9)
            });
            found.entry((key, led.leader_epoch)).or_insert_with(|| Violation {
                invariant: "leader-takeover",
                partition: key.1,
                offsets: vec![],
                values: vec![],
                operations: vec![],
                detail: format!(
                    "broker-{leader} led partition {} (topic id {:x}) at epoch {} and was {} from {:.3} s; no other replica led it by {:.3} s though {} (in the ISR {:?}) was up and reaching the controller all along ({next})",
                    key.1,
                    key.0,
                    led.leader_epoch,
                    trouble.kind,
                    start as f64 / 1e9,
                    deadline as f64 / 1e9,
                    candidates.iter().map(|r| format!("broker-{r}")).collect::<Vec<_>>().join(", "),
                    led.isr
                ),
            });
        }
    }
    found.into_values().collect()
}

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

/// After a fault begins or ends on a replica, the controller or the network, a partition may
/// stall this long without a bug: the ISR shrinks (`replica.lag.time.max.ms`, then an
/// AlterPartition), a leader is replaced (the session timeout plus [`LEADER_TAKEOVER_SLACK`]),
/// a returning replica catches up, clients refresh metadata and retry.
pub fn progress_settle(session_timeout: Duration, replica_lag_time_max: Duration) -> Duration {
    session_timeout + replica_lag_time_max + LEADER_TAKEOVER_SLACK
}
/// While a partition can make progress, acks=all sends to it succeed at least this often.
pub const PROGRESS_BOUND: Duration = Duration::from_secs(5);
/// The resolution at which `progress-in-budget` decides whether a partition can make progress.
const PROGRESS_STEP: Duration = Duration::from_millis(100);

/// What `progress-in-budget` needs to know of the run.
#[derive(Clone, Debug)]
pub struct ProgressRules {
    /// Each partition's assigned replicas.
    pub replicas: BTreeMap<Partition, Vec<i32>>,
    pub min_insync_replicas: i32,
    /// The workload sends until here.
    pub fault_phase_end_ns: u64,
    /// See [`progress_settle`].
    pub settle: Duration,
}

/// `progress-in-budget`, for acks=all workloads.
pub fn progress_in_budget(history: &History, impairments: &[Impairment], rules: &ProgressRules) -> Vec<Violation> {
    let (settle, bound, step) =
        (rules.settle.as_nanos() as u64, PROGRESS_BOUND.as_nanos() as u64, PROGRESS_STEP.as_nanos() as u64);
    let mut found = Vec::new();
    for (&partition, replicas) in &rules.replicas {
        let mut successes: Vec<u64> = history
            .operations
            .iter()
            .filter(|o| o.outcome == Outcome::Ok && matches!(o.op, Op::Send { partition: p, .. } if p == partition))
            .map(|o| o.completed_ns)
            .collect();
        successes.sort_unstable();
        // Maximal stretches of time in which the partition can make progress.
        let mut stretch: Option<(u64, u64)> = None;
        let mut t = settle;
        while t <= rules.fault_phase_end_ns {
            let healthy = can_progress(replicas, rules.min_insync_replicas, impairments, t - settle, t);
            match (&mut stretch, healthy) {
                (Some((_, end)), Some(_)) => *end = t,
                (None, Some(_)) => stretch = Some((t, t)),
                (Some(_), None) => {
                    found.extend(stalled(partition, stretch.take(), &successes, bound, replicas, impairments, settle))
                }
                (None, None) => {}
            }
            t += step;
        }
        found.extend(stalled(partition, stretch, &successes, bound, replicas, impairments, settle));
    }
    found
}

/// The replicas of a partition that were up and connected all through `[from, to]`, if the
/// partition can make progress at `to`: nothing changed for any replica, the controller or the
/// network in that time, and at least `min_insync_replicas` replicas were healthy throughout.
fn can_progress(
    replicas: &[i32],
    min_insync_replicas: i32,
    impairments: &[Impairment],
    from: u64,
    to: u64,
) -> Option<Vec<i32>> {
    let cluster_wide = |i: &Impairment| i.node.is_none() || i.node == Some(NodeRef::Controller);
    if impairments.iter().any(|i| cluster_wide(i) && i.overlaps(from, to)) {
        return None;
    }
    let mut healthy = Vec::new();
    for &r in replicas {
        let mine = impairments.iter().filter(|i| i.node == Some(NodeRef::Broker(r)));
        let mut overlapping = false;
        for i in mine {
            if i.changes_within(from, to) {
                return None;
            }
            overlapping |= i.overlaps(from, to);
        }
        if !overlapping {
            healthy.push(r);
        }
    }
    (healthy.len() as i32 >= min_insync_replicas).then_some(healthy)
}

/// A violation if, within `stretch`, no acks=all send succeeded for longer than `bound`.
fn stalled(
    partition: Partition,
    stretch: Option<(u64, u64)>,
    successes: &[u64],
    bound: u64,
    replicas: &[i32],
    impairments: &[Impairment],
    settle: u64,
) -> Option<Violation> {
    let (start, end) = stretch?;
    let inside: Vec<u64> = successes.iter().copied().filter(|&c| start < c && c <= end).collect();
    let mut previous = start;
    let mut worst = (0, start, start);
    for c in inside.iter().copied().chain(std::iter::once(end)) {
        if c - previous > worst.0 {
            worst = (c - previous, previous, c);
        }
        previous = c;
    }
    let (gap, from, to) = worst;
    if gap <= bound {
        return None;
    }
    let healthy = can_progress(replicas, 0, impairments, from.saturating_sub(settle), from).unwrap_or_default();
    Some(Violation {
        invariant: "progress-in-budget",
        partition,
        offsets: vec![],
        values: vec![],
        operations: vec![],
        detail: format!(
            "partition {partition}: no acks=all send succeeded from {:.3} s to {:.3} s, though its replicas {} were up and connected and nothing had changed for {} s",
            from as f64 / 1e9,
            to as f64 / 1e9,
            healthy.iter().map(|r| format!("broker-{r}")).collect::<Vec<_>>().join(", "),
            settle / 1_000_000_000
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::ImpairmentKind;

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

    const S: u64 = 1_000_000_000;

    fn claims(list: &[(u64, i32, i32, &[i32])]) -> LeaderClaims {
        let mut claims = LeaderClaims::default();
        for &(at_s, broker, epoch, isr) in list {
            let mut state = state(true, isr, 10);
            state.leader_epoch = epoch;
            claims.observe(&StateEvent::Replica {
                at_ns: at_s * S,
                node: NodeRef::Broker(broker),
                incarnation: 1,
                state,
            });
        }
        claims
    }

    fn impairment(node: NodeRef, from_s: u64, to_s: Option<u64>) -> Impairment {
        let kind = ImpairmentKind::CutOffFromController;
        Impairment { node: Some(node), kind, from_ns: from_s * S, to_ns: to_s.map(|t| t * S) }
    }

    const RULES: TakeoverRules =
        TakeoverRules { topic_id: 7, session_timeout: Duration::from_millis(1500), fault_phase_end_ns: 60 * S };

    /// A controller that never fences a dead broker: its partitions keep a leader that is gone.
    #[test]
    fn a_leader_cut_off_for_good_with_a_healthy_follower_must_be_replaced() {
        let led = claims(&[(1, 1, 0, &[1, 2, 3])]);
        let found = leader_takeover(&led, &[impairment(NodeRef::Broker(1), 10, Some(30))], RULES);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].invariant, "leader-takeover");
        assert!(found[0].detail.contains("broker-2, broker-3"), "{}", found[0].detail);
        // Replaced too late (after 4.5 s) is no better.
        let late = claims(&[(1, 1, 0, &[1, 2, 3]), (16, 2, 1, &[2, 3])]);
        assert_eq!(leader_takeover(&late, &[impairment(NodeRef::Broker(1), 10, Some(30))], RULES).len(), 1);
    }

    /// Near misses: replaced in time; trouble too short; no healthy candidate; controller away.
    #[test]
    fn a_takeover_in_time_or_one_nobody_could_make_passes() {
        let trouble = [impairment(NodeRef::Broker(1), 10, Some(30))];
        let replaced = claims(&[(1, 1, 0, &[1, 2, 3]), (12, 3, 1, &[2, 3])]);
        assert_eq!(leader_takeover(&replaced, &trouble, RULES), vec![]);
        let led = claims(&[(1, 1, 0, &[1, 2, 3])]);
        assert_eq!(leader_takeover(&led, &[impairment(NodeRef::Broker(1), 10, Some(12))], RULES), vec![]);
        let followers_down = [
            trouble[0].clone(),
            impairment(NodeRef::Broker(2), 8, Some(20)),
            impairment(NodeRef::Broker(3), 12, Some(13)),
        ];
        assert_eq!(leader_takeover(&led, &followers_down, RULES), vec![]);
        let controller_away = [trouble[0].clone(), impairment(NodeRef::Controller, 11, Some(12))];
        assert_eq!(leader_takeover(&led, &controller_away, RULES), vec![]);
        let alone = claims(&[(1, 1, 0, &[1])]);
        assert_eq!(leader_takeover(&alone, &trouble, RULES), vec![], "no other ISR member");
        let late_trouble = [impairment(NodeRef::Broker(1), 58, None)];
        assert_eq!(leader_takeover(&led, &late_trouble, RULES), vec![], "left to the heal phase");
        let other_topic = TakeoverRules { topic_id: 8, ..RULES };
        assert_eq!(leader_takeover(&led, &trouble, other_topic), vec![], "another topic (it may have been deleted)");
    }

    fn sends_every_second(from_s: u64, to_s: u64) -> History {
        let mut history = History::default();
        for (i, t) in (from_s..to_s).enumerate() {
            history.push(crate::history::Operation {
                process: crate::history::Process(1),
                invoked_ns: t * S,
                completed_ns: t * S + 10_000_000,
                outcome: Outcome::Ok,
                op: Op::Send { partition: 0, value: crate::history::Value(i as u64), offset: Some(i as i64) },
            });
        }
        history
    }

    fn progress_rules() -> ProgressRules {
        ProgressRules {
            replicas: BTreeMap::from([(0, vec![1, 2, 3])]),
            min_insync_replicas: 2,
            fault_phase_end_ns: 60 * S,
            settle: Duration::from_secs(6),
        }
    }

    fn down(broker: i32, from_s: u64, to_s: u64) -> Impairment {
        Impairment {
            node: Some(NodeRef::Broker(broker)),
            kind: ImpairmentKind::Down,
            from_ns: from_s * S,
            to_ns: Some(to_s * S),
        }
    }

    /// A high watermark held back by a replica outside the ISR: one follower down, two of three
    /// replicas (min ISR 2) up, and no acks=all send succeeds after it went down.
    #[test]
    fn acks_all_stalled_while_min_isr_replicas_are_healthy_is_caught() {
        let found = progress_in_budget(&sends_every_second(0, 10), &[down(3, 10, 50)], &progress_rules());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found.iter().all(|v| v.invariant == "progress-in-budget"));
        assert!(
            found[0].detail.contains("from 16.000 s to 49.900 s, though its replicas broker-1, broker-2"),
            "{}",
            found[0].detail
        );
    }

    /// Near misses: sends keep succeeding; too few replicas healthy; a stall only while things
    /// were changing (within the settle time of the fault).
    #[test]
    fn progress_is_required_only_when_min_isr_replicas_have_been_healthy_a_while() {
        assert_eq!(progress_in_budget(&sends_every_second(0, 60), &[down(3, 10, 50)], &progress_rules()), vec![]);
        let two_down = [down(3, 10, 50), down(2, 12, 50)];
        let stalled_after_50 = sends_every_second(0, 10);
        let mut history = stalled_after_50.clone();
        for o in sends_every_second(52, 60).operations {
            history.push(o);
        }
        assert_eq!(
            progress_in_budget(&history, &two_down, &progress_rules()),
            vec![],
            "recovers within the settle time"
        );
        let mut resumed = sends_every_second(0, 10);
        for o in sends_every_second(15, 60).operations {
            resumed.push(o);
        }
        assert_eq!(
            progress_in_budget(&resumed, &[down(3, 10, 50)], &progress_rules()),
            vec![],
            "stalled only while settling"
        );
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
