//! Consumer-group checkers, judged only from what members were told (SyncGroup, OffsetCommit
//! and OffsetFetch answers), never from the coordinator's own state.
//!
//! | checker | must hold |
//! | --- | --- |
//! | `single-owner` | no two members are given one partition in one generation |
//! | `commit-fenced` | a commit from a generation older than one some member was already given is never acknowledged (KIP-848: older than one the committing member was already given, or of a partition another member was given before the commit was sent that the committer never released) |
//! | `revoke-before-reassign` | KIP-848: a partition is given to a member only after every other member told to own it released it (a heartbeat that no longer lists it, a leave, a rejoin) or was removed from the group (it never heard an answer again before rejoining) |
//! | `committed-offsets-durable` | an OffsetFetch never answers below a commit acknowledged before it was asked (coordinator failover and crashes included) |
//! | `no-skip` | every offset below a partition's highest acknowledged commit was polled by some member: after a rebalance or a restart a member resumes at the committed offset, never past it |
//! | `group-progress` (liveness) | by the end of the heal phase the group has consumed and committed every partition to the end the final read found |
//!
//! `committed-offsets-durable` relies on the workload committing each partition's offsets in
//! increasing order within a generation and resuming from the committed offset after every
//! (re)assignment, as the simulator's members do: then acknowledged commits of a partition
//! never go down, unless the broker loses or reorders one.

use super::Violation;
use crate::history::{History, Op, Outcome, Partition};
use std::collections::BTreeMap;

/// `single-owner`: one owner per (generation, partition).
pub fn single_owner(history: &History) -> Vec<Violation> {
    let mut owners: BTreeMap<(i32, Partition), (&str, usize)> = BTreeMap::new();
    let mut violations = Vec::new();
    for (i, o) in history.operations.iter().enumerate() {
        let (Op::GroupAssigned { member, generation, partitions }, Outcome::Ok) = (&o.op, o.outcome) else { continue };
        for &partition in partitions {
            match owners.get(&(*generation, partition)) {
                Some((owner, first)) if *owner != member.as_str() => violations.push(Violation {
                    invariant: "single-owner",
                    partition,
                    offsets: vec![],
                    values: vec![],
                    operations: vec![*first, i],
                    detail: format!("generation {generation} gave partition {partition} to {owner} and to {member}"),
                }),
                Some(_) => {}
                None => {
                    owners.insert((*generation, partition), (member.as_str(), i));
                }
            }
        }
    }
    violations
}

/// Whether the members spoke KIP-848 (their heartbeats are in the history).
fn consumer_protocol(history: &History) -> bool {
    history.operations.iter().any(|o| matches!(o.op, Op::GroupHeartbeat { .. }))
}

/// `commit-fenced`: once a member was given generation `g'`, the group is at `g'` or later;
/// a commit of an older generation invoked after that must be refused (ILLEGAL_GENERATION).
/// KIP-848 member epochs are each member's own (one member may revoke at epoch 4 while
/// another is at 5): there a commit must carry the epoch its member was last given, and one
/// older than an epoch that member was given before it was sent must be refused
/// (STALE_MEMBER_EPOCH).
pub fn commit_fenced(history: &History) -> Vec<Violation> {
    let per_member = consumer_protocol(history);
    // Generations given, in completion order: (completed, generation, op, member).
    let mut given: Vec<(u64, i32, usize, &str)> = history
        .operations
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match (&o.op, o.outcome) {
            (Op::GroupAssigned { generation, member, .. }, Outcome::Ok) => {
                Some((o.completed_ns, *generation, i, member.as_str()))
            }
            _ => None,
        })
        .collect();
    given.sort();
    let mut violations = Vec::new();
    for (i, o) in history.operations.iter().enumerate() {
        let (Op::GroupCommit { member, generation, partition, offset }, Outcome::Ok) = (&o.op, o.outcome) else {
            continue;
        };
        let newer = given
            .iter()
            .take_while(|(done, _, _, _)| *done < o.invoked_ns)
            .filter(|(_, g, _, to)| g > generation && (!per_member || to == member))
            .last()
            .map(|(done, g, shown, _)| (done, g, shown));
        if let Some((_, newer_generation, shown)) = newer {
            violations.push(Violation {
                invariant: "commit-fenced",
                partition: *partition,
                offsets: vec![*offset],
                values: vec![],
                operations: vec![*shown, i],
                detail: format!(
                    "{member}'s commit of offset {offset} in generation {generation} was acknowledged although generation {newer_generation} had been given out before it was sent"
                ),
            });
        }
    }
    if per_member {
        violations.extend(zombie_commits(history));
    }
    violations
}

/// `revoke-before-reassign` (KIP-848): when member B is given partition `p` it did not own,
/// every other member A whose latest assignment before that included `p` must have released
/// it first: a heartbeat invoked before B's answer that no longer lists `p` (answered or not:
/// it may have been heard), a leave, or a rejoin. If A did not, the coordinator may only have
/// given `p` away because it had removed A (its session ended); then A never heard an answer
/// again before rejoining. An answered heartbeat of A's invoked after B's answer, before A
/// rejoined, shows A was still a member owning `p` when B got it.
pub fn revoke_before_reassign(history: &History) -> Vec<Violation> {
    if !consumer_protocol(history) {
        return Vec::new();
    }
    let ops = &history.operations;
    let Kip848 { heartbeats, assignments } = Kip848::index(history);
    let partitions_of = |i: usize| assigned_partitions(ops, i);
    let mut violations = Vec::new();
    for (b, given) in &assignments {
        for (k, &(given_at, gi)) in given.iter().enumerate() {
            let before: &[Partition] = if k == 0 { &[] } else { partitions_of(given[k - 1].1) };
            for &p in partitions_of(gi).iter().filter(|p| !before.contains(p)) {
                for (a, theirs) in assignments.iter().filter(|(a, _)| *a != b) {
                    // A's latest answer giving it `p` (a later one may tell it to revoke `p`:
                    // it owns `p` until it says it does not).
                    let told = theirs
                        .iter()
                        .take_while(|(at, _)| *at < given_at)
                        .filter(|(_, i)| partitions_of(*i).contains(&p));
                    let Some(&(owned_from, ai)) = told.last() else { continue };
                    let beats = heartbeats.get(a).map(Vec::as_slice).unwrap_or(&[]);
                    let released = beats
                        .iter()
                        .any(|&(invoked, _, h)| invoked > owned_from && invoked < given_at && releases(&ops[h].op, p));
                    if released {
                        continue;
                    }
                    let still_member = beats
                        .iter()
                        .filter(|(invoked, _, _)| *invoked > given_at)
                        .take_while(|(_, _, h)| !matches!(ops[*h].op, Op::GroupHeartbeat { joining: true, .. }))
                        .find(|(_, _, h)| {
                            ops[*h].outcome == Outcome::Ok
                                && matches!(ops[*h].op, Op::GroupHeartbeat { epoch, .. } if epoch > 0)
                        });
                    if let Some(&(_, _, h)) = still_member {
                        violations.push(Violation {
                            invariant: "revoke-before-reassign",
                            partition: p,
                            offsets: vec![],
                            values: vec![],
                            operations: vec![ai, gi, h],
                            detail: format!(
                                "{b} was given partition {p} while {a}, still a member (answered afterwards), had not released it"
                            ),
                        });
                    }
                }
            }
        }
    }
    violations
}

/// KIP-848 members' heartbeats and assignments, per member.
struct Kip848<'h> {
    /// In invocation order: (invoked, completed, op index).
    heartbeats: BTreeMap<&'h str, Vec<(u64, u64, usize)>>,
    /// Answered assignments in completion order: (completed, op index).
    assignments: BTreeMap<&'h str, Vec<(u64, usize)>>,
}

impl<'h> Kip848<'h> {
    fn index(history: &'h History) -> Self {
        let mut heartbeats: BTreeMap<&str, Vec<(u64, u64, usize)>> = BTreeMap::new();
        let mut assignments: BTreeMap<&str, Vec<(u64, usize)>> = BTreeMap::new();
        for (i, o) in history.operations.iter().enumerate() {
            match (&o.op, o.outcome) {
                (Op::GroupHeartbeat { member, .. }, _) => {
                    heartbeats.entry(member).or_default().push((o.invoked_ns, o.completed_ns, i))
                }
                (Op::GroupAssigned { member, .. }, Outcome::Ok) => {
                    assignments.entry(member).or_default().push((o.completed_ns, i))
                }
                _ => {}
            }
        }
        heartbeats.values_mut().for_each(|h| h.sort());
        assignments.values_mut().for_each(|a| a.sort());
        Kip848 { heartbeats, assignments }
    }
}

fn assigned_partitions(ops: &[crate::history::Operation], i: usize) -> &[Partition] {
    match &ops[i].op {
        Op::GroupAssigned { partitions, .. } => partitions.as_slice(),
        _ => &[],
    }
}

/// KIP-848 commits by members that were no longer members: member A commits partition `p`
/// (acknowledged) after another member B was newly given `p`, A having been given `p` last
/// before that and not having released it first, and A never answered again before
/// rejoining. Then the coordinator had removed A: its commit must be refused
/// (UNKNOWN_MEMBER_ID). (Had A been answered afterwards, it was still a member when B got `p`:
/// that is `revoke-before-reassign`'s to report.)
fn zombie_commits(history: &History) -> Vec<Violation> {
    let ops = &history.operations;
    let Kip848 { heartbeats, assignments } = Kip848::index(history);
    let mut violations = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        let (Op::GroupCommit { member: a, generation, partition: p, offset }, Outcome::Ok) = (&o.op, o.outcome) else {
            continue;
        };
        let Some(mine) = assignments.get(a.as_str()) else { continue };
        let told = mine
            .iter()
            .take_while(|(at, _)| *at < o.invoked_ns)
            .filter(|(_, j)| assigned_partitions(ops, *j).contains(p));
        let Some(&(owned_from, _)) = told.last() else { continue };
        let beats = heartbeats.get(a.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let released_before = |until: u64| {
            beats.iter().any(|&(invoked, _, h)| invoked > owned_from && invoked < until && releases(&ops[h].op, *p))
        };
        let taken = assignments.iter().filter(|(b, _)| **b != a.as_str()).find_map(|(b, theirs)| {
            theirs.iter().enumerate().find_map(|(k, &(given_at, gi))| {
                let newly = assigned_partitions(ops, gi).contains(p)
                    && (k == 0 || !assigned_partitions(ops, theirs[k - 1].1).contains(p));
                let in_window = given_at > owned_from && given_at < o.invoked_ns;
                let answered_after = beats
                    .iter()
                    .filter(|(invoked, _, _)| *invoked > given_at)
                    .take_while(|(_, _, h)| !matches!(ops[*h].op, Op::GroupHeartbeat { joining: true, .. }))
                    .any(|(_, _, h)| ops[*h].outcome == Outcome::Ok);
                (newly && in_window && !released_before(given_at) && !answered_after).then_some((*b, gi))
            })
        });
        if let Some((b, gi)) = taken {
            violations.push(Violation {
                invariant: "commit-fenced",
                partition: *p,
                offsets: vec![*offset],
                values: vec![],
                operations: vec![gi, i],
                detail: format!(
                    "{a}'s commit of offset {offset} at epoch {generation} was acknowledged after {b} had been given the partition, which {a} had not released: {a} was no longer a member"
                ),
            });
        }
    }
    violations
}

/// Whether a heartbeat gives up partition `p`: it lists what it owns without `p`, leaves, or
/// rejoins (having lost everything).
fn releases(op: &Op, p: Partition) -> bool {
    match op {
        Op::GroupHeartbeat { joining: true, .. } => true,
        Op::GroupHeartbeat { epoch, .. } if *epoch < 0 => true,
        Op::GroupHeartbeat { owned: Some(owned), .. } => !owned.contains(&p),
        _ => false,
    }
}

/// `committed-offsets-durable`: an OffsetFetch answer is at least every commit of that
/// partition acknowledged before the fetch was sent.
pub fn committed_offsets_durable(history: &History) -> Vec<Violation> {
    let mut acked: BTreeMap<Partition, Vec<(u64, i64, usize)>> = BTreeMap::new();
    for (i, o) in history.operations.iter().enumerate() {
        if let (Op::GroupCommit { partition, offset, .. }, Outcome::Ok) = (&o.op, o.outcome) {
            acked.entry(*partition).or_default().push((o.completed_ns, *offset, i));
        }
    }
    let mut violations = Vec::new();
    for (i, o) in history.operations.iter().enumerate() {
        let (Op::GroupOffsetFetch { partition, offset }, Outcome::Ok) = (&o.op, o.outcome) else { continue };
        let Some(commits) = acked.get(partition) else { continue };
        let highest = commits.iter().filter(|(done, _, _)| *done < o.invoked_ns).max_by_key(|(_, offset, _)| *offset);
        if let Some((_, committed, shown)) = highest {
            let answered = offset.unwrap_or(-1);
            if answered < *committed {
                violations.push(Violation {
                    invariant: "committed-offsets-durable",
                    partition: *partition,
                    offsets: vec![*committed, answered],
                    values: vec![],
                    operations: vec![*shown, i],
                    detail: format!(
                        "offset {committed} was committed and acknowledged, but a later OffsetFetch answered {}",
                        offset.map_or("no committed offset".to_string(), |o| o.to_string())
                    ),
                });
            }
        }
    }
    violations
}

/// `no-skip`: every offset below a partition's highest acknowledged commit was polled by some
/// group member (a process that was given an assignment). A member commits the offset after
/// what it polled, so an offset below a commit that no member ever polled was skipped: some
/// member resumed past the committed offset (the OffsetFetch answer, or where it began). The
/// workload's topics have neither retention nor compaction: every offset exists.
pub fn no_skip(history: &History) -> Vec<Violation> {
    let members: std::collections::BTreeSet<_> = history
        .operations
        .iter()
        .filter(|o| matches!(o.op, Op::GroupAssigned { .. }) && o.outcome == Outcome::Ok)
        .map(|o| o.process)
        .collect();
    let mut polled: BTreeMap<Partition, std::collections::BTreeSet<i64>> = BTreeMap::new();
    for o in history.operations.iter().filter(|o| members.contains(&o.process) && o.outcome == Outcome::Ok) {
        if let Op::Poll { partition, records, .. } = &o.op {
            polled.entry(*partition).or_default().extend(records.iter().map(|(offset, _)| *offset));
        }
    }
    let mut violations = Vec::new();
    for (i, o) in history.operations.iter().enumerate() {
        let (Op::GroupCommit { partition, offset, member, .. }, Outcome::Ok) = (&o.op, o.outcome) else { continue };
        let seen = polled.get(partition);
        let Some(skipped) = (0..*offset).find(|at| seen.is_none_or(|s| !s.contains(at))) else { continue };
        let until = (skipped..*offset).find(|at| seen.is_some_and(|s| s.contains(at))).unwrap_or(*offset);
        violations.push(Violation {
            invariant: "no-skip",
            partition: *partition,
            offsets: vec![skipped, until],
            values: vec![],
            operations: vec![i],
            detail: format!(
                "{member} committed offset {offset}, but no member ever polled offsets {skipped}..{until} below it"
            ),
        });
        polled.entry(*partition).or_default().extend(skipped..until); // one report per gap
    }
    violations
}

/// Two members reading one partition at once, in different generations: allowed (Kafka's
/// at-least-once: an expelled member goes on polling until it hears of the rebalance), and
/// reported with the windows so a run shows how long such overlaps last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    pub partition: Partition,
    /// (owner, generation, first assigned ns, last poll ns) of each.
    pub earlier: (String, i32, u64, u64),
    pub later: (String, i32, u64, u64),
}

/// Every overlap of ownership windows across generations. A member's window of a partition in
/// a generation runs from its SyncGroup answer to its last poll of that partition before its
/// next assignment; windows with no poll are not counted.
pub fn ownership_overlaps(history: &History) -> Vec<Overlap> {
    // (process, partition) -> windows in time order: (owner, generation, from, to).
    type Window = (String, i32, u64, u64);
    let mut open: BTreeMap<(crate::history::Process, Partition), Window> = BTreeMap::new();
    let mut windows: BTreeMap<Partition, Vec<Window>> = BTreeMap::new();
    let mut operations: Vec<&crate::history::Operation> =
        history.operations.iter().filter(|o| o.outcome == Outcome::Ok).collect();
    operations.sort_by_key(|o| o.completed_ns);
    type Key = (crate::history::Process, Partition);
    let close = |open: &mut BTreeMap<Key, Window>, windows: &mut BTreeMap<Partition, Vec<Window>>, key: Key| {
        if let Some(window) = open.remove(&key) {
            if window.3 > window.2 {
                windows.entry(key.1).or_default().push(window);
            }
        }
    };
    for o in operations {
        match &o.op {
            Op::GroupAssigned { member, generation, partitions } => {
                let stale: Vec<_> = open.keys().filter(|(p, _)| *p == o.process).copied().collect();
                for key in stale {
                    close(&mut open, &mut windows, key);
                }
                for &partition in partitions {
                    let start = o.completed_ns;
                    open.insert((o.process, partition), (member.clone(), *generation, start, start));
                }
            }
            Op::Poll { partition, .. } => {
                if let Some(window) = open.get_mut(&(o.process, *partition)) {
                    window.3 = o.completed_ns;
                }
            }
            _ => {}
        }
    }
    for key in open.keys().copied().collect::<Vec<_>>() {
        close(&mut open, &mut windows, key);
    }
    let mut overlaps = Vec::new();
    for (partition, mut list) in windows {
        list.sort_by_key(|w| w.2);
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.0 != b.0 && a.1 != b.1 && b.2 < a.3 {
                    overlaps.push(Overlap { partition, earlier: a.clone(), later: b.clone() });
                }
            }
        }
    }
    overlaps
}

/// How far the group has committed each partition, as members were told: the highest
/// acknowledged commit, or OffsetFetch answer (a commit whose answer was lost, but that the
/// coordinator stored, shows there; a member with nothing new to read never commits again).
pub fn group_committed(history: &History) -> BTreeMap<Partition, i64> {
    let mut highest: BTreeMap<Partition, i64> = BTreeMap::new();
    for o in history.operations.iter().filter(|o| o.outcome == Outcome::Ok) {
        let (partition, offset) = match &o.op {
            Op::GroupCommit { partition, offset, .. } => (*partition, *offset),
            Op::GroupOffsetFetch { partition, offset: Some(offset) } => (*partition, *offset),
            _ => continue,
        };
        let h = highest.entry(partition).or_insert(offset);
        *h = (*h).max(offset);
    }
    highest
}

/// `group-progress`: every partition's commits ([`group_committed`]) reach `log_ends` (what the final
/// reads found; partitions without one are not judged). A liveness check: the group stalled
/// (no coordinator, a rebalance that never ends, members that never get partitions).
pub fn group_progress(history: &History, log_ends: &BTreeMap<Partition, i64>) -> Vec<Violation> {
    let committed = group_committed(history);
    log_ends
        .iter()
        .filter_map(|(&partition, &end)| {
            let reached = committed.get(&partition).copied().unwrap_or(0);
            (reached < end).then(|| Violation {
                invariant: "group-progress",
                partition,
                offsets: vec![reached, end],
                values: vec![],
                operations: vec![],
                detail: format!(
                    "when the heal phase ended the group had committed partition {partition} up to {reached}, not to its end {end}"
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Operation, Process};

    fn op(process: u32, invoked_ns: u64, completed_ns: u64, outcome: Outcome, op: Op) -> Operation {
        Operation { process: Process(process), invoked_ns, completed_ns, outcome, op }
    }

    fn assigned(member: &str, generation: i32, partitions: &[Partition], at: u64) -> Operation {
        op(
            1,
            at,
            at,
            Outcome::Ok,
            Op::GroupAssigned { member: member.to_string(), generation, partitions: partitions.to_vec() },
        )
    }

    fn committed(
        member: &str,
        generation: i32,
        partition: Partition,
        offset: i64,
        at: (u64, u64),
        outcome: Outcome,
    ) -> Operation {
        op(1, at.0, at.1, outcome, Op::GroupCommit { member: member.to_string(), generation, partition, offset })
    }

    fn history(operations: Vec<Operation>) -> History {
        History { operations }
    }

    /// An assignment recorded by member process `process`.
    fn assigned_in(process: u32, name: &str, generation: i32, partitions: &[Partition], at: u64) -> Operation {
        Operation { process: Process(process), ..assigned(name, generation, partitions, at) }
    }

    fn polled(process: u32, partition: Partition, offsets: std::ops::Range<i64>, at: u64) -> Operation {
        let records = offsets.map(|o| (o, crate::history::Value(o as u64))).collect();
        op(process, at, at, Outcome::Ok, Op::Poll { partition, records, high_watermark: None, after_seek: false })
    }

    #[test]
    fn no_skip_fails_when_members_commit_past_offsets_nobody_polled_and_passes_on_redelivery() {
        let member = |process, name: &str, generation, at| assigned_in(process, name, generation, &[0], at);
        let commit = |process, name: &str, generation, offset, at| Operation {
            process: Process(process),
            ..committed(name, generation, 0, offset, (at, at + 1), Outcome::Ok)
        };
        // `a` reads 0..10 and commits 10; after a rebalance `b` resumes at `start`.
        let b_resumes_at = |start| {
            history(vec![
                member(1, "a", 1, 10),
                polled(1, 0, 0..10, 20),
                commit(1, "a", 1, 10, 30),
                member(2, "b", 2, 40),
                polled(2, 0, start..20, 50),
                commit(2, "b", 2, 20, 60),
            ])
        };
        let found = no_skip(&b_resumes_at(12));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].invariant, found[0].offsets.clone()), ("no-skip", vec![10, 12]));
        // Resuming below the commit (redelivery) is fine; so are polls of a non-member (an
        // assigned consumer), which do not count for the group either way.
        assert!(no_skip(&b_resumes_at(8)).is_empty());
        let outsider = history(vec![member(1, "a", 1, 10), polled(7, 0, 0..10, 20), commit(1, "a", 1, 10, 30)]);
        assert_eq!(no_skip(&outsider).len(), 1, "an assigned consumer's polls are not the group's");
    }

    #[test]
    fn ownership_overlaps_across_generations_are_reported_and_disjoint_windows_are_not() {
        let poll = |process, partition, at| polled(process, partition, 0..1, at);
        let member = assigned_in;
        // `a` owns p0 in generation 1 and keeps polling it after `b` got it in generation 2.
        let zombie = history(vec![
            member(1, "a", 1, &[0], 10),
            poll(1, 0, 20),
            member(2, "b", 2, &[0], 30),
            poll(2, 0, 40),
            poll(1, 0, 50),
        ]);
        let found = ownership_overlaps(&zombie);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].earlier.0.as_str(), found[0].later.0.as_str(), found[0].later.2), ("a", "b", 30));
        // `a` stops before `b` starts, and `a` is told of generation 2 (without p0) first.
        let handed_over = history(vec![
            member(1, "a", 1, &[0], 10),
            poll(1, 0, 20),
            member(1, "a", 2, &[], 25),
            member(2, "b", 2, &[0], 30),
            poll(2, 0, 40),
        ]);
        assert!(ownership_overlaps(&handed_over).is_empty());
    }

    #[test]
    fn single_owner_fails_on_a_partition_given_twice_in_one_generation_but_not_across_generations() {
        let bad = history(vec![assigned("a", 1, &[0, 1], 10), assigned("b", 1, &[1, 2], 11)]);
        let found = single_owner(&bad);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].invariant, found[0].partition), ("single-owner", 1));
        let fine = history(vec![assigned("a", 1, &[0, 1], 10), assigned("b", 2, &[1], 11), assigned("a", 2, &[0], 12)]);
        assert!(single_owner(&fine).is_empty());
    }

    #[test]
    fn commit_fenced_fails_on_an_old_generation_acknowledged_after_a_newer_one_was_given() {
        let bad = history(vec![
            assigned("a", 1, &[0], 10),
            assigned("b", 2, &[0], 20),
            committed("a", 1, 0, 5, (25, 30), Outcome::Ok),
        ]);
        assert_eq!(commit_fenced(&bad)[0].invariant, "commit-fenced");
        // Near misses: sent before generation 2 was given; refused; or of the new generation.
        let fine = history(vec![
            assigned("a", 1, &[0], 10),
            committed("a", 1, 0, 4, (15, 25), Outcome::Ok),
            assigned("b", 2, &[0], 20),
            committed("a", 1, 0, 5, (25, 30), Outcome::Fail),
            committed("b", 2, 0, 6, (26, 31), Outcome::Ok),
        ]);
        assert!(commit_fenced(&fine).is_empty());
    }

    #[test]
    fn group_progress_fails_when_commits_stop_short_of_the_end_and_passes_at_it() {
        let h = history(vec![
            committed("a", 1, 0, 5, (1, 2), Outcome::Ok),
            committed("a", 1, 0, 9, (3, 4), Outcome::Info),
            committed("b", 1, 1, 7, (3, 4), Outcome::Ok),
        ]);
        let ends: BTreeMap<Partition, i64> = [(0, 9), (1, 7), (2, 0)].into();
        let found = group_progress(&h, &ends);
        assert_eq!(found.len(), 1, "only partition 0 (its commit to 9 was never acknowledged): {found:?}");
        assert_eq!((found[0].invariant, found[0].partition), ("group-progress", 0));
        assert!(group_progress(&h, &[(1, 7)].into()).is_empty());
        // The unacknowledged commit to 9 was stored after all: an OffsetFetch says so (swarm
        // seed 331: the member then had nothing new to read, so it never committed again).
        let mut operations = h.operations.clone();
        operations.push(op(1, 5, 6, Outcome::Ok, Op::GroupOffsetFetch { partition: 0, offset: Some(9) }));
        assert!(group_progress(&history(operations), &ends).is_empty());
    }

    #[test]
    fn committed_offsets_durable_fails_when_a_fetch_answers_below_an_acknowledged_commit() {
        let fetch = |offset, at: u64| op(2, at, at + 1, Outcome::Ok, Op::GroupOffsetFetch { partition: 0, offset });
        let bad = history(vec![committed("a", 1, 0, 7, (10, 20), Outcome::Ok), fetch(Some(3), 30)]);
        assert_eq!(committed_offsets_durable(&bad)[0].invariant, "committed-offsets-durable");
        let lost = history(vec![committed("a", 1, 0, 7, (10, 20), Outcome::Ok), fetch(None, 30)]);
        assert_eq!(committed_offsets_durable(&lost).len(), 1);
        // Near misses: the fetch was sent before the ack, or the commit was never acknowledged.
        let fine = history(vec![
            committed("a", 1, 0, 7, (10, 20), Outcome::Ok),
            fetch(Some(3), 15),
            committed("a", 1, 0, 9, (21, 22), Outcome::Info),
            fetch(Some(7), 30),
        ]);
        assert!(committed_offsets_durable(&fine).is_empty());
    }

    /// A KIP-848 heartbeat of `member` at `epoch`, invoked at `at`, saying it owns `owned`.
    fn beat(member: &str, epoch: i32, owned: Option<&[Partition]>, at: u64, outcome: Outcome) -> Operation {
        let owned = owned.map(<[Partition]>::to_vec);
        let joining = epoch == 0;
        op(
            1,
            at,
            at + 1,
            outcome,
            Op::GroupHeartbeat { member: member.to_string(), epoch, owned, answered_epoch: epoch, joining },
        )
    }

    /// `a` owns partitions 0 and 1 at epoch 1; at 100 `b` is given partition 1 at epoch 2.
    fn b_takes_partition_1(between: Vec<Operation>, after: Vec<Operation>) -> History {
        let mut operations = vec![beat("a", 0, Some(&[]), 1, Outcome::Ok), assigned("a", 1, &[0, 1], 2)];
        operations.extend(between);
        operations.push(assigned("b", 2, &[1], 100));
        operations.extend(after);
        history(operations)
    }

    #[test]
    fn revoke_before_reassign_fails_when_the_owner_was_still_a_member_and_had_not_released() {
        // a heard nothing of the move, and heartbeats on (answered) after b got partition 1.
        let h = b_takes_partition_1(vec![], vec![beat("a", 1, None, 150, Outcome::Ok)]);
        let found = revoke_before_reassign(&h);
        assert_eq!(
            found.iter().map(|v| (v.invariant, v.partition)).collect::<Vec<_>>(),
            vec![("revoke-before-reassign", 1)]
        );
        // a was told to give partition 1 up, but acknowledged only after b had it.
        let late_ack =
            b_takes_partition_1(vec![assigned("a", 1, &[0], 50)], vec![beat("a", 1, Some(&[0]), 150, Outcome::Ok)]);
        assert_eq!(revoke_before_reassign(&late_ack).len(), 1);
    }

    #[test]
    fn revoke_before_reassign_passes_after_a_release_a_leave_or_a_removal() {
        let released = vec![assigned("a", 1, &[0], 50), beat("a", 1, Some(&[0]), 60, Outcome::Info)];
        let after = vec![beat("a", 2, Some(&[0]), 150, Outcome::Ok)];
        assert!(revoke_before_reassign(&b_takes_partition_1(released, after)).is_empty());
        let left = vec![beat("a", -1, Some(&[]), 60, Outcome::Ok)];
        assert!(revoke_before_reassign(&b_takes_partition_1(left, vec![])).is_empty());
        // Removed by the coordinator (its session ended): it never heard an answer again until
        // it rejoined.
        let removed = vec![
            beat("a", 1, None, 150, Outcome::Fail),
            beat("a", 0, Some(&[]), 160, Outcome::Ok),
            beat("a", 3, None, 170, Outcome::Ok),
        ];
        assert!(revoke_before_reassign(&b_takes_partition_1(vec![], removed)).is_empty());
    }

    #[test]
    fn kip_848_commits_are_fenced_per_member_not_by_other_members_epochs() {
        // b was given epoch 2 while a, still revoking at epoch 1, commits at 1: fine.
        let h = b_takes_partition_1(vec![], vec![committed("a", 1, 0, 5, (120, 130), Outcome::Ok)]);
        assert!(commit_fenced(&h).is_empty());
        // a itself was given epoch 2 before it committed at epoch 1: refused, or a violation.
        let stale = b_takes_partition_1(
            vec![assigned("a", 2, &[0], 50)],
            vec![committed("a", 1, 0, 5, (120, 130), Outcome::Ok)],
        );
        assert_eq!(commit_fenced(&stale)[0].invariant, "commit-fenced");
    }

    #[test]
    fn a_kip_848_commit_of_a_partition_taken_over_before_it_was_sent_must_be_refused() {
        // a never released partition 1; b was given it at 100; a's commit of it at 120 was
        // accepted: a was no longer a member (or revoke-before-reassign fails).
        let zombie = b_takes_partition_1(vec![], vec![committed("a", 1, 1, 5, (120, 130), Outcome::Ok)]);
        let found = commit_fenced(&zombie);
        assert_eq!(found.iter().map(|v| (v.invariant, v.partition)).collect::<Vec<_>>(), vec![("commit-fenced", 1)]);
        // Near misses: its commit of partition 0 (nobody took it), a refused commit, and a
        // commit after a released partition 1 first.
        let fine = b_takes_partition_1(
            vec![],
            vec![committed("a", 1, 0, 5, (120, 130), Outcome::Ok), committed("a", 1, 1, 5, (140, 150), Outcome::Fail)],
        );
        assert!(commit_fenced(&fine).is_empty());
        let released = b_takes_partition_1(
            vec![beat("a", 1, Some(&[0]), 60, Outcome::Ok)],
            vec![committed("a", 1, 1, 5, (120, 130), Outcome::Ok)],
        );
        assert!(commit_fenced(&released).is_empty());
        // Answered afterwards: a was still a member, so the coordinator broke
        // revoke-before-reassign, not the commit check.
        let member = b_takes_partition_1(
            vec![],
            vec![committed("a", 1, 1, 5, (120, 130), Outcome::Ok), beat("a", 1, None, 150, Outcome::Ok)],
        );
        assert!(commit_fenced(&member).is_empty());
        assert_eq!(revoke_before_reassign(&member).len(), 1);
    }
}
