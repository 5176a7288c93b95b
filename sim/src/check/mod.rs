//! History checkers (names follow Jepsen's Kafka checker). Each reads only the [`History`] and
//! returns the violations it found, each naming the invariant, the partition, the offsets and
//! values involved and the operations (indexes into the history) that show it.
//!
//! | checker | must hold |
//! | --- | --- |
//! | `inconsistent-offsets` | one (partition, offset) is only ever one value, across acks and reads |
//! | `duplicate` | a value appears at one offset only |
//! | `lost-write` | every acked value at or below the highest offset any read reached was read |
//! | `unseen` | after the final reads, every acked value was read |
//! | `nonmonotonic-send` | one producer's acked sends to a partition land in send order |
//! | `realtime-order` | a send invoked after another send's ack gets a higher offset |
//! | `poll-skip` / `nonmonotonic-poll` | a consumer reads contiguous, increasing offsets between seeks |
//! | `hw-monotonic` | high watermarks and ListOffsets(latest) seen by clients never go back in real time |
//! | `phantom-value` | every value read was sent by someone (a corrupt record was never served) |
//! | `read-then-vanished` | a record any consumer read stays at its offset: the final read returns it there |
//! | `single-owner`, `commit-fenced`, `committed-offsets-durable`, `no-skip` | consumer groups (see [`groups`]) |

pub mod availability;
pub mod epochs;
pub mod exits;
pub mod groups;
pub mod metadata;
pub mod replicas;
pub mod state;

use crate::history::{History, Op, Outcome, Partition, Process, Value};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub partition: Partition,
    pub offsets: Vec<i64>,
    pub values: Vec<Value>,
    /// Indexes of the operations that show the violation.
    pub operations: Vec<usize>,
    pub detail: String,
}

/// Runs every history checker. `final_reads_done` enables `unseen`, which is only meaningful
/// once the heal phase has read every partition to its end.
pub fn check_history(history: &History, final_reads_done: bool) -> Vec<Violation> {
    let mut violations = Vec::new();
    violations.extend(inconsistent_offsets(history));
    violations.extend(duplicate(history));
    violations.extend(lost_write(history));
    if final_reads_done {
        violations.extend(unseen(history));
        // No scenario topic has a retention limit: nothing may expire within a run.
        violations.extend(read_then_vanished(history, false));
    }
    violations.extend(nonmonotonic_send(history));
    violations.extend(realtime_order(history));
    violations.extend(poll_order(history));
    violations.extend(hw_monotonic(history));
    violations.extend(phantom_value(history));
    violations.extend(groups::single_owner(history));
    violations.extend(groups::commit_fenced(history));
    violations.extend(groups::revoke_before_reassign(history));
    violations.extend(groups::committed_offsets_durable(history));
    violations.extend(groups::no_skip(history));
    violations
}

/// What the final read of one partition saw: the end it read to and the value at each offset.
struct FinalRead {
    log_end: i64,
    values: BTreeMap<i64, Value>,
}

impl FinalRead {
    /// The first offset the final read returned: the log start then (or the end, if empty).
    /// Offsets below it may have gone by retention, which is not a loss.
    fn log_start(&self) -> i64 {
        self.values.keys().next().copied().unwrap_or(self.log_end)
    }
}

/// The end each partition's final read reached (the heal phase's ListLatest).
pub fn final_log_ends(history: &History) -> BTreeMap<Partition, i64> {
    final_reads(history).into_iter().map(|(p, read)| (p, read.log_end)).collect()
}

fn final_reads(history: &History) -> BTreeMap<Partition, FinalRead> {
    let mut reads: BTreeMap<Partition, FinalRead> = BTreeMap::new();
    for o in history.operations.iter().filter(|o| o.process.is_final_reader() && o.outcome == Outcome::Ok) {
        match &o.op {
            Op::ListLatest { partition, offset: Some(end) } => {
                reads
                    .entry(*partition)
                    .or_insert_with(|| FinalRead { log_end: *end, values: BTreeMap::new() })
                    .log_end = *end;
            }
            Op::Poll { partition, records, .. } => {
                let read = reads.entry(*partition).or_insert_with(|| FinalRead { log_end: 0, values: BTreeMap::new() });
                read.values.extend(records.iter().copied());
            }
            _ => {}
        }
    }
    reads
}

/// `read-then-vanished`: a record once returned to any consumer stays at its offset for the
/// rest of the run (acks=0/1 writes included, not only acknowledged ones). Judged against the
/// final reads: the value must be there at its offset. Below where the final read started is
/// excused only when `retention_may_delete` (the topic has a retention limit that can expire
/// records within the run); the simulator's topics have none, so a moved log start is a loss.
/// Only meaningful once the final reads finished.
pub fn read_then_vanished(history: &History, retention_may_delete: bool) -> Vec<Violation> {
    let finals = final_reads(history);
    let mut vanished: BTreeMap<(Partition, i64, Value), usize> = BTreeMap::new();
    for (i, o, partition, records) in history.successful_polls() {
        let Some(end) = finals.get(&partition).filter(|_| !o.process.is_final_reader()) else { continue };
        for &(offset, value) in records {
            let deleted_by_retention = retention_may_delete && offset < end.log_start();
            if !deleted_by_retention && end.values.get(&offset) != Some(&value) {
                vanished.entry((partition, offset, value)).or_insert(i);
            }
        }
    }
    vanished
        .into_iter()
        .map(|((partition, offset, value), op)| {
            let end = &finals[&partition];
            let now = match end.values.get(&offset) {
                Some(other) => format!("the final read found {other} there"),
                None if offset < end.log_start() => {
                    format!("the final read started at offset {} (nothing may expire in this run)", end.log_start())
                }
                None => format!("the final read ended at offset {}", end.log_end),
            };
            Violation {
                invariant: "read-then-vanished",
                partition,
                offsets: vec![offset],
                values: vec![value],
                operations: vec![op],
                detail: format!("a consumer read {value} at offset {offset} of partition {partition}, but {now}"),
            }
        })
        .collect()
}

pub fn phantom_value(history: &History) -> Vec<Violation> {
    let sent: BTreeSet<(Partition, Value)> = history
        .operations
        .iter()
        .filter_map(|o| match &o.op {
            Op::Send { partition, value, .. } => Some((*partition, *value)),
            _ => None,
        })
        .collect();
    let mut violations = Vec::new();
    for (i, _, partition, records) in history.successful_polls() {
        for &(offset, value) in records {
            if !sent.contains(&(partition, value)) {
                violations.push(Violation {
                    invariant: "phantom-value",
                    partition,
                    offsets: vec![offset],
                    values: vec![value],
                    operations: vec![i],
                    detail: format!(
                        "offset {offset} was read holding {value}, which nobody sent to partition {partition}"
                    ),
                });
            }
        }
    }
    violations
}

/// An acknowledged send, as the order checkers see it.
#[derive(Clone, Copy)]
struct AckedSend {
    op: usize,
    invoked_ns: u64,
    completed_ns: u64,
    value: Value,
    offset: i64,
}

/// Acknowledged sends grouped by `key`.
fn acked_sends_by<K: Ord>(history: &History, key: impl Fn(Process, Partition) -> K) -> BTreeMap<K, Vec<AckedSend>> {
    let mut groups: BTreeMap<K, Vec<AckedSend>> = BTreeMap::new();
    for (op, o, partition, value, offset) in history.acknowledged_sends() {
        let send = AckedSend { op, invoked_ns: o.invoked_ns, completed_ns: o.completed_ns, value, offset };
        groups.entry(key(o.process, partition)).or_default().push(send);
    }
    groups
}

/// Every (partition, offset) → value observation: acks and reads, with the operation index.
fn observations(history: &History) -> Vec<(Partition, i64, Value, usize)> {
    let mut seen: Vec<(Partition, i64, Value, usize)> =
        history.acknowledged_sends().map(|(i, _, p, v, o)| (p, o, v, i)).collect();
    for (i, _, partition, records) in history.successful_polls() {
        seen.extend(records.iter().map(|&(offset, value)| (partition, offset, value, i)));
    }
    seen
}

pub fn inconsistent_offsets(history: &History) -> Vec<Violation> {
    let mut at: BTreeMap<(Partition, i64), BTreeMap<Value, Vec<usize>>> = BTreeMap::new();
    for (partition, offset, value, op) in observations(history) {
        at.entry((partition, offset)).or_default().entry(value).or_default().push(op);
    }
    at.into_iter()
        .filter(|(_, values)| values.len() > 1)
        .map(|((partition, offset), values)| Violation {
            invariant: "inconsistent-offsets",
            partition,
            offsets: vec![offset],
            values: values.keys().copied().collect(),
            operations: values.values().flatten().copied().collect(),
            detail: format!(
                "offset {offset} of partition {partition} was seen holding {} different values",
                values.len()
            ),
        })
        .collect()
}

pub fn duplicate(history: &History) -> Vec<Violation> {
    let mut offsets_of: BTreeMap<(Partition, Value), BTreeMap<i64, Vec<usize>>> = BTreeMap::new();
    for (partition, offset, value, op) in observations(history) {
        offsets_of.entry((partition, value)).or_default().entry(offset).or_default().push(op);
    }
    offsets_of
        .into_iter()
        .filter(|(_, offsets)| offsets.len() > 1)
        .map(|((partition, value), offsets)| Violation {
            invariant: "duplicate",
            partition,
            offsets: offsets.keys().copied().collect(),
            values: vec![value],
            operations: offsets.values().flatten().copied().collect(),
            detail: format!("value {value} appears at {} offsets", offsets.len()),
        })
        .collect()
}

/// Values read anywhere, per partition.
fn values_read(history: &History) -> BTreeMap<Partition, BTreeSet<Value>> {
    let mut read: BTreeMap<Partition, BTreeSet<Value>> = BTreeMap::new();
    for (_, _, partition, records) in history.successful_polls() {
        read.entry(partition).or_default().extend(records.iter().map(|&(_, v)| v));
    }
    read
}

pub fn lost_write(history: &History) -> Vec<Violation> {
    let read = values_read(history);
    let mut highest_read: BTreeMap<Partition, i64> = BTreeMap::new();
    for (_, _, partition, records) in history.successful_polls() {
        if let Some(&(offset, _)) = records.iter().max_by_key(|(o, _)| *o) {
            let entry = highest_read.entry(partition).or_insert(offset);
            *entry = (*entry).max(offset);
        }
    }
    history
        .acknowledged_sends()
        .filter(|&(_, _, partition, value, offset)| {
            highest_read.get(&partition).is_some_and(|&h| offset <= h)
                && !read.get(&partition).is_some_and(|r| r.contains(&value))
        })
        .map(|(i, _, partition, value, offset)| Violation {
            invariant: "lost-write",
            partition,
            offsets: vec![offset],
            values: vec![value],
            operations: vec![i],
            detail: format!(
                "{value} was acknowledged at offset {offset}, reads reached offset {}, but nobody ever read {value}",
                highest_read[&partition]
            ),
        })
        .collect()
}

pub fn unseen(history: &History) -> Vec<Violation> {
    let read = values_read(history);
    history
        .acknowledged_sends()
        .filter(|&(_, _, partition, value, _)| !read.get(&partition).is_some_and(|r| r.contains(&value)))
        .map(|(i, _, partition, value, offset)| Violation {
            invariant: "unseen",
            partition,
            offsets: vec![offset],
            values: vec![value],
            operations: vec![i],
            detail: format!("{value} was acknowledged at offset {offset} but never read, even by the final reads"),
        })
        .collect()
}

pub fn nonmonotonic_send(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    for ((process, partition), mut sends) in acked_sends_by(history, |process, partition| (process, partition)) {
        // Send order: invocation time, then history position (a batch's records share a time).
        // Send order: invocation time, then the value (a producer's values count up in the
        // order it sends them; values queued at the same instant share an invocation time).
        sends.sort_by_key(|s| (s.invoked_ns, s.value, s.op));
        for pair in sends.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.offset <= a.offset {
                violations.push(Violation {
                    invariant: "nonmonotonic-send",
                    partition,
                    offsets: vec![a.offset, b.offset],
                    values: vec![a.value, b.value],
                    operations: vec![a.op, b.op],
                    detail: format!(
                        "producer {} sent {} before {}, but they landed at offsets {} and {}",
                        process.0, a.value, b.value, a.offset, b.offset
                    ),
                });
            }
        }
    }
    violations
}

pub fn realtime_order(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (partition, sends) in acked_sends_by(history, |_, partition| partition) {
        // For each send B, the acked send A with the highest offset among those completed
        // before B was invoked must be below B.
        let mut by_completion = sends.clone();
        by_completion.sort_by_key(|s| s.completed_ns);
        let mut by_invocation = sends;
        by_invocation.sort_by_key(|s| s.invoked_ns);
        let mut best: Option<AckedSend> = None;
        let mut next = 0;
        for b in &by_invocation {
            while next < by_completion.len() && by_completion[next].completed_ns < b.invoked_ns {
                let a = by_completion[next];
                if best.is_none_or(|best| a.offset > best.offset) {
                    best = Some(a);
                }
                next += 1;
            }
            if let Some(a) = best {
                if b.offset <= a.offset {
                    violations.push(Violation {
                        invariant: "realtime-order",
                        partition,
                        offsets: vec![a.offset, b.offset],
                        values: vec![a.value, b.value],
                        operations: vec![a.op, b.op],
                        detail: format!(
                            "{} was acknowledged at offset {} before {} was sent, yet {} got offset {}",
                            a.value, a.offset, b.value, b.value, b.offset
                        ),
                    });
                }
            }
        }
    }
    violations
}

pub fn poll_order(history: &History) -> Vec<Violation> {
    let mut position: BTreeMap<(Process, Partition), (i64, usize)> = BTreeMap::new();
    let mut violations = Vec::new();
    for (i, operation) in history.operations.iter().enumerate() {
        let Op::Poll { partition, records, after_seek, .. } = &operation.op else { continue };
        if operation.outcome != Outcome::Ok {
            continue;
        }
        let key = (operation.process, *partition);
        if *after_seek {
            position.remove(&key);
        }
        for &(offset, value) in records {
            if let Some(&(last, last_op)) = position.get(&key) {
                let (invariant, what) = match offset {
                    o if o <= last => ("nonmonotonic-poll", "went back to"),
                    o if o > last + 1 => ("poll-skip", "skipped to"),
                    _ => ("", ""),
                };
                if !invariant.is_empty() {
                    violations.push(Violation {
                        invariant,
                        partition: *partition,
                        offsets: vec![last, offset],
                        values: vec![value],
                        operations: vec![last_op, i],
                        detail: format!(
                            "consumer {} read offset {last}, then {what} offset {offset}",
                            operation.process.0
                        ),
                    });
                }
            }
            position.insert(key, (offset, i));
        }
    }
    violations
}

pub fn hw_monotonic(history: &History) -> Vec<Violation> {
    // (partition) -> observations (invoked, completed, watermark, op)
    let mut observed: BTreeMap<Partition, Vec<(u64, u64, i64, usize)>> = BTreeMap::new();
    for (i, operation) in history.operations.iter().enumerate() {
        if operation.outcome != Outcome::Ok {
            continue;
        }
        let (partition, watermark) = match &operation.op {
            Op::Poll { partition, high_watermark: Some(hw), .. } => (*partition, *hw),
            Op::ListLatest { partition, offset: Some(offset) } => (*partition, *offset),
            _ => continue,
        };
        observed.entry(partition).or_default().push((operation.invoked_ns, operation.completed_ns, watermark, i));
    }
    let mut violations = Vec::new();
    for (partition, observations) in observed {
        let mut by_completion = observations.clone();
        by_completion.sort_by_key(|o| o.1);
        let mut by_invocation = observations;
        by_invocation.sort_by_key(|o| o.0);
        let mut highest: Option<(i64, usize)> = None;
        let mut next = 0;
        for &(invoked, _, watermark, i) in &by_invocation {
            while next < by_completion.len() && by_completion[next].1 < invoked {
                let (_, _, w, j) = by_completion[next];
                if highest.is_none_or(|(h, _)| w > h) {
                    highest = Some((w, j));
                }
                next += 1;
            }
            if let Some((h, j)) = highest {
                if watermark < h {
                    violations.push(Violation {
                        invariant: "hw-monotonic",
                        partition,
                        offsets: vec![h, watermark],
                        values: vec![],
                        operations: vec![j, i],
                        detail: format!("a client saw high watermark {h}; a later request saw {watermark}"),
                    });
                }
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests;
