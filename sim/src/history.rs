//! What clients saw: every operation with its invocation time, completion time and outcome.
//!
//! The checkers read only this (like a black-box tester). Values are unique per run, so a
//! checker can follow each one from its send to every read of it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A unique record value written by the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Value(pub u64);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A client process (a producer or a consumer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Process(pub u32);

impl Process {
    /// Process ids from here on are the heal phase's final readers, one per partition.
    const FINAL_READER_BASE: u32 = 2000;

    /// The final reader of `partition`: it reads the partition from its log start to its end
    /// once the faults are over, and records the end it read to as a ListLatest.
    pub fn final_reader(partition: Partition) -> Process {
        Process(Self::FINAL_READER_BASE + u32::try_from(partition).expect("partitions are non-negative"))
    }

    pub fn is_final_reader(self) -> bool {
        self.0 >= Self::FINAL_READER_BASE
    }
}

/// Partition index within the workload's topic.
pub type Partition = i32;

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Definitely happened (an acknowledgement, a read response).
    Ok,
    /// Definitely did not happen (an error that guarantees no effect).
    Fail,
    /// Unknown: a timeout or a lost connection. It may or may not have taken effect.
    Info,
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// One record sent to a partition; `offset` is what the ack said (`Ok` only).
    Send { partition: Partition, value: Value, offset: Option<i64> },
    /// One fetch by an assigned consumer: the records it returned, in order, and the high
    /// watermark in the response. `after_seek` marks the first poll after an assignment or seek
    /// (the previous position is not continued).
    Poll { partition: Partition, records: Vec<(i64, Value)>, high_watermark: Option<i64>, after_seek: bool },
    /// ListOffsets(latest).
    ListLatest { partition: Partition, offset: Option<i64> },
    /// A group member's SyncGroup answer: the partitions it owns in `generation` (recorded
    /// only once the assignment was given, so the generation is stored at the coordinator).
    GroupAssigned { member: String, generation: i32, partitions: Vec<Partition> },
    /// An OffsetCommit of one partition by a member in `generation`; `Ok` = acknowledged.
    GroupCommit { member: String, generation: i32, partition: Partition, offset: i64 },
    /// An OffsetFetch answer for one partition (`None`: no committed offset).
    GroupOffsetFetch { partition: Partition, offset: Option<i64> },
    /// A KIP-848 ConsumerGroupHeartbeat at member `epoch` (0 with `joining`, -1 or -2: a
    /// leave), saying it owns `owned` (`None`: not said); `answered_epoch` is the epoch the
    /// answer gave (`Ok` only).
    GroupHeartbeat { member: String, epoch: i32, owned: Option<Vec<Partition>>, answered_epoch: i32, joining: bool },
}

/// One operation: invoke, then ok / fail / info.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub process: Process,
    /// Simulated time of invocation and completion, in nanoseconds since the run started.
    /// Invariant: `invoked_ns <= completed_ns`.
    pub invoked_ns: u64,
    pub completed_ns: u64,
    pub outcome: Outcome,
    pub op: Op,
}

/// The whole history of a run, in completion order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub operations: Vec<Operation>,
}

impl History {
    pub fn push(&mut self, operation: Operation) {
        assert!(operation.invoked_ns <= operation.completed_ns, "completed before invoked: {operation:?}");
        self.operations.push(operation);
    }

    /// Successful sends: (operation index, partition, value, offset).
    pub fn acknowledged_sends(&self) -> impl Iterator<Item = (usize, &Operation, Partition, Value, i64)> {
        self.operations.iter().enumerate().filter_map(|(i, o)| match (&o.op, o.outcome) {
            (Op::Send { partition, value, offset: Some(offset) }, Outcome::Ok) => {
                Some((i, o, *partition, *value, *offset))
            }
            _ => None,
        })
    }

    /// Successful polls: (operation index, operation, partition, records).
    pub fn successful_polls(&self) -> impl Iterator<Item = (usize, &Operation, Partition, &[(i64, Value)])> {
        self.operations.iter().enumerate().filter_map(|(i, o)| match (&o.op, o.outcome) {
            (Op::Poll { partition, records, .. }, Outcome::Ok) => Some((i, o, *partition, records.as_slice())),
            _ => None,
        })
    }
}
