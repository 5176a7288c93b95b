//! The coordinator's KIP-848 side: routing ConsumerGroupHeartbeat to its group, one decision
//! at a time per group, and the group's timers, offsets rules and descriptions.
//!
//! Decisions are made on committed state only. While a group's records are being written its
//! next heartbeats wait in a queue (at most [`CONSUMER_QUEUE_MAX`]) and are decided, in
//! order, once the write is applied: two heartbeats never both move the group from the same
//! epoch. A write that fails leaves its fate unknown (the records may still commit), so the
//! partition is loaded again from its log before anything more is decided.

use super::consumer::{
    ConsumerGroup, ConsumerHeartbeat, HeartbeatDecision, HeartbeatReply, TopicLookup, LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
use super::consumer_records::{Assignment, ConsumerRecord};
use super::coordinator::GroupCoordinator;
use super::membership::GroupState;
use super::records::GroupRecord;
use super::{AfterWrite, Output, Reply, WaiterId, Write, NAME_BYTES_MAX};
use crate::types::ErrorCode;
use std::collections::VecDeque;

/// Heartbeats one consumer group holds while its records are being written; beyond it a member
/// gets COORDINATOR_LOAD_IN_PROGRESS (retriable) and heartbeats again.
pub const CONSUMER_QUEUE_MAX: usize = 1_000;
/// Topic names one member may subscribe to.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;
/// Bytes of topic names in one member's subscription: it is stored in one record of
/// `__consumer_offsets`, which must fit a batch.
pub const SUBSCRIPTION_BYTES_MAX: usize = 256 * 1024;

/// A consumer group as ConsumerGroupDescribe shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<DescribedMember>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Assignment,
    pub target: Assignment,
}

impl GroupCoordinator {
    /// A ConsumerGroupHeartbeat; always answered through `Output::replies` under `waiter`
    /// (at once, or once its records are committed).
    pub fn consumer_heartbeat(
        &mut self,
        now_ms: i64,
        request: ConsumerHeartbeat,
        waiter: WaiterId,
        topics: TopicLookup,
    ) -> Output {
        let mut out = Output::default();
        if let Err((code, why)) = self.check_consumer_heartbeat(&request) {
            out.reply(waiter, Reply::ConsumerHeartbeat(HeartbeatReply::error(code, why)));
            return out;
        }
        if let Some(queue) = self.consumer_queues.get_mut(&request.group_id) {
            if queue.len() >= CONSUMER_QUEUE_MAX {
                let reply = HeartbeatReply::error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS, "the group is busy");
                out.reply(waiter, Reply::ConsumerHeartbeat(reply));
            } else {
                queue.push_back((waiter, request));
            }
            return out;
        }
        self.decide_consumer_heartbeat(now_ms, request, waiter, topics, &mut out);
        out
    }

    /// Kafka's request checks (`throwIfConsumerGroupHeartbeatRequestIsInvalid`), the routing,
    /// and this coordinator's bounds.
    fn check_consumer_heartbeat(&self, r: &ConsumerHeartbeat) -> Result<(), (ErrorCode, String)> {
        let invalid = |why: &str| Err((ErrorCode::INVALID_REQUEST, why.to_string()));
        let blank = |s: &str| s.trim().is_empty();
        if blank(&r.member_id) && (r.version >= 1 || r.member_epoch > 0 || r.member_epoch == LEAVE_EPOCH) {
            return invalid("MemberId can't be empty.");
        }
        if blank(&r.group_id) {
            return Err((ErrorCode::INVALID_GROUP_ID, "GroupId can't be empty.".to_string()));
        }
        if r.instance_id.as_deref().is_some_and(blank) || r.rack_id.as_deref().is_some_and(blank) {
            return invalid("InstanceId and RackId can't be empty.");
        }
        if r.member_epoch == 0 {
            if r.rebalance_timeout_ms == -1 {
                return invalid("RebalanceTimeoutMs must be provided in first request.");
            }
            if r.topic_partitions.as_ref().is_none_or(|tp| tp.values().any(|p| !p.is_empty())) {
                return invalid("TopicPartitions must be empty when (re-)joining.");
            }
            if r.subscribed_topic_names.is_none() && r.subscribed_topic_regex.is_none() {
                return invalid("SubscribedTopicNames or SubscribedTopicRegex must be set in first request.");
            }
        }
        if r.member_epoch == STATIC_LEAVE_EPOCH && r.instance_id.is_none() {
            return invalid("InstanceId can't be null.");
        }
        if r.member_epoch < STATIC_LEAVE_EPOCH {
            return invalid(&format!("MemberEpoch {} is invalid.", r.member_epoch));
        }
        let names = [Some(&r.member_id), r.instance_id.as_ref(), r.rack_id.as_ref(), r.server_assignor.as_ref()];
        if names.into_iter().flatten().any(|n| n.len() > NAME_BYTES_MAX)
            || r.subscribed_topic_names.as_ref().is_some_and(|n| {
                n.len() > SUBSCRIBED_TOPICS_MAX
                    || n.iter().any(|t| t.len() > NAME_BYTES_MAX)
                    || n.iter().map(String::len).sum::<usize>() > SUBSCRIPTION_BYTES_MAX
            })
        {
            return invalid("a name, or the subscription, is beyond this coordinator's bounds");
        }
        if r.subscribed_topic_regex.as_deref().is_some_and(|regex| !regex.is_empty()) {
            return Err((
                ErrorCode::INVALID_REGULAR_EXPRESSION,
                "regular-expression subscriptions are not supported by this broker; subscribe to topic names"
                    .to_string(),
            ));
        }
        if let Some(assignor) = r.server_assignor.as_deref() {
            if !self.config().consumer.assignors.iter().any(|a| a == assignor) {
                return Err((
                    ErrorCode::UNSUPPORTED_ASSIGNOR,
                    format!(
                        "ServerAssignor {assignor} is not supported. Supported assignors: {}.",
                        self.config().consumer.assignors.join(", ")
                    ),
                ));
            }
        }
        self.route(&r.group_id).map(|_| ()).map_err(|code| (code, format!("group {} is not served here", r.group_id)))
    }

    /// Decides one heartbeat on the committed state: answers it, or starts its write (the
    /// group is then busy until [`Self::consumer_written`]).
    fn decide_consumer_heartbeat(
        &mut self,
        now_ms: i64,
        request: ConsumerHeartbeat,
        waiter: WaiterId,
        topics: TopicLookup,
        out: &mut Output,
    ) {
        let answer = |out: &mut Output, code: ErrorCode, why: String| {
            out.reply(waiter, Reply::ConsumerHeartbeat(HeartbeatReply::error(code, why)));
        };
        let partition = match self.route(&request.group_id) {
            Ok(partition) => partition,
            Err(code) => return answer(out, code, "not the coordinator".to_string()),
        };
        let group = match self.consumer_groups.get(&request.group_id) {
            Some(group) => group.clone(),
            None if request.member_epoch != 0 => {
                return answer(out, ErrorCode::GROUP_ID_NOT_FOUND, format!("group {} does not exist", request.group_id))
            }
            None => match self.new_consumer_group(&request.group_id, partition) {
                Ok(group) => group,
                Err((code, why)) => return answer(out, code, why),
            },
        };
        let decision = match group.decide_heartbeat(&self.config().consumer, &request, topics) {
            Ok(decision) => decision,
            Err((code, why)) => return answer(out, code, why),
        };
        let mut records = Vec::new();
        if self.groups.remove(&request.group_id).is_some() {
            tracing::info!(group = %request.group_id, "an empty classic group becomes a consumer group");
            records.push(GroupRecord::Group { group_id: request.group_id.clone(), value: None });
        }
        self.consumer_groups.entry(request.group_id.clone()).or_insert(group);
        if decision.records.is_empty() && records.is_empty() {
            let config = self.config().consumer.clone();
            let group = self.consumer_groups.get_mut(&request.group_id).expect("inserted above");
            group.heard_from(&decision.member_id, now_ms, &config);
            out.reply(waiter, Reply::ConsumerHeartbeat(group.reply(&decision, &config)));
            return;
        }
        let group_id = request.group_id.clone();
        records.extend(
            decision.records.iter().map(|r| GroupRecord::Consumer { group_id: group_id.clone(), record: r.clone() }),
        );
        let decision = HeartbeatDecision { records: Vec::new(), ..decision };
        self.consumer_queues.insert(group_id.clone(), VecDeque::new());
        out.writes.push(Write {
            partition,
            records,
            then: AfterWrite::ConsumerHeartbeat { group_id, waiter, decision, load: self.load_id(partition) },
        });
    }

    /// A new consumer group for `group_id`: it takes an empty classic group's place (with its
    /// offsets; the caller removes the classic group once the heartbeat is decided), or is
    /// refused: a classic group with members (GROUP_ID_NOT_FOUND, Kafka's answer without online
    /// migration) or too many groups.
    fn new_consumer_group(&self, group_id: &str, partition: i32) -> Result<ConsumerGroup, (ErrorCode, String)> {
        let mut group = ConsumerGroup::new(group_id, partition);
        let Some(classic) = self.groups.get(group_id) else {
            if self.group_count() >= self.config().max_groups {
                tracing::warn!(
                    groups = self.group_count(),
                    "group.coordinator.groups.max reached: a new group is refused"
                );
                return Err((ErrorCode::COORDINATOR_NOT_AVAILABLE, "too many groups".to_string()));
            }
            return Ok(group);
        };
        if !(classic.is_empty() && classic.state() == GroupState::Empty) {
            return Err((ErrorCode::GROUP_ID_NOT_FOUND, format!("group {group_id} is a classic group with members")));
        }
        group.offsets = classic.offsets.clone();
        Ok(group)
    }

    /// A consumer group's write is over: on success its records are applied and the waiting
    /// member answered; on failure the partition loads again (the records' fate is unknown).
    /// Then the group's queued heartbeats are decided.
    pub(super) fn consumer_written(
        &mut self,
        now_ms: i64,
        write: &Write,
        result: Result<(), ErrorCode>,
        topics: TopicLookup,
    ) -> Output {
        let mut out = Output::default();
        let (group_id, waiter, load) = match &write.then {
            AfterWrite::ConsumerHeartbeat { group_id, waiter, load, .. } => (group_id, Some(*waiter), *load),
            AfterWrite::ConsumerGroupChange { group_id, load } => (group_id, None, *load),
            _ => unreachable!("only consumer-group writes come here"),
        };
        if load != self.load_id(write.partition) {
            // The partition was unloaded, or loaded again from its log, since: that load
            // answered the group's queued heartbeats and holds whatever this write stored.
            if let Some(waiter) = waiter {
                let reply = HeartbeatReply::error(ErrorCode::NOT_COORDINATOR, "the coordinator moved");
                out.reply(waiter, Reply::ConsumerHeartbeat(reply));
            }
            return out;
        }
        if let Err(code) = result {
            if let Some(waiter) = waiter {
                let reply = HeartbeatReply::error(code, "the group's records could not be written");
                out.reply(waiter, Reply::ConsumerHeartbeat(reply));
            }
            let epoch = self.partitions.get(&write.partition).map(|s| s.leader_epoch());
            if let Some(epoch) = epoch {
                tracing::warn!(group = %group_id, partition = write.partition, ?code, "a consumer group's write failed: loading its partition again");
                out.append(self.begin_load(write.partition, epoch));
            }
            return out;
        }
        for record in &write.records {
            self.apply(record);
        }
        let config = self.config().consumer.clone();
        if let (Some(waiter), AfterWrite::ConsumerHeartbeat { decision, .. }) = (waiter, &write.then) {
            let reply = match self.consumer_groups.get_mut(group_id) {
                Some(group) => {
                    if decision.leave_epoch.is_none() {
                        group.heard_from(&decision.member_id, now_ms, &config);
                    }
                    group.reply(decision, &config)
                }
                None => HeartbeatReply::error(ErrorCode::NOT_COORDINATOR, "the group moved"),
            };
            out.reply(waiter, Reply::ConsumerHeartbeat(reply));
        }
        let mut queue = self.consumer_queues.remove(group_id).unwrap_or_default();
        while let Some((waiter, request)) = queue.pop_front() {
            self.decide_consumer_heartbeat(now_ms, request, waiter, topics, &mut out);
            if let Some(rest) = self.consumer_queues.get_mut(group_id) {
                rest.extend(queue);
                break;
            }
        }
        out
    }

    /// Applies one consumer-group record that was committed. A record that does not fit is a
    /// bug in the decisions (they are made on this very state): fail-stop.
    pub(super) fn apply_consumer(&mut self, group_id: &str, record: &ConsumerRecord) {
        if record == &ConsumerRecord::Metadata(None) {
            let Some(removed) = self.consumer_groups.remove(group_id) else { return };
            assert!(removed.members.is_empty(), "group {group_id} deleted with members");
            if !removed.offsets.is_empty() {
                // Its offsets stay (a load finds them without a group): as a classic group.
                let mut classic = super::membership::Group::new(group_id, removed.partition, 0);
                classic.offsets = removed.offsets;
                self.groups.insert(group_id.to_string(), classic);
            }
            return;
        }
        let partition = self.partition_for(group_id);
        let group =
            self.consumer_groups.entry(group_id.to_string()).or_insert_with(|| ConsumerGroup::new(group_id, partition));
        if let Err(why) = group.replay(record) {
            panic!("group {group_id}: a committed record does not fit: {why}");
        }
    }

    /// A write of `records` that changes an idle consumer group (it is busy until the write is
    /// over: see [`Self::consumer_written`]).
    pub(super) fn consumer_change(&mut self, group_id: &str, records: Vec<GroupRecord>) -> Write {
        assert!(!self.consumer_queues.contains_key(group_id), "one write per consumer group at a time");
        self.consumer_queues.insert(group_id.to_string(), VecDeque::new());
        let partition = self.partition_for(group_id);
        let load = self.load_id(partition);
        Write { partition, records, then: AfterWrite::ConsumerGroupChange { group_id: group_id.to_string(), load } }
    }

    /// The current load of `partition` (0: not loaded).
    pub(super) fn load_id(&self, partition: i32) -> u64 {
        if self.partitions.contains_key(&partition) {
            self.load_ids.get(&partition).copied().unwrap_or(0)
        } else {
            0
        }
    }

    /// The write that deletes an idle, empty consumer group, after `first` (its offset
    /// tombstones, if any).
    pub(super) fn consumer_deletion(&mut self, group_id: &str, mut first: Vec<GroupRecord>) -> Write {
        let group = &self.consumer_groups[group_id];
        first.extend(
            group
                .deletion_records()
                .into_iter()
                .map(|record| GroupRecord::Consumer { group_id: group_id.to_string(), record }),
        );
        self.consumer_change(group_id, first)
    }

    /// Session and rebalance timeouts: the first expired member of each idle group is removed.
    pub(super) fn consumer_tick(&mut self, now_ms: i64) -> Output {
        let mut out = Output::default();
        let expired: Vec<(String, String, &'static str)> = self
            .consumer_groups
            .iter()
            .filter(|(id, _)| !self.consumer_queues.contains_key(*id))
            .filter_map(|(id, g)| g.expired_member(now_ms).map(|(member, why)| (id.clone(), member, why)))
            .collect();
        for (group_id, member_id, why) in expired {
            let group = &self.consumer_groups[&group_id];
            tracing::info!(group = %group_id, member = %member_id, why, "a consumer-group member timed out: removing it");
            let records = group
                .fence_records(&member_id)
                .into_iter()
                .map(|record| GroupRecord::Consumer { group_id: group_id.clone(), record })
                .collect();
            out.writes.push(self.consumer_change(&group_id, records));
        }
        out
    }

    /// OffsetCommit checks for a consumer group (Kafka's `ConsumerGroup.validateOffsetCommit`):
    /// epoch -1 with no members is an admin commit; otherwise the member must exist, use v9+,
    /// and send its current epoch.
    pub(super) fn check_consumer_commit(group: &ConsumerGroup, member_id: &str, epoch: i32, version: i16) -> ErrorCode {
        if (epoch < 0 && group.members.is_empty()) || crate::planted::active(crate::planted::Bug::CommitOldGeneration) {
            return ErrorCode::NONE;
        }
        let Some(member) = group.members.get(member_id) else { return ErrorCode::UNKNOWN_MEMBER_ID };
        if version < 9 {
            return ErrorCode::UNSUPPORTED_VERSION;
        }
        if epoch != member.current.member_epoch {
            return ErrorCode::STALE_MEMBER_EPOCH;
        }
        ErrorCode::NONE
    }

    /// OffsetFetch v9's member check for a consumer group (`validateOffsetFetch`): no member id
    /// and a negative epoch is an admin fetch; otherwise the member must exist at that epoch.
    pub fn check_consumer_fetch(&self, group_id: &str, member_id: Option<&str>, member_epoch: i32) -> ErrorCode {
        let Some(group) = self.consumer_groups.get(group_id) else { return ErrorCode::NONE };
        if member_id.is_none() && member_epoch < 0 {
            return ErrorCode::NONE;
        }
        match group.members.get(member_id.unwrap_or_default()) {
            None => ErrorCode::UNKNOWN_MEMBER_ID,
            Some(m) if m.current.member_epoch != member_epoch => ErrorCode::STALE_MEMBER_EPOCH,
            Some(_) => ErrorCode::NONE,
        }
    }

    /// ConsumerGroupDescribe for one group: GROUP_ID_NOT_FOUND for a classic or unknown group
    /// (librdkafka's admin client then falls back to DescribeGroups).
    pub fn describe_consumer(&self, group_id: &str) -> Result<ConsumerGroupDescription, ErrorCode> {
        self.route(group_id)?;
        let group = self.consumer_groups.get(group_id).ok_or(ErrorCode::GROUP_ID_NOT_FOUND)?;
        let members = group
            .members
            .iter()
            .map(|(id, m)| DescribedMember {
                member_id: id.clone(),
                instance_id: m.metadata.instance_id.clone(),
                rack_id: m.metadata.rack_id.clone(),
                member_epoch: m.current.member_epoch,
                client_id: m.metadata.client_id.clone(),
                client_host: m.metadata.client_host.clone(),
                subscribed_topic_names: m.metadata.subscribed_topic_names.clone(),
                subscribed_topic_regex: m.metadata.subscribed_topic_regex.clone(),
                assignment: m.current.assigned.clone(),
                target: group.target.get(id).cloned().unwrap_or_default(),
            })
            .collect();
        Ok(ConsumerGroupDescription {
            state: group.state(),
            group_epoch: group.group_epoch,
            assignment_epoch: group.assignment_epoch,
            assignor: group.assignor(&self.config().consumer),
            members,
        })
    }

    /// Consumer groups loaded here, with their state (ListGroups).
    pub fn list_consumer(&self) -> Vec<(String, &'static str)> {
        self.consumer_groups.iter().map(|(id, g)| (id.clone(), g.state())).collect()
    }

    pub(super) fn group_count(&self) -> usize {
        self.groups.len() + self.consumer_groups.len()
    }
}
