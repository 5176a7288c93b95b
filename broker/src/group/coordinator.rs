//! The groups this broker coordinates: those whose `__consumer_offsets` partition it leads.
//!
//! A partition is `Loading` from the moment this broker becomes its leader until its records
//! have been replayed (requests for its groups get COORDINATOR_LOAD_IN_PROGRESS), then
//! `Loaded`; a group whose partition is not here gets NOT_COORDINATOR. Losing the leadership
//! unloads the partition: its groups' parked requests get NOT_COORDINATOR and the groups are
//! dropped (the new leader loads them from the records).

use super::consumer::{ConsumerGroup, ConsumerHeartbeat, TopicLookup};
use super::consumer_coordinator::ConsumerGroupDescription;
use super::membership::{Group, GroupState, MemberSummary};
use super::records::{partition_for, GroupRecord, GroupValue, OffsetValue};
use super::{
    AfterWrite, GroupConfig, JoinReply, JoinRequest, Output, Reply, SyncReply, SyncRequest, WaiterId, Write,
    ASSIGNMENT_BYTES_MAX, MEMBER_METADATA_BYTES_MAX, MEMBER_PROTOCOLS_MAX, NAME_BYTES_MAX,
};
use crate::types::{ErrorCode, TopicPartition};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Where a `__consumer_offsets` partition led here stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadState {
    /// Its records are being replayed; its groups are not served yet.
    Loading {
        leader_epoch: i32,
    },
    Loaded {
        leader_epoch: i32,
    },
}

impl LoadState {
    pub fn leader_epoch(self) -> i32 {
        match self {
            LoadState::Loading { leader_epoch } | LoadState::Loaded { leader_epoch } => leader_epoch,
        }
    }
}

/// An OffsetCommit for one group.
#[derive(Clone, Debug)]
pub struct CommitRequest {
    pub group_id: String,
    /// -1 with an empty member id: a consumer that manages its own partitions (no group).
    /// For a consumer group, the member epoch.
    pub generation_id: i32,
    /// The OffsetCommit version (consumer groups take commits from members at v9+ only).
    pub version: i16,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub offsets: Vec<(TopicPartition, OffsetValue)>,
}

/// What OffsetFetch answers for one group.
pub type OffsetFetch = Vec<(TopicPartition, Option<OffsetValue>)>;

/// A group as ListGroups and DescribeGroups show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSummary {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberSummary>,
}

#[derive(Debug, Default)]
pub struct GroupCoordinator {
    config: GroupConfig,
    pub(super) partitions: BTreeMap<i32, LoadState>,
    /// Classic groups. Invariant: every group's partition is in `partitions`; no id is both a
    /// classic and a consumer group.
    pub(super) groups: BTreeMap<String, Group>,
    /// KIP-848 consumer groups (same invariants).
    pub(super) consumer_groups: BTreeMap<String, ConsumerGroup>,
    /// Consumer groups with a write in flight, and the heartbeats waiting for it (decided in
    /// order once it is applied).
    pub(super) consumer_queues: BTreeMap<String, VecDeque<(WaiterId, ConsumerHeartbeat)>>,
    /// Groups whose expired offsets are being removed (so a tick does not remove them twice).
    expiring: BTreeSet<String>,
    /// Each loaded partition's load: a new number on every `begin_load`.
    pub(super) load_ids: BTreeMap<i32, u64>,
    next_load_id: u64,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        GroupCoordinator { config, ..GroupCoordinator::default() }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The `__consumer_offsets` partition holding `group_id`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.config.offsets_partitions)
    }

    /// The partitions this broker coordinates, and how far each is.
    pub fn partitions(&self) -> &BTreeMap<i32, LoadState> {
        &self.partitions
    }

    /// The group's partition if it is loaded here; otherwise the error the client acts on.
    pub fn route(&self, group_id: &str) -> Result<i32, ErrorCode> {
        if group_id.is_empty() || group_id.len() > NAME_BYTES_MAX {
            return Err(ErrorCode::INVALID_GROUP_ID);
        }
        let partition = self.partition_for(group_id);
        match self.partitions.get(&partition) {
            Some(LoadState::Loaded { .. }) => Ok(partition),
            Some(LoadState::Loading { .. }) => Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
            None => Err(ErrorCode::NOT_COORDINATOR),
        }
    }

    // ------------------------------------------------------------ loading

    /// This broker became the partition's leader at `leader_epoch`: its groups are loading.
    /// Anything loaded at an older epoch is dropped first.
    pub fn begin_load(&mut self, partition: i32, leader_epoch: i32) -> Output {
        let out = self.unload(partition);
        self.partitions.insert(partition, LoadState::Loading { leader_epoch });
        self.next_load_id += 1;
        self.load_ids.insert(partition, self.next_load_id);
        out
    }

    /// The partition's records, replayed in offset order: its groups as they were stored. Does
    /// nothing if the partition is no longer loading at `leader_epoch`.
    pub fn finish_load(&mut self, partition: i32, leader_epoch: i32, records: Vec<GroupRecord>, now_ms: i64) -> usize {
        if self.partitions.get(&partition) != Some(&LoadState::Loading { leader_epoch }) {
            return 0;
        }
        if leader_epoch > 0 && crate::planted::active(crate::planted::Bug::LoadNeverCompletes) {
            return 0;
        }
        let mut stored: BTreeMap<String, (Option<GroupValue>, BTreeMap<TopicPartition, OffsetValue>)> = BTreeMap::new();
        let mut consumer: BTreeMap<String, ConsumerGroup> = BTreeMap::new();
        for record in records {
            match record {
                GroupRecord::Consumer { group_id, record } => {
                    if record == super::consumer_records::ConsumerRecord::Metadata(None) {
                        consumer.remove(&group_id);
                        continue;
                    }
                    let group =
                        consumer.entry(group_id.clone()).or_insert_with(|| ConsumerGroup::new(&group_id, partition));
                    if let Err(why) = group.replay(&record) {
                        tracing::warn!(group = %group_id, partition, why, "a consumer-group record that does not fit is skipped");
                    }
                }
                GroupRecord::Offset { .. } if crate::planted::active(crate::planted::Bug::OffsetsNotReplayed) => {}
                GroupRecord::Offset { group_id, tp, value } => {
                    let offsets = &mut stored.entry(group_id).or_default().1;
                    match value {
                        Some(value) => offsets.insert(tp, value),
                        None => offsets.remove(&tp),
                    };
                }
                GroupRecord::Group { group_id, value } => stored.entry(group_id).or_default().0 = value,
            }
        }
        let mut loaded = 0;
        for (group_id, mut group) in consumer {
            if self.partition_for(&group_id) != partition || group.group_epoch == 0 {
                continue;
            }
            if let Some((_, offsets)) = stored.remove(&group_id) {
                group.offsets = offsets;
            }
            group.start_timers(now_ms, &self.config.consumer);
            self.consumer_groups.insert(group_id, group);
            loaded += 1;
        }
        for (group_id, (value, offsets)) in stored {
            if self.partition_for(&group_id) != partition {
                tracing::warn!(group = %group_id, partition, "a group stored in another partition's records is skipped (was offsets.topic.num.partitions changed?)");
                continue;
            }
            if value.is_none() && offsets.is_empty() {
                continue;
            }
            let mut group = match &value {
                Some(value) => Group::from_stored(&group_id, partition, value, now_ms),
                None => Group::new(&group_id, partition, now_ms),
            };
            group.offsets = offsets;
            self.groups.insert(group_id, group);
            loaded += 1;
        }
        self.partitions.insert(partition, LoadState::Loaded { leader_epoch });
        loaded
    }

    /// This broker no longer leads the partition: its groups go, their parked requests get
    /// NOT_COORDINATOR.
    pub fn unload(&mut self, partition: i32) -> Output {
        let mut out = Output::default();
        if self.partitions.remove(&partition).is_none() {
            return out;
        }
        let gone: Vec<String> =
            self.groups.iter().filter(|(_, g)| g.partition == partition).map(|(id, _)| id.clone()).collect();
        for id in gone {
            let mut group = self.groups.remove(&id).expect("listed");
            group.shut_down(ErrorCode::NOT_COORDINATOR, &mut out);
            self.expiring.remove(&id);
        }
        self.consumer_groups.retain(|_, g| g.partition != partition);
        let offsets_partitions = self.config.offsets_partitions;
        let queued: Vec<String> = self
            .consumer_queues
            .keys()
            .filter(|id| partition_for(id, offsets_partitions) == partition)
            .cloned()
            .collect();
        for id in queued {
            self.expiring.remove(&id);
            for (waiter, _) in self.consumer_queues.remove(&id).expect("listed") {
                let reply = super::HeartbeatReply::error(ErrorCode::NOT_COORDINATOR, "the coordinator moved");
                out.reply(waiter, Reply::ConsumerHeartbeat(reply));
            }
        }
        out
    }

    // ------------------------------------------------------------ membership

    pub fn join(&mut self, now_ms: i64, request: JoinRequest, waiter: WaiterId) -> Output {
        let mut out = Output::default();
        let refuse = |out: &mut Output, code: ErrorCode, request: &JoinRequest| {
            out.reply(waiter, Reply::Join(JoinReply::error(code, &request.member_id)));
        };
        let partition = match self.route(&request.group_id) {
            Ok(partition) => partition,
            Err(code) => {
                refuse(&mut out, code, &request);
                return out;
            }
        };
        let (min, max) = (self.config.min_session_timeout_ms, self.config.max_session_timeout_ms);
        if !(min..=max).contains(&request.session_timeout_ms) {
            refuse(&mut out, ErrorCode::INVALID_SESSION_TIMEOUT, &request);
            return out;
        }
        if let Err(why) = check_join_bounds(&request) {
            tracing::warn!(group = %request.group_id, why, "JoinGroup refused");
            refuse(&mut out, ErrorCode::INVALID_REQUEST, &request);
            return out;
        }
        if let Some(consumer) = self.consumer_groups.get(&request.group_id) {
            if !consumer.members.is_empty() {
                tracing::info!(group = %request.group_id, "JoinGroup refused: the group uses the consumer protocol");
                refuse(&mut out, ErrorCode::INCONSISTENT_GROUP_PROTOCOL, &request);
                return out;
            }
            // An empty consumer group is removed first (its offsets stay, in a classic group);
            // the member retries its join once that is written.
            if !self.consumer_queues.contains_key(&request.group_id) {
                tracing::info!(group = %request.group_id, "an empty consumer group makes way for a classic group");
                out.writes.push(self.consumer_deletion(&request.group_id, Vec::new()));
            }
            refuse(&mut out, ErrorCode::COORDINATOR_LOAD_IN_PROGRESS, &request);
            return out;
        }
        if !self.groups.contains_key(&request.group_id) {
            if !request.member_id.is_empty() {
                refuse(&mut out, ErrorCode::UNKNOWN_MEMBER_ID, &request);
                return out;
            }
            if self.group_count() >= self.config.max_groups {
                tracing::warn!(
                    groups = self.group_count(),
                    "group.coordinator.groups.max reached: a new group is refused"
                );
                refuse(&mut out, ErrorCode::COORDINATOR_NOT_AVAILABLE, &request);
                return out;
            }
            self.groups.insert(request.group_id.clone(), Group::new(&request.group_id, partition, now_ms));
        }
        let group = self.groups.get_mut(&request.group_id).expect("present");
        out.append(group.join(&self.config, now_ms, request, waiter));
        out
    }

    pub fn sync(&mut self, now_ms: i64, request: SyncRequest, waiter: WaiterId) -> Output {
        let mut out = Output::default();
        if request.assignments.len() > self.config.max_size
            || request.assignments.iter().any(|(m, a)| m.len() > NAME_BYTES_MAX || a.len() > ASSIGNMENT_BYTES_MAX)
        {
            tracing::warn!(group = %request.group_id, "SyncGroup refused: an assignment beyond its bounds");
            out.reply(waiter, Reply::Sync(SyncReply::error(ErrorCode::INVALID_REQUEST)));
            return out;
        }
        let found = self
            .route(&request.group_id)
            .and_then(|_| self.groups.get_mut(&request.group_id).ok_or(ErrorCode::UNKNOWN_MEMBER_ID));
        match found {
            Ok(group) => out.append(group.sync(now_ms, request, waiter)),
            Err(code) => out.reply(waiter, Reply::Sync(SyncReply::error(code))),
        }
        out
    }

    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> ErrorCode {
        if let Err(code) = self.route(group_id) {
            return code;
        }
        match self.groups.get_mut(group_id) {
            Some(group) => group.heartbeat(now_ms, member_id, group_instance_id, generation_id),
            None => ErrorCode::UNKNOWN_MEMBER_ID,
        }
    }

    /// LeaveGroup: the group-level error, and one code per leaving member (in order).
    pub fn leave(
        &mut self,
        now_ms: i64,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (ErrorCode, Vec<ErrorCode>, Output) {
        let mut out = Output::default();
        if let Err(code) = self.route(group_id) {
            return (code, Vec::new(), out);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return (ErrorCode::NONE, vec![ErrorCode::UNKNOWN_MEMBER_ID; leaving.len()], out);
        };
        let codes = leaving
            .iter()
            .map(|(member_id, instance)| group.leave(&self.config, now_ms, member_id, instance.as_deref(), &mut out))
            .collect();
        (ErrorCode::NONE, codes, out)
    }

    // ------------------------------------------------------------ offsets

    /// Decides an OffsetCommit: a code per partition, and the records for those accepted (to
    /// be answered once [`Self::written`] saw them committed).
    pub fn commit_offsets(
        &mut self,
        now_ms: i64,
        request: CommitRequest,
    ) -> (Vec<(TopicPartition, ErrorCode)>, Option<Write>) {
        let all = |code: ErrorCode| request.offsets.iter().map(|(tp, _)| (tp.clone(), code)).collect::<Vec<_>>();
        let partition = match self.route(&request.group_id) {
            Ok(partition) => partition,
            Err(code) => return (all(code), None),
        };
        if let Some(group) = self.consumer_groups.get(&request.group_id) {
            let code = Self::check_consumer_commit(group, &request.member_id, request.generation_id, request.version);
            if !code.is_none() {
                return (all(code), None);
            }
            return self.offset_records(partition, request);
        }
        let full = self.group_count() >= self.config.max_groups;
        let group = match self.groups.get_mut(&request.group_id) {
            Some(group) => group,
            // No group: only a consumer without group management (generation -1) may commit.
            None if request.generation_id < 0 && full => {
                tracing::warn!(
                    groups = self.config.max_groups,
                    "group.coordinator.groups.max reached: a new group is refused"
                );
                return (all(ErrorCode::COORDINATOR_NOT_AVAILABLE), None);
            }
            None if request.generation_id < 0 => {
                let group = Group::new(&request.group_id, partition, now_ms);
                self.groups.entry(request.group_id.clone()).or_insert(group)
            }
            // Kafka 4.0: v9+ (consumer-group clients) learn the group is gone.
            None if request.version >= 9 => return (all(ErrorCode::GROUP_ID_NOT_FOUND), None),
            None => return (all(ErrorCode::ILLEGAL_GENERATION), None),
        };
        let code =
            group.check_commit(now_ms, &request.member_id, request.group_instance_id.as_deref(), request.generation_id);
        if !code.is_none() {
            return (all(code), None);
        }
        self.offset_records(partition, request)
    }

    /// The records of an accepted OffsetCommit, and a code per partition.
    fn offset_records(
        &self,
        partition: i32,
        request: CommitRequest,
    ) -> (Vec<(TopicPartition, ErrorCode)>, Option<Write>) {
        let mut codes = Vec::new();
        let mut records = Vec::new();
        for (tp, value) in request.offsets {
            if value.metadata.len() > self.config.offset_metadata_max_bytes {
                codes.push((tp, ErrorCode::OFFSET_METADATA_TOO_LARGE));
                continue;
            }
            codes.push((tp.clone(), ErrorCode::NONE));
            records.push(GroupRecord::Offset { group_id: request.group_id.clone(), tp, value: Some(value) });
        }
        let write = (!records.is_empty()).then_some(Write { partition, records, then: AfterWrite::Offsets });
        (codes, write)
    }

    /// OffsetFetch for one group: the committed offset of each partition asked for (`None`:
    /// every partition with one).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<OffsetFetch, ErrorCode> {
        self.route(group_id)?;
        let offsets = match self.consumer_groups.get(group_id) {
            Some(group) => Some(&group.offsets),
            None => self.groups.get(group_id).map(|g| &g.offsets),
        };
        let mut found: OffsetFetch = match partitions {
            Some(partitions) => {
                partitions.iter().map(|tp| (tp.clone(), offsets.and_then(|o| o.get(tp)).cloned())).collect()
            }
            None => {
                offsets.map(|o| o.iter().map(|(tp, v)| (tp.clone(), Some(v.clone()))).collect()).unwrap_or_default()
            }
        };
        if crate::planted::active(crate::planted::Bug::OffsetFetchPastCommit) {
            for value in found.iter_mut().filter_map(|(_, v)| v.as_mut()) {
                value.offset += 1;
            }
        }
        Ok(found)
    }

    // ------------------------------------------------------------ committed records

    /// A [`Write`] was committed (`Ok`), or failed with `Err(code)` (the code for the clients
    /// waiting on it). Only committed records change the state.
    /// `topics` looks topics up for the consumer-group heartbeats decided next.
    pub fn written(
        &mut self,
        now_ms: i64,
        write: &Write,
        result: Result<(), ErrorCode>,
        topics: TopicLookup,
    ) -> Output {
        if matches!(write.then, AfterWrite::ConsumerHeartbeat { .. } | AfterWrite::ConsumerGroupChange { .. }) {
            return self.consumer_written(now_ms, write, result, topics);
        }
        if result.is_ok() {
            for record in &write.records {
                self.apply(record);
            }
        }
        match &write.then {
            AfterWrite::Nothing | AfterWrite::Offsets => {
                for record in &write.records {
                    self.expiring.remove(record.group_id());
                }
                Output::default()
            }
            AfterWrite::Assignment { group_id, generation_id } => match self.groups.get_mut(group_id) {
                Some(group) => group.assignment_written(&self.config, now_ms, *generation_id, result),
                None => Output::default(),
            },
            AfterWrite::ConsumerHeartbeat { .. } | AfterWrite::ConsumerGroupChange { .. } => {
                unreachable!("answered above")
            }
        }
    }

    /// Applies one committed record to a loaded group. A group's own generation record changes
    /// nothing here (the group already is what it says); its tombstone removes an empty group.
    pub(super) fn apply(&mut self, record: &GroupRecord) {
        match record {
            GroupRecord::Consumer { group_id, record } => self.apply_consumer(group_id, record),
            GroupRecord::Offset { group_id, tp, value } if self.consumer_groups.contains_key(group_id) => {
                let offsets = &mut self.consumer_groups.get_mut(group_id).expect("checked").offsets;
                match value {
                    Some(value) => offsets.insert(tp.clone(), value.clone()),
                    None => offsets.remove(tp),
                };
            }
            GroupRecord::Offset { group_id, tp, value } => {
                let Some(group) = self.groups.get_mut(group_id) else {
                    if value.is_some() && self.route(group_id).is_ok() {
                        let mut group = Group::new(group_id, self.partition_for(group_id), 0);
                        group.offsets.insert(tp.clone(), value.clone().expect("checked"));
                        self.groups.insert(group_id.clone(), group);
                    }
                    return;
                };
                match value {
                    Some(value) => group.offsets.insert(tp.clone(), value.clone()),
                    None => group.offsets.remove(tp),
                };
            }
            GroupRecord::Group { group_id, value: None } => {
                if self.groups.get(group_id).is_some_and(|g| g.is_empty() && g.state() == GroupState::Empty) {
                    self.groups.remove(group_id);
                }
            }
            GroupRecord::Group { value: Some(_), .. } => {}
        }
    }

    // ------------------------------------------------------------ time

    /// Session and rebalance timeouts of every group, and offset retention: the offsets of a
    /// group that has been empty for `offsets.retention.minutes` are removed (tombstones).
    pub fn tick(&mut self, now_ms: i64) -> Output {
        let mut out = Output::default();
        for group in self.groups.values_mut() {
            out.append(group.tick(&self.config, now_ms));
        }
        let retention = self.config.offsets_retention_ms;
        for (id, group) in &self.groups {
            let expired = group.state() == GroupState::Empty
                && group.is_empty()
                && now_ms.saturating_sub(group.state_timestamp_ms()) >= retention
                && (!group.offsets.is_empty() || group.generation_id() > 0);
            if expired && !self.expiring.contains(id) {
                tracing::info!(group = %id, offsets = group.offsets.len(), "removing the offsets of a group empty for offsets.retention.minutes");
                out.writes.push(tombstones(group));
                self.expiring.insert(id.clone());
            }
        }
        // A group that never stored anything and has nobody left is forgotten.
        self.groups.retain(|_, g| {
            !(g.is_empty() && g.state() == GroupState::Empty && g.offsets.is_empty() && g.generation_id() == 0)
        });
        out.append(self.consumer_tick(now_ms));
        out.append(self.expire_consumer_offsets(now_ms));
        out
    }

    /// Consumer groups (Kafka's rule for them): a committed offset of a topic no member
    /// subscribes to goes `offsets.retention.minutes` after its commit; an empty group goes
    /// with its last offset.
    fn expire_consumer_offsets(&mut self, now_ms: i64) -> Output {
        let mut out = Output::default();
        let retention = self.config.offsets_retention_ms;
        let mut writes = Vec::new();
        for (id, group) in &self.consumer_groups {
            if self.consumer_queues.contains_key(id) {
                continue;
            }
            let subscribed = group.subscribed_topics();
            let expired: Vec<&TopicPartition> = group
                .offsets
                .iter()
                .filter(|(tp, v)| {
                    !subscribed.contains(&tp.topic) && now_ms.saturating_sub(v.commit_timestamp_ms) >= retention
                })
                .map(|(tp, _)| tp)
                .collect();
            let delete_group = group.members.is_empty() && expired.len() == group.offsets.len();
            if expired.is_empty()
                && !(delete_group && group.group_epoch > 0 && retention_passed(group, now_ms, retention))
            {
                continue;
            }
            let tombstones: Vec<GroupRecord> = expired
                .into_iter()
                .map(|tp| GroupRecord::Offset { group_id: id.clone(), tp: tp.clone(), value: None })
                .collect();
            tracing::info!(group = %id, offsets = tombstones.len(), delete_group, "removing expired offsets of a consumer group");
            writes.push((id.clone(), tombstones, delete_group));
        }
        for (id, tombstones, delete_group) in writes {
            let write = if delete_group {
                self.consumer_deletion(&id, tombstones)
            } else {
                self.consumer_change(&id, tombstones)
            };
            out.writes.push(write);
        }
        out
    }

    // ------------------------------------------------------------ admin

    /// Every group loaded here (ListGroups).
    pub fn list(&self) -> Vec<GroupSummary> {
        self.groups.keys().filter_map(|id| self.describe(id).ok()).collect()
    }

    /// One group (DescribeGroups); a group that does not exist is Dead with no members.
    pub fn describe(&self, group_id: &str) -> Result<GroupSummary, ErrorCode> {
        self.route(group_id)?;
        Ok(match self.groups.get(group_id) {
            Some(group) => GroupSummary {
                group_id: group_id.to_string(),
                state: group.state(),
                protocol_type: group.protocol_type().unwrap_or_default().to_string(),
                protocol_name: group.protocol_name().unwrap_or_default().to_string(),
                members: group.members(),
            },
            None => GroupSummary {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            },
        })
    }

    /// DeleteGroups for one group: only an empty group can be deleted (NON_EMPTY_GROUP), and
    /// only one that exists (GROUP_ID_NOT_FOUND). The records remove its offsets and itself.
    pub fn delete(&mut self, group_id: &str) -> Result<Write, ErrorCode> {
        self.route(group_id)?;
        if let Some(group) = self.consumer_groups.get(group_id) {
            if !group.members.is_empty() {
                return Err(ErrorCode::NON_EMPTY_GROUP);
            }
            if self.consumer_queues.contains_key(group_id) {
                return Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
            }
            let tombstones = group
                .offsets
                .keys()
                .map(|tp| GroupRecord::Offset { group_id: group_id.to_string(), tp: tp.clone(), value: None })
                .collect();
            return Ok(self.consumer_deletion(group_id, tombstones));
        }
        let group = self.groups.get(group_id).ok_or(ErrorCode::GROUP_ID_NOT_FOUND)?;
        if group.state() == GroupState::Dead {
            return Err(ErrorCode::GROUP_ID_NOT_FOUND);
        }
        if !group.is_empty() {
            return Err(ErrorCode::NON_EMPTY_GROUP);
        }
        Ok(tombstones(group))
    }
}

impl GroupCoordinator {
    /// OffsetDelete: the committed offsets of `partitions` are removed (tombstones), as Kafka
    /// does: any partition of an Empty group; of a consumer group with members, a partition of
    /// a topic no member subscribes to (else GROUP_SUBSCRIBED_TO_TOPIC for it). Group-level
    /// errors: GROUP_ID_NOT_FOUND, and NON_EMPTY_GROUP for a group with members whose
    /// subscriptions cannot be read. Returns a code per partition and the records to write
    /// (`None` if nothing is committed for them: there is nothing to remove).
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<(Vec<ErrorCode>, Option<Write>), ErrorCode> {
        self.route(group_id)?;
        if let Some(group) = self.consumer_groups.get(group_id) {
            let subscribed = group.subscribed_topics();
            return Ok(offset_tombstones(group_id, group.partition, &group.offsets, &subscribed, partitions));
        }
        let group = self.groups.get(group_id).ok_or(ErrorCode::GROUP_ID_NOT_FOUND)?;
        let subscribed = match group.state() {
            GroupState::Dead => return Err(ErrorCode::GROUP_ID_NOT_FOUND),
            GroupState::Empty => BTreeSet::new(),
            _ => group.subscribed_topics().ok_or(ErrorCode::NON_EMPTY_GROUP)?,
        };
        Ok(offset_tombstones(group_id, group.partition, &group.offsets, &subscribed, partitions))
    }

    /// ConsumerGroupDescribe's view, or DescribeGroups' answer for a consumer group.
    pub fn is_consumer_group(&self, group_id: &str) -> bool {
        self.consumer_groups.contains_key(group_id)
    }

    pub fn describe_consumer_group(&self, group_id: &str) -> Result<ConsumerGroupDescription, ErrorCode> {
        self.describe_consumer(group_id)
    }
}

/// OffsetDelete's answer: a code per partition (GROUP_SUBSCRIBED_TO_TOPIC for a subscribed
/// topic) and tombstones for those with a committed offset.
fn offset_tombstones(
    group_id: &str,
    partition: i32,
    offsets: &BTreeMap<TopicPartition, OffsetValue>,
    subscribed: &BTreeSet<String>,
    partitions: &[TopicPartition],
) -> (Vec<ErrorCode>, Option<Write>) {
    let mut codes = Vec::with_capacity(partitions.len());
    let mut records = Vec::new();
    for tp in partitions {
        if subscribed.contains(&tp.topic) {
            codes.push(ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC);
            continue;
        }
        codes.push(ErrorCode::NONE);
        if offsets.contains_key(tp) {
            records.push(GroupRecord::Offset { group_id: group_id.to_string(), tp: tp.clone(), value: None });
        }
    }
    let write = (!records.is_empty()).then_some(Write { partition, records, then: AfterWrite::Offsets });
    (codes, write)
}

/// Whether an empty consumer group with no offsets has waited the retention (its last
/// member's departure is not recorded; its newest offset commit, if any, stands in for it).
fn retention_passed(group: &ConsumerGroup, now_ms: i64, retention: i64) -> bool {
    group
        .offsets
        .values()
        .map(|v| v.commit_timestamp_ms)
        .max()
        .is_none_or(|last| now_ms.saturating_sub(last) >= retention)
}

/// A JoinGroup's names and metadata within what a group keeps and stores.
fn check_join_bounds(request: &JoinRequest) -> Result<(), String> {
    let names = [Some(&request.member_id), request.group_instance_id.as_ref(), Some(&request.protocol_type)];
    if names.into_iter().flatten().any(|n| n.len() > NAME_BYTES_MAX) {
        return Err(format!("a member id, instance id or protocol type is longer than {NAME_BYTES_MAX} bytes"));
    }
    if request.protocols.len() > MEMBER_PROTOCOLS_MAX {
        return Err(format!("{} protocols offered, at most {MEMBER_PROTOCOLS_MAX}", request.protocols.len()));
    }
    if request.protocols.iter().any(|(name, _)| name.len() > NAME_BYTES_MAX) {
        return Err(format!("a protocol name is longer than {NAME_BYTES_MAX} bytes"));
    }
    let metadata: usize = request.protocols.iter().map(|(_, m)| m.len()).sum();
    if metadata > MEMBER_METADATA_BYTES_MAX {
        return Err(format!("{metadata} bytes of protocol metadata, at most {MEMBER_METADATA_BYTES_MAX}"));
    }
    Ok(())
}

/// The records that remove a group and every offset it committed.
fn tombstones(group: &Group) -> Write {
    let mut records: Vec<GroupRecord> = group
        .offsets
        .keys()
        .map(|tp| GroupRecord::Offset { group_id: group.group_id.clone(), tp: tp.clone(), value: None })
        .collect();
    records.push(GroupRecord::Group { group_id: group.group_id.clone(), value: None });
    Write { partition: group.partition, records, then: AfterWrite::Nothing }
}
