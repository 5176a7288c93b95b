//! Consumer-group checkers, judged only from what members were told (SyncGroup, OffsetCommit
//! and OffsetFetch answers), never from the coordinator's own state.
//!
//! | checker | must hold |
//! | --- | --- |
//! | `single-owner` | no two members are given one partition in one generation |
//! | `commit-fenced` | a commit from a generation older than one some member was already given is never acknowledged |
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

/// `commit-fenced`: once a member was given generation `g'`, the group is at `g'` or later;
/// a commit of an older generation invoked after that must be refused (ILLEGAL_GENERATION).
pub fn commit_fenced(history: &History) -> Vec<Violation> {
    // Generations given, in completion order: (completed, generation, op).
    let mut given: Vec<(u64, i32, usize)> = history
        .operations
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match (&o.op, o.outcome) {
            (Op::GroupAssigned { generation, .. }, Outcome::Ok) => Some((o.completed_ns, *generation, i)),
            _ => None,
        })
        .collect();
    given.sort();
    let mut violations = Vec::new();
    for (i, o) in history.operations.iter().enumerate() {
        let (Op::GroupCommit { member, generation, partition, offset }, Outcome::Ok) = (&o.op, o.outcome) else {
            continue;
        };
        let newer =
            given.iter().take_while(|(done, _, _)| *done < o.invoked_ns).filter(|(_, g, _)| g > generation).last();
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
    violations
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
}
