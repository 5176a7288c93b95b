//! One KIP-848 consumer group (`group.protocol=consumer`): the coordinator assigns, members
//! heartbeat. A synchronous state machine over committed records (`consumer_records`):
//! [`ConsumerGroup::decide_heartbeat`] reads the committed state and returns the records a
//! heartbeat writes; [`ConsumerGroup::replay`] is the only way the state changes (after the
//! records commit, and when a coordinator loads the group). Session and rebalance deadlines are
//! soft state, as in Kafka, restarted afresh on load.
//!
//! Epochs (Kafka's): the group epoch grows when membership or subscriptions change; the target
//! assignment is recomputed at the group epoch by the next heartbeat; each member's epoch
//! reaches the target's once it has given up what it must (see `super::reconcile`).

use super::assignors::{self, MemberSpec, ASSIGNORS};
use super::consumer_records::{
    Assignment, ConsumerRecord, CurrentAssignment, MemberMetadata, MemberState, TopicMetadata,
};
use super::reconcile::reconcile;
use super::records::OffsetValue;
use crate::types::{ErrorCode, TopicPartition};
use std::collections::{BTreeMap, BTreeSet};

/// `MemberEpoch` of a member leaving for good.
pub const LEAVE_EPOCH: i32 = -1;
/// `MemberEpoch` of a static member leaving for now (it keeps its partitions until its session
/// expires).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// The settings of consumer groups (Kafka's `group.consumer.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`.
    pub max_size: usize,
    /// `group.consumer.assignors`: names from [`ASSIGNORS`], the default first.
    pub assignors: Vec<String>,
    /// `group.consumer.{min,max}.session.timeout.ms`: bounds the session timeout is checked
    /// against when the configuration is read.
    pub session_timeout_bounds_ms: (i32, i32),
    /// `group.consumer.{min,max}.heartbeat.interval.ms` (likewise).
    pub heartbeat_interval_bounds_ms: (i32, i32),
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: 10_000,
            assignors: ASSIGNORS.iter().map(|a| a.to_string()).collect(),
            session_timeout_bounds_ms: (45_000, 60_000),
            heartbeat_interval_bounds_ms: (5_000, 15_000),
        }
    }
}

/// A ConsumerGroupHeartbeat, whatever its version.
#[derive(Clone, Debug, Default)]
pub struct ConsumerHeartbeat {
    pub version: i16,
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged.
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns (`None`: not sent).
    pub topic_partitions: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
    /// Randomness for a member id the coordinator makes up (v0 joins without one).
    pub member_id_entropy: u128,
}

impl ConsumerHeartbeat {
    /// Kafka's "full" request: the member restated everything, so it gets its assignment back.
    fn is_full(&self) -> bool {
        self.rebalance_timeout_ms != -1
            && (self.subscribed_topic_names.is_some() || self.subscribed_topic_regex.is_some())
            && self.topic_partitions.is_some()
    }
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub error: ErrorCode,
    pub error_message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// `None`: unchanged since the member last heard.
    pub assignment: Option<Assignment>,
}

impl HeartbeatReply {
    pub fn error(error: ErrorCode, message: impl Into<String>) -> Self {
        HeartbeatReply {
            error,
            error_message: Some(message.into()),
            member_id: None,
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

/// A refused heartbeat: the code and why.
pub type Refusal = (ErrorCode, String);

fn refuse<T>(code: ErrorCode, why: impl Into<String>) -> Result<T, Refusal> {
    Err((code, why.into()))
}

/// What a heartbeat decided: records to write, and how to answer once they are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatDecision {
    pub records: Vec<ConsumerRecord>,
    pub member_id: String,
    /// The member epoch a leave answers with; `None` for a heartbeat that stays.
    pub leave_epoch: Option<i32>,
    /// Whether the answer carries the member's assignment.
    pub send_assignment: bool,
}

/// A member: what it asked for and what it owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerMember {
    pub metadata: MemberMetadata,
    pub current: CurrentAssignment,
}

/// One consumer group. Invariant: no partition is in two members' `assigned` or
/// `pending_revocation` (checked on every replay of a member's assignment).
#[derive(Clone, Debug, Default)]
pub struct ConsumerGroup {
    pub group_id: String,
    pub partition: i32,
    pub group_epoch: i32,
    /// The subscribed topics that exist, by name, as of the group epoch.
    pub subscription_metadata: BTreeMap<String, TopicMetadata>,
    pub members: BTreeMap<String, ConsumerMember>,
    /// Each member's target, computed at `assignment_epoch`.
    pub target: BTreeMap<String, Assignment>,
    /// -1: no target yet.
    pub assignment_epoch: i32,
    pub offsets: BTreeMap<TopicPartition, OffsetValue>,
    /// How many members subscribe to each topic name (derived from `members` on replay), so a
    /// heartbeat checks the group's topics without going through every member.
    subscribed_names: BTreeMap<String, usize>,
    /// Soft: when each member's session ends unless it heartbeats.
    session_deadlines: BTreeMap<String, i64>,
    /// Soft: a revoking member's deadline, and the epoch it was set at.
    rebalance_deadlines: BTreeMap<String, (i64, i32)>,
}

/// A topic's id and partition count, by name, from the cluster's metadata.
pub type TopicLookup<'a> = &'a dyn Fn(&str) -> Option<(u128, i32)>;

impl ConsumerGroup {
    pub fn new(group_id: &str, partition: i32) -> Self {
        ConsumerGroup { group_id: group_id.to_string(), partition, assignment_epoch: -1, ..ConsumerGroup::default() }
    }

    /// Kafka's group states.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.current.state != MemberState::Stable || m.current.member_epoch != self.assignment_epoch)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor the next target is computed with.
    pub fn assignor(&self, config: &ConsumerGroupConfig) -> String {
        preferred_assignor(config, self.members.values())
    }

    /// Topic names any member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.metadata.subscribed_topic_names.iter().cloned()).collect()
    }

    fn member_by_instance(&self, instance_id: &str) -> Option<(&String, &ConsumerMember)> {
        self.members.iter().find(|(_, m)| m.metadata.instance_id.as_deref() == Some(instance_id))
    }

    // ------------------------------------------------------------ decisions

    /// Decides a heartbeat (joining, staying or leaving) on the committed state.
    pub fn decide_heartbeat(
        &self,
        config: &ConsumerGroupConfig,
        request: &ConsumerHeartbeat,
        topics: TopicLookup,
    ) -> Result<HeartbeatDecision, Refusal> {
        if request.member_epoch == LEAVE_EPOCH || request.member_epoch == STATIC_LEAVE_EPOCH {
            return self.decide_leave(request);
        }
        if self.members.len() >= config.max_size && !self.members.contains_key(&request.member_id) {
            return refuse(ErrorCode::GROUP_MAX_SIZE_REACHED, format!("the group has {} members", self.members.len()));
        }
        let mut records = Vec::new();
        let (member_id, member, replaced) = self.member_for(request, &mut records)?;
        let mut updated = member.clone();
        updated.metadata = updated_metadata(&member.metadata, request);
        let is_new = replaced.is_some() || !self.members.contains_key(&member_id);
        if is_new || updated.metadata != member.metadata {
            records
                .push(ConsumerRecord::Member { member_id: member_id.clone(), value: Some(updated.metadata.clone()) });
        }
        // The group as this heartbeat leaves it: the committed state with the member's update
        // laid over it (nothing is copied on a steady heartbeat).
        let overlay = Overlay { group: self, member_id: &member_id, updated: &updated, replaced: replaced.as_deref() };
        // A static member taking its instance's place changes nobody's subscription.
        let subscriptions_changed = (is_new && replaced.is_none())
            || updated.metadata.subscribed_topic_names != member.metadata.subscribed_topic_names;
        // A static member's replacement takes over the replaced member's subscription.
        let counted = !is_new || replaced.is_some();
        let metadata = self.subscription_metadata_with(&member.metadata, &updated.metadata, counted, topics);
        let mut group_epoch = self.group_epoch;
        if metadata != self.subscription_metadata {
            records.push(ConsumerRecord::SubscriptionMetadata(Some(metadata.values().cloned().collect())));
        }
        if subscriptions_changed || metadata != self.subscription_metadata || self.group_epoch == 0 {
            group_epoch += 1;
            records.push(ConsumerRecord::Metadata(Some(group_epoch)));
        }
        let mut computed = None;
        let mut assignment_epoch = self.assignment_epoch;
        if group_epoch > assignment_epoch {
            let assignor = preferred_assignor(config, overlay.members().map(|(_, m)| m));
            let specs: Vec<MemberSpec> = overlay
                .members()
                .map(|(id, m)| MemberSpec {
                    member_id: id,
                    instance_id: m.metadata.instance_id.as_deref(),
                    subscribed: &m.metadata.subscribed_topic_names,
                    previous: overlay.previous_target(id),
                })
                .collect();
            let targets = assignors::assign(&assignor, &specs, &metadata);
            for (id, assignment) in &targets {
                if overlay.previous_target(id) != Some(assignment) {
                    records
                        .push(ConsumerRecord::TargetMember { member_id: id.clone(), value: Some(assignment.clone()) });
                }
            }
            assignment_epoch = group_epoch;
            records.push(ConsumerRecord::TargetEpoch(Some(assignment_epoch)));
            computed = Some(targets);
        }
        let empty = Assignment::new();
        let member_target = match &computed {
            Some(targets) => targets.get(&member_id),
            None => overlay.previous_target(&member_id),
        }
        .unwrap_or(&empty);
        let next = if updated.current.state == MemberState::Stable && updated.current.member_epoch == assignment_epoch {
            updated.current.clone()
        } else {
            let owners = partition_owners(overlay.members());
            let owner_epoch = |topic: u128, p: i32| owners.get(&(topic, p)).copied();
            reconcile(
                &updated.current,
                assignment_epoch,
                member_target,
                request.topic_partitions.as_ref(),
                &owner_epoch,
            )
            .map_err(|code| (code, "the member must give up every partition and rejoin".to_string()))?
        };
        if is_new || next != updated.current {
            records.push(ConsumerRecord::CurrentMember { member_id: member_id.clone(), value: Some(next.clone()) });
        }
        let send_assignment =
            request.member_epoch == 0 || request.is_full() || next.assigned != member.current.assigned;
        Ok(HeartbeatDecision { records, member_id, leave_epoch: None, send_assignment })
    }

    /// The member a (non-leave) heartbeat is from, after Kafka's membership and epoch checks;
    /// for a static member returning under a new member id, the id it replaces, and the records
    /// that replacement writes first.
    fn member_for(
        &self,
        request: &ConsumerHeartbeat,
        records: &mut Vec<ConsumerRecord>,
    ) -> Result<(String, ConsumerMember, Option<String>), Refusal> {
        let epoch = request.member_epoch;
        let fresh_id = || {
            if request.member_id.is_empty() {
                uuid_like(request.member_id_entropy)
            } else {
                request.member_id.clone()
            }
        };
        if let Some(instance) = request.instance_id.as_deref() {
            let existing = self.member_by_instance(instance);
            if epoch == 0 {
                return match existing {
                    None => Ok((fresh_id(), ConsumerMember::default(), None)),
                    Some((_, old)) if old.current.member_epoch != STATIC_LEAVE_EPOCH => refuse(
                        ErrorCode::UNRELEASED_INSTANCE_ID,
                        format!("instance {instance} is still held by a member that has not left"),
                    ),
                    Some((old_id, old)) => {
                        // The returning instance takes over the old member's partitions and target.
                        let new_id = fresh_id();
                        records.extend(removal_records(old_id));
                        let target = self.target.get(old_id).cloned().unwrap_or_default();
                        records.push(ConsumerRecord::TargetMember { member_id: new_id.clone(), value: Some(target) });
                        let current = CurrentAssignment {
                            member_epoch: 0,
                            previous_member_epoch: 0,
                            state: MemberState::Stable,
                            assigned: old.current.assigned.clone(),
                            pending_revocation: Assignment::new(),
                        };
                        Ok((new_id, ConsumerMember { metadata: old.metadata.clone(), current }, Some(old_id.clone())))
                    }
                };
            }
            let Some((id, member)) = existing else {
                return refuse(ErrorCode::UNKNOWN_MEMBER_ID, format!("instance {instance} is not a member"));
            };
            if *id != request.member_id {
                return refuse(
                    ErrorCode::FENCED_INSTANCE_ID,
                    format!("instance {instance} belongs to member {id}, not {}", request.member_id),
                );
            }
            check_epoch(member, request)?;
            return Ok((id.clone(), member.clone(), None));
        }
        match self.members.get(&request.member_id) {
            Some(member) => {
                check_epoch(member, request)?;
                Ok((request.member_id.clone(), member.clone(), None))
            }
            None if epoch == 0 => Ok((fresh_id(), ConsumerMember::default(), None)),
            None => refuse(ErrorCode::UNKNOWN_MEMBER_ID, format!("member {} is not in the group", request.member_id)),
        }
    }

    /// A member leaving: for good (-1: removed, the group epoch grows) or, a static member, for
    /// now (-2: it keeps its partitions until its session expires; nobody rebalances).
    fn decide_leave(&self, request: &ConsumerHeartbeat) -> Result<HeartbeatDecision, Refusal> {
        let member_id = match request.instance_id.as_deref() {
            Some(instance) => match self.member_by_instance(instance) {
                None => return refuse(ErrorCode::UNKNOWN_MEMBER_ID, format!("instance {instance} is not a member")),
                Some((id, _)) if *id != request.member_id => {
                    return refuse(ErrorCode::FENCED_INSTANCE_ID, format!("instance {instance} belongs to member {id}"))
                }
                Some((id, _)) => id.clone(),
            },
            None if self.members.contains_key(&request.member_id) => request.member_id.clone(),
            None => {
                return refuse(
                    ErrorCode::UNKNOWN_MEMBER_ID,
                    format!("member {} is not in the group", request.member_id),
                )
            }
        };
        let records = if request.member_epoch == STATIC_LEAVE_EPOCH && request.instance_id.is_some() {
            let member = &self.members[&member_id];
            let current = CurrentAssignment {
                member_epoch: STATIC_LEAVE_EPOCH,
                previous_member_epoch: member.current.member_epoch,
                state: member.current.state,
                assigned: member.current.assigned.clone(),
                pending_revocation: Assignment::new(),
            };
            vec![ConsumerRecord::CurrentMember { member_id: member_id.clone(), value: Some(current) }]
        } else {
            self.fence_records(&member_id)
        };
        Ok(HeartbeatDecision { records, member_id, leave_epoch: Some(request.member_epoch), send_assignment: false })
    }

    /// The records that remove a member and move the group to the next epoch.
    pub fn fence_records(&self, member_id: &str) -> Vec<ConsumerRecord> {
        let mut records = removal_records(member_id);
        let leaving: &[String] = self.members.get(member_id).map_or(&[], |m| &m.metadata.subscribed_topic_names);
        let still_subscribed = |name: &str| {
            let count = self.subscribed_names.get(name).copied().unwrap_or(0);
            count > usize::from(leaving.iter().any(|n| n == name))
        };
        let remaining: BTreeMap<String, TopicMetadata> = self
            .subscription_metadata
            .iter()
            .filter(|(name, _)| still_subscribed(name))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        if remaining != self.subscription_metadata {
            records.push(ConsumerRecord::SubscriptionMetadata(Some(remaining.values().cloned().collect())));
        }
        records.push(ConsumerRecord::Metadata(Some(self.group_epoch + 1)));
        records
    }

    /// The records that delete this group (it has no members): its target epoch, topics and
    /// epoch, in Kafka's order. Offsets are the caller's.
    pub fn deletion_records(&self) -> Vec<ConsumerRecord> {
        let mut records: Vec<ConsumerRecord> = self.members.keys().flat_map(|id| removal_records(id)).collect();
        records.extend([
            ConsumerRecord::TargetEpoch(None),
            ConsumerRecord::SubscriptionMetadata(None),
            ConsumerRecord::Metadata(None),
        ]);
        records
    }

    // ------------------------------------------------------------ replay

    /// Applies one committed record. Errors name what does not fit (a record we did not write,
    /// or a bug); the ownership invariant is checked after every assignment change.
    pub fn replay(&mut self, record: &ConsumerRecord) -> Result<(), String> {
        match record {
            ConsumerRecord::Metadata(epoch) => self.group_epoch = epoch.unwrap_or(0),
            ConsumerRecord::SubscriptionMetadata(topics) => {
                self.subscription_metadata = topics.iter().flatten().map(|t| (t.name.clone(), t.clone())).collect();
            }
            ConsumerRecord::Member { member_id, value: Some(metadata) } => {
                let member = self.members.entry(member_id.clone()).or_default();
                let old = std::mem::replace(&mut member.metadata, metadata.clone());
                self.count_subscriptions(&old.subscribed_topic_names, &metadata.subscribed_topic_names);
            }
            ConsumerRecord::Member { member_id, value: None } => {
                if let Some(member) = self.members.get(member_id) {
                    if member.current.assigned.values().any(|p| !p.is_empty()) || self.target.contains_key(member_id) {
                        return Err(format!("member {member_id} removed before its assignment and target"));
                    }
                    let removed = self.members.remove(member_id).expect("present");
                    self.count_subscriptions(&removed.metadata.subscribed_topic_names, &[]);
                    self.session_deadlines.remove(member_id);
                    self.rebalance_deadlines.remove(member_id);
                }
            }
            ConsumerRecord::TargetEpoch(epoch) => self.assignment_epoch = epoch.unwrap_or(-1),
            ConsumerRecord::TargetMember { member_id, value } => match value {
                Some(assignment) => {
                    self.target.insert(member_id.clone(), assignment.clone());
                }
                None => {
                    self.target.remove(member_id);
                }
            },
            ConsumerRecord::CurrentMember { member_id, value: Some(current) } => {
                self.members.entry(member_id.clone()).or_default().current = current.clone();
                // The planted bug forgets the ownership rule here too, so that only the
                // simulator's checkers can catch it.
                if !crate::planted::active(crate::planted::Bug::AssignUnreleasedPartitions) {
                    self.check_single_owner()?;
                }
            }
            ConsumerRecord::CurrentMember { member_id, value: None } => {
                // The member is on its way out (its target and metadata tombstones follow); a
                // member the load never saw (its records cleaned away) stays unknown.
                if let Some(member) = self.members.get_mut(member_id) {
                    member.current = CurrentAssignment {
                        member_epoch: LEAVE_EPOCH,
                        previous_member_epoch: LEAVE_EPOCH,
                        ..CurrentAssignment::default()
                    };
                }
            }
        }
        Ok(())
    }

    fn count_subscriptions(&mut self, before: &[String], after: &[String]) {
        for name in before {
            if let Some(count) = self.subscribed_names.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    self.subscribed_names.remove(name);
                }
            }
        }
        for name in after {
            *self.subscribed_names.entry(name.clone()).or_default() += 1;
        }
    }

    /// The subscribed topics that exist, as the cluster's metadata has them now, once one
    /// member's subscription goes from `before` (if `counted`: already in the group) to `after`.
    fn subscription_metadata_with(
        &self,
        before: &MemberMetadata,
        after: &MemberMetadata,
        counted: bool,
        topics: TopicLookup,
    ) -> BTreeMap<String, TopicMetadata> {
        let mut names: BTreeMap<&str, usize> = self.subscribed_names.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        if counted {
            for name in &before.subscribed_topic_names {
                if let Some(count) = names.get_mut(name.as_str()) {
                    *count -= 1;
                }
            }
        }
        for name in &after.subscribed_topic_names {
            *names.entry(name.as_str()).or_default() += 1;
        }
        names
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .filter_map(|(name, _)| {
                let (topic_id, partitions) = topics(name)?;
                Some((name.to_string(), TopicMetadata { topic_id, name: name.to_string(), partitions }))
            })
            .collect()
    }

    fn check_single_owner(&self) -> Result<(), String> {
        let mut seen = BTreeMap::new();
        for (id, m) in &self.members {
            for (topic, partitions) in m.current.assigned.iter().chain(&m.current.pending_revocation) {
                for p in partitions {
                    if let Some(other) = seen.insert((*topic, *p), id) {
                        return Err(format!("partition {p} of topic {topic:x} owned by both {other} and {id}"));
                    }
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ timers

    /// A heartbeat from `member_id` was answered: its session starts again, and a revoking
    /// member gets (or keeps) a deadline for giving its partitions up.
    pub fn heard_from(&mut self, member_id: &str, now_ms: i64, config: &ConsumerGroupConfig) {
        let Some(member) = self.members.get(member_id) else { return };
        self.session_deadlines.insert(member_id.to_string(), now_ms + i64::from(config.session_timeout_ms));
        let epoch = member.current.member_epoch;
        if member.current.state == MemberState::UnrevokedPartitions {
            let timeout = i64::from(member.metadata.rebalance_timeout_ms.max(0));
            let keep = self.rebalance_deadlines.get(member_id).is_some_and(|(_, e)| *e == epoch);
            if !keep {
                self.rebalance_deadlines.insert(member_id.to_string(), (now_ms + timeout, epoch));
            }
        } else {
            self.rebalance_deadlines.remove(member_id);
        }
    }

    /// After a load: every member gets a full session, and revoking members their rebalance
    /// timeout.
    pub fn start_timers(&mut self, now_ms: i64, config: &ConsumerGroupConfig) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.heard_from(&id, now_ms, config);
        }
    }

    /// The first member whose session or rebalance deadline passed.
    pub fn expired_member(&self, now_ms: i64) -> Option<(String, &'static str)> {
        let session = self.session_deadlines.iter().find(|(_, d)| now_ms >= **d).map(|(id, _)| (id.clone(), "session"));
        session.or_else(|| {
            self.rebalance_deadlines
                .iter()
                .find(|(id, (d, epoch))| {
                    now_ms >= *d
                        && self.members.get(*id).is_some_and(|m| {
                            m.current.member_epoch == *epoch && m.current.state == MemberState::UnrevokedPartitions
                        })
                })
                .map(|(id, _)| (id.clone(), "rebalance"))
        })
    }

    /// The answer to a heartbeat whose decision is applied.
    pub fn reply(&self, decision: &HeartbeatDecision, config: &ConsumerGroupConfig) -> HeartbeatReply {
        if let Some(epoch) = decision.leave_epoch {
            return HeartbeatReply {
                error: ErrorCode::NONE,
                error_message: None,
                member_id: Some(decision.member_id.clone()),
                member_epoch: epoch,
                heartbeat_interval_ms: 0,
                assignment: None,
            };
        }
        let member = self.members.get(&decision.member_id);
        HeartbeatReply {
            error: ErrorCode::NONE,
            error_message: None,
            member_id: Some(decision.member_id.clone()),
            member_epoch: member.map_or(0, |m| m.current.member_epoch),
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            assignment: decision
                .send_assignment
                .then(|| member.map(|m| m.current.assigned.clone()).unwrap_or_default()),
        }
    }
}

/// Kafka's member epoch check: an epoch ahead of the member's is fenced; one behind it too,
/// unless it is the previous epoch and the member owns no more than it is assigned (a retry
/// whose answer was lost).
fn check_epoch(member: &ConsumerMember, request: &ConsumerHeartbeat) -> Result<(), Refusal> {
    let (received, current) = (request.member_epoch, member.current.member_epoch);
    let fenced =
        || refuse(ErrorCode::FENCED_MEMBER_EPOCH, format!("member epoch {received}, the group's is {current}"));
    if received > current {
        return fenced();
    }
    if received < current {
        let retry = received == member.current.previous_member_epoch
            && request.topic_partitions.as_ref().is_some_and(|owned| {
                owned
                    .iter()
                    .all(|(t, ps)| ps.is_empty() || member.current.assigned.get(t).is_some_and(|a| ps.is_subset(a)))
            });
        if !retry {
            return fenced();
        }
    }
    Ok(())
}

/// The member's metadata with the request's changes: fields the request sent replace the old.
fn updated_metadata(old: &MemberMetadata, request: &ConsumerHeartbeat) -> MemberMetadata {
    let mut m = old.clone();
    if request.instance_id.is_some() {
        m.instance_id = request.instance_id.clone();
    }
    if request.rack_id.is_some() {
        m.rack_id = request.rack_id.clone();
    }
    m.client_id = request.client_id.clone();
    m.client_host = request.client_host.clone();
    if let Some(names) = &request.subscribed_topic_names {
        let set: BTreeSet<&String> = names.iter().collect();
        m.subscribed_topic_names = set.into_iter().cloned().collect();
    }
    if let Some(regex) = &request.subscribed_topic_regex {
        m.subscribed_topic_regex = (!regex.is_empty()).then(|| regex.clone());
    }
    if request.rebalance_timeout_ms != -1 {
        m.rebalance_timeout_ms = request.rebalance_timeout_ms;
    }
    if request.server_assignor.is_some() {
        m.server_assignor = request.server_assignor.clone();
    }
    m
}

/// The group with one member's heartbeat applied, for a decision: that member's update in
/// place of its committed state, a static member it replaces left out.
struct Overlay<'a> {
    group: &'a ConsumerGroup,
    member_id: &'a str,
    updated: &'a ConsumerMember,
    replaced: Option<&'a str>,
}

impl<'a> Overlay<'a> {
    fn members(&self) -> impl Iterator<Item = (&'a str, &'a ConsumerMember)> + '_ {
        let others = self
            .group
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != self.member_id && Some(id.as_str()) != self.replaced)
            .map(|(id, m)| (id.as_str(), m));
        others.chain(std::iter::once((self.member_id, self.updated)))
    }

    /// A member's current target; a static member's replacement inherits the old one's.
    fn previous_target(&self, id: &str) -> Option<&'a Assignment> {
        match self.replaced {
            Some(old) if id == self.member_id => self.group.target.get(old),
            _ => self.group.target.get(id),
        }
    }
}

/// The assignor most members asked for (ties: the configured order), else the default.
fn preferred_assignor<'m>(config: &ConsumerGroupConfig, members: impl Iterator<Item = &'m ConsumerMember>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for m in members {
        if let Some(a) = m.metadata.server_assignor.as_deref() {
            *counts.entry(a).or_default() += 1;
        }
    }
    let rank = |name: &str| config.assignors.iter().position(|a| a == name).unwrap_or(usize::MAX);
    counts
        .into_iter()
        .max_by_key(|(name, count)| (*count, std::cmp::Reverse(rank(name))))
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| config.assignors.first().cloned().unwrap_or_else(|| ASSIGNORS[0].to_string()))
}

/// Who owns (or is revoking) each partition, at which member epoch.
fn partition_owners<'m>(members: impl Iterator<Item = (&'m str, &'m ConsumerMember)>) -> BTreeMap<(u128, i32), i32> {
    let mut owners = BTreeMap::new();
    for (_, m) in members {
        for (topic, partitions) in m.current.assigned.iter().chain(&m.current.pending_revocation) {
            for p in partitions {
                owners.insert((*topic, *p), m.current.member_epoch);
            }
        }
    }
    owners
}

/// A member's removal, in Kafka's order: current assignment, target, metadata.
fn removal_records(member_id: &str) -> Vec<ConsumerRecord> {
    vec![
        ConsumerRecord::CurrentMember { member_id: member_id.to_string(), value: None },
        ConsumerRecord::TargetMember { member_id: member_id.to_string(), value: None },
        ConsumerRecord::Member { member_id: member_id.to_string(), value: None },
    ]
}

/// A member id for a v0 join that brought none (22 characters, like Kafka's base64 UUIDs).
fn uuid_like(entropy: u128) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..22).map(|i| ALPHABET[((entropy >> (i * 6)) & 63) as usize] as char).collect()
}
