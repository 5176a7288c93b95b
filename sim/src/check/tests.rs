//! Each checker on hand-written histories: one that holds, and one that breaks it.

use super::*;
use crate::history::{History, Op, Operation, Outcome, Process, Value};

const P: Partition = 0;

fn op(process: u32, invoked_ns: u64, completed_ns: u64, outcome: Outcome, op: Op) -> Operation {
    Operation { process: Process(process), invoked_ns, completed_ns, outcome, op }
}

fn send(process: u32, t: (u64, u64), value: u64, offset: i64) -> Operation {
    op(process, t.0, t.1, Outcome::Ok, Op::Send { partition: P, value: Value(value), offset: Some(offset) })
}

fn poll(process: u32, t: (u64, u64), records: &[(i64, u64)], hw: i64, after_seek: bool) -> Operation {
    let records = records.iter().map(|&(o, v)| (o, Value(v))).collect();
    op(process, t.0, t.1, Outcome::Ok, Op::Poll { partition: P, records, high_watermark: Some(hw), after_seek })
}

fn history(operations: Vec<Operation>) -> History {
    let mut history = History::default();
    operations.into_iter().for_each(|o| history.push(o));
    history
}

fn invariants(violations: &[Violation]) -> Vec<&'static str> {
    violations.iter().map(|v| v.invariant).collect()
}

/// Three sends read back in order by one consumer: every checker passes.
fn healthy() -> History {
    history(vec![
        send(1, (0, 10), 100, 0),
        send(1, (11, 20), 101, 1),
        send(2, (21, 30), 102, 2),
        poll(9, (31, 40), &[(0, 100), (1, 101)], 2, true),
        poll(9, (41, 50), &[(2, 102)], 3, false),
    ])
}

#[test]
fn a_healthy_history_passes_every_checker() {
    assert_eq!(check_history(&healthy(), true), vec![]);
}

#[test]
fn inconsistent_offsets_catches_two_values_at_one_offset() {
    let h = history(vec![send(1, (0, 10), 100, 0), poll(9, (11, 20), &[(0, 999)], 1, true)]);
    let v = inconsistent_offsets(&h);
    assert_eq!(invariants(&v), vec!["inconsistent-offsets"]);
    assert_eq!(v[0].offsets, vec![0]);
    assert_eq!(v[0].values, vec![Value(100), Value(999)]);
}

#[test]
fn duplicate_catches_one_value_at_two_offsets() {
    let h = history(vec![send(1, (0, 10), 100, 0), poll(9, (11, 20), &[(0, 100), (1, 100)], 2, true)]);
    let v = duplicate(&h);
    assert_eq!(invariants(&v), vec!["duplicate"]);
    assert_eq!(v[0].offsets, vec![0, 1]);
}

#[test]
fn lost_write_catches_an_acked_value_below_the_highest_read_that_nobody_read() {
    // 101 was acked at offset 1; a read reached offset 2 but never saw 101.
    let h = history(vec![
        send(1, (0, 10), 100, 0),
        send(1, (11, 20), 101, 1),
        send(1, (21, 30), 102, 2),
        poll(9, (31, 40), &[(0, 100), (2, 102)], 3, true),
    ]);
    let v = lost_write(&h);
    assert_eq!(invariants(&v), vec!["lost-write"]);
    assert_eq!(v[0].values, vec![Value(101)]);
    // An acked value above every read is not lost (yet): only `unseen` reports it.
    let h = history(vec![send(1, (0, 10), 100, 0), send(1, (11, 20), 101, 1), poll(9, (21, 30), &[(0, 100)], 1, true)]);
    assert_eq!(lost_write(&h), vec![]);
    assert_eq!(invariants(&unseen(&h)), vec!["unseen"]);
}

#[test]
fn unacknowledged_sends_may_be_lost_without_a_violation() {
    let h = history(vec![
        op(1, 0, 10, Outcome::Info, Op::Send { partition: P, value: Value(100), offset: None }),
        op(1, 11, 20, Outcome::Fail, Op::Send { partition: P, value: Value(101), offset: None }),
        poll(9, (21, 30), &[], 0, true),
    ]);
    assert_eq!(check_history(&h, true), vec![]);
}

#[test]
fn nonmonotonic_send_catches_a_producer_whose_later_send_landed_earlier() {
    let h = history(vec![send(1, (0, 10), 100, 5), send(1, (5, 12), 101, 4)]);
    let v = nonmonotonic_send(&h);
    assert_eq!(invariants(&v), vec!["nonmonotonic-send"]);
    assert_eq!(v[0].offsets, vec![5, 4]);
    // Two producers may interleave freely.
    let h = history(vec![send(1, (0, 10), 100, 5), send(2, (5, 12), 101, 4)]);
    assert_eq!(nonmonotonic_send(&h), vec![]);
}

#[test]
fn realtime_order_catches_a_send_after_an_ack_that_got_a_lower_offset() {
    let h = history(vec![send(1, (0, 10), 100, 7), send(2, (20, 30), 101, 3)]);
    let v = realtime_order(&h);
    assert_eq!(invariants(&v), vec!["realtime-order"]);
    assert_eq!(v[0].values, vec![Value(100), Value(101)]);
    // Concurrent sends (overlapping in time) may land in any order.
    let h = history(vec![send(1, (0, 10), 100, 7), send(2, (5, 30), 101, 3)]);
    assert_eq!(realtime_order(&h), vec![]);
}

#[test]
fn poll_order_catches_skips_and_rewinds_but_not_after_a_seek() {
    let h = history(vec![poll(9, (0, 10), &[(0, 100), (1, 101)], 5, true), poll(9, (11, 20), &[(3, 103)], 5, false)]);
    assert_eq!(invariants(&poll_order(&h)), vec!["poll-skip"]);
    let h = history(vec![poll(9, (0, 10), &[(0, 100), (1, 101)], 5, true), poll(9, (11, 20), &[(1, 101)], 5, false)]);
    assert_eq!(invariants(&poll_order(&h)), vec!["nonmonotonic-poll"]);
    let h = history(vec![poll(9, (0, 10), &[(0, 100), (1, 101)], 5, true), poll(9, (11, 20), &[(0, 100)], 5, true)]);
    assert_eq!(poll_order(&h), vec![]);
}

#[test]
fn hw_monotonic_catches_a_high_watermark_that_went_back_in_real_time() {
    let h = history(vec![poll(8, (0, 10), &[], 5, true), poll(9, (20, 30), &[], 3, true)]);
    let v = hw_monotonic(&h);
    assert_eq!(invariants(&v), vec!["hw-monotonic"]);
    assert_eq!(v[0].offsets, vec![5, 3]);
    let h = history(vec![
        poll(8, (0, 10), &[], 5, true),
        op(9, 20, 30, Outcome::Ok, Op::ListLatest { partition: P, offset: Some(4) }),
    ]);
    assert_eq!(invariants(&hw_monotonic(&h)), vec!["hw-monotonic"]);
    // Overlapping requests may see either order.
    let h = history(vec![poll(8, (0, 25), &[], 5, true), poll(9, (20, 30), &[], 3, true)]);
    assert_eq!(hw_monotonic(&h), vec![]);
}

#[test]
fn phantom_value_catches_a_read_of_a_value_nobody_sent() {
    let h = history(vec![send(1, (0, 10), 100, 0), poll(9, (11, 20), &[(0, 100), (1, 0xdead)], 2, true)]);
    let v = phantom_value(&h);
    assert_eq!(invariants(&v), vec!["phantom-value"]);
    assert_eq!(v[0].values, vec![Value(0xdead)]);
    // A value whose send is still unacknowledged (info) is not a phantom.
    let h = history(vec![
        op(1, 0, 10, Outcome::Info, Op::Send { partition: P, value: Value(100), offset: None }),
        poll(9, (11, 20), &[(0, 100)], 1, true),
    ]);
    assert_eq!(phantom_value(&h), vec![]);
}

fn final_end(t: (u64, u64), end: i64) -> Operation {
    op(Process::final_reader(P).0, t.0, t.1, Outcome::Ok, Op::ListLatest { partition: P, offset: Some(end) })
}

fn final_poll(t: (u64, u64), records: &[(i64, u64)], hw: i64) -> Operation {
    poll(Process::final_reader(P).0, t, records, hw, true)
}

/// An acks=1 write a consumer read from a lone leader, gone after the next election: the final
/// read ends before its offset, or finds another value there.
#[test]
fn read_then_vanished_catches_a_read_record_missing_from_the_final_read() {
    let read_then_cut = history(vec![
        poll(9, (0, 10), &[(0, 100), (1, 101)], 2, true),
        final_end((20, 21), 1),
        final_poll((22, 23), &[(0, 100)], 1),
    ]);
    let v = read_then_vanished(&read_then_cut, false);
    assert_eq!(invariants(&v), vec!["read-then-vanished"]);
    assert_eq!((v[0].offsets.clone(), v[0].values.clone()), (vec![1], vec![Value(101)]));
    assert!(v[0].detail.contains("ended at offset 1"), "{}", v[0].detail);

    let overwritten = history(vec![
        poll(9, (0, 10), &[(0, 100), (1, 101)], 2, true),
        final_end((20, 21), 2),
        final_poll((22, 23), &[(0, 100), (1, 555)], 2),
    ]);
    assert_eq!(invariants(&read_then_vanished(&overwritten, false)), vec!["read-then-vanished"]);
    assert!(invariants(&check_history(&overwritten, true)).contains(&"read-then-vanished"), "check_history runs it");
}

/// Near misses: the record is still there, or retention moved the log start past it.
#[test]
fn read_then_vanished_allows_records_still_there_or_removed_by_retention() {
    let still_there = history(vec![
        poll(9, (0, 10), &[(0, 100), (1, 101)], 2, true),
        final_end((20, 21), 3),
        final_poll((22, 23), &[(0, 100), (1, 101), (2, 102)], 3),
    ]);
    assert_eq!(read_then_vanished(&still_there, false), vec![]);
    let retention = history(vec![
        poll(9, (0, 10), &[(0, 100), (1, 101)], 2, true),
        final_end((20, 21), 5),
        final_poll((22, 23), &[(4, 104)], 5),
    ]);
    assert_eq!(read_then_vanished(&retention, true), vec![]);
    let deleted = read_then_vanished(&retention, false);
    assert_eq!(
        invariants(&deleted),
        vec!["read-then-vanished", "read-then-vanished"],
        "no retention: a moved log start lost them"
    );
    assert!(deleted[0].detail.contains("started at offset 4"), "{}", deleted[0].detail);
    let all_deleted = history(vec![poll(9, (0, 10), &[(0, 100)], 1, true), final_end((20, 21), 5)]);
    assert_eq!(read_then_vanished(&all_deleted, true), vec![], "an empty final read starts at its end");
    let unfinished = history(vec![poll(9, (0, 10), &[(0, 100)], 1, true), final_end((20, 21), 0)]);
    assert_eq!(invariants(&read_then_vanished(&unfinished, false)), vec!["read-then-vanished"]);
    assert!(
        !invariants(&check_history(&unfinished, false)).contains(&"read-then-vanished"),
        "not judged before the final reads finished"
    );
}
