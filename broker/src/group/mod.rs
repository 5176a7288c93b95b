//! The group coordinator: Kafka's classic consumer-group protocol as a synchronous state
//! machine (no IO, no clock: time is an argument, randomness for member ids is passed in).
//!
//! - [`records`]: the records of `__consumer_offsets` in Kafka's format, and which partition
//!   holds a group.
//! - [`membership`]: one group's membership and rebalance (JoinGroup, SyncGroup, Heartbeat,
//!   LeaveGroup, session and rebalance timeouts, static members).
//! - [`coordinator`]: the groups of the `__consumer_offsets` partitions this broker leads,
//!   loaded by replaying those partitions; offsets (commit, fetch, retention).
//!
//! What is stored follows the records-and-replay contract (`crate::replay`): offsets and a
//! group's completed generation are records; the coordinator hands them out as a [`Write`],
//! the server appends them to the group's partition and waits for the high watermark, and only
//! then calls [`coordinator::GroupCoordinator::written`], which applies them and answers. A
//! new coordinator loads a partition through the same path. Membership between generations
//! (who has rejoined, heartbeat deadlines, parked requests) is soft state, as in Kafka: a
//! coordinator that takes over starts it afresh from the last stored generation.
//!
//! JoinGroup and SyncGroup are long polls: a request may be parked under a [`WaiterId`] the
//! server chose, and is answered later through [`Output::replies`] (when the rebalance
//! completes, times out, or the coordinator moves).

pub mod assignors;
pub mod consumer;
mod consumer_coordinator;
pub mod consumer_records;
#[cfg(test)]
mod consumer_tests;
pub mod coordinator;
pub mod membership;
pub mod reconcile;
pub mod records;
#[cfg(test)]
mod tests;

pub use consumer::{ConsumerGroupConfig, ConsumerHeartbeat, HeartbeatReply};
pub use consumer_coordinator::{ConsumerGroupDescription, DescribedMember};
pub use coordinator::{CommitRequest, GroupCoordinator, GroupSummary, LoadState, OffsetFetch};
pub use membership::{GroupState, MemberSummary};
pub use records::{partition_for, GroupRecord, GroupValue, MemberValue, OffsetValue};

use crate::types::ErrorCode;
use bytes::Bytes;

/// Longest group id, member id, instance id, protocol type or protocol name taken (bytes):
/// they are stored as `int16`-length strings in `__consumer_offsets`.
pub const NAME_BYTES_MAX: usize = 16_384;
/// Protocols one JoinGroup may offer.
pub const MEMBER_PROTOCOLS_MAX: usize = 64;
/// Bytes of protocol metadata one member may send (all its protocols together): every member's
/// is kept and written with the group's generation.
pub const MEMBER_METADATA_BYTES_MAX: usize = 1024 * 1024;
/// Bytes of one member's assignment in the leader's SyncGroup.
pub const ASSIGNMENT_BYTES_MAX: usize = 1024 * 1024;

/// Names a parked JoinGroup or SyncGroup request; chosen by the server, unique per process.
pub type WaiterId = u64;

/// The group coordinator's settings (Kafka's names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`.
    pub offsets_partitions: i32,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members (extended per new member, up to the rebalance timeout).
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size`: members (joined or waiting for a member id) per group. Kafka's default
    /// is unbounded; Gregor's is 10,000, so JoinGroups with fresh member ids cannot grow a group
    /// without bound.
    pub max_size: usize,
    /// Groups one coordinator holds at most (Gregor's own limit, `group.coordinator.groups.max`):
    /// a client inventing group ids cannot grow memory without bound. Beyond it a new group
    /// gets COORDINATOR_NOT_AVAILABLE.
    pub max_groups: usize,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes`, in ms: how long an empty group's offsets are kept.
    pub offsets_retention_ms: i64,
    /// KIP-848 consumer groups (`group.consumer.*`).
    pub consumer: ConsumerGroupConfig,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_partitions: 50,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 10_000,
            max_groups: 100_000,
            offset_metadata_max_bytes: 4_096,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            consumer: ConsumerGroupConfig::default(),
        }
    }
}

/// A JoinGroup, whatever its version.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member that has none yet.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// The member's protocols in its order of preference, with its metadata for each.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
    /// Randomness for a new member id (the server draws it; the core reads no randomness).
    pub member_id_entropy: u128,
}

/// A member as the leader sees it in its JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinReply {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members (with their metadata for the chosen protocol).
    pub members: Vec<JoinedMember>,
    /// A static leader rejoining a stable group: the assignment stands, do not compute one.
    pub skip_assignment: bool,
}

impl JoinReply {
    pub fn error(error: ErrorCode, member_id: &str) -> Self {
        JoinReply {
            error,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// A SyncGroup, whatever its version.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// v5+: checked against the group's when given.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment: (member id, opaque assignment). Empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// The answer to a SyncGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReply {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncReply {
    pub fn error(error: ErrorCode) -> Self {
        SyncReply { error, protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// An answer to a parked request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Join(JoinReply),
    Sync(SyncReply),
    ConsumerHeartbeat(HeartbeatReply),
}

/// Records to append to one `__consumer_offsets` partition, and what to do once they are
/// committed (or failed): hand the result to [`coordinator::GroupCoordinator::written`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub partition: i32,
    pub records: Vec<GroupRecord>,
    pub then: AfterWrite,
}

/// What a committed [`Write`] completes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterWrite {
    /// Nothing waits on it (an emptied group's generation, expired offsets).
    Nothing,
    /// The leader's assignment for this generation: the group becomes Stable and every member
    /// waiting in SyncGroup gets its assignment.
    Assignment { group_id: String, generation_id: i32 },
    /// An OffsetCommit: the caller answers it.
    Offsets,
    /// A consumer-group heartbeat's records: once applied, the member is answered and the
    /// group's next queued heartbeat is decided.
    /// `load` is the partition's load the decision was made in (see
    /// `GroupCoordinator::load_id`): a write that ends after the partition was unloaded or
    /// loaded again changes nothing (the load read the log).
    ConsumerHeartbeat { group_id: String, waiter: WaiterId, decision: consumer::HeartbeatDecision, load: u64 },
    /// A consumer group's change nobody waits for (a member's session or rebalance timeout,
    /// expired offsets); the group's queued heartbeats are decided next.
    ConsumerGroupChange { group_id: String, load: u64 },
}

/// What the coordinator wants done after a call: answers to parked requests, and records to
/// write.
#[derive(Debug, Default)]
pub struct Output {
    pub replies: Vec<(WaiterId, Reply)>,
    pub writes: Vec<Write>,
}

impl Output {
    pub fn reply(&mut self, waiter: WaiterId, reply: Reply) {
        self.replies.push((waiter, reply));
    }

    pub fn append(&mut self, other: Output) {
        self.replies.extend(other.replies);
        self.writes.extend(other.writes);
    }
}
