//! One consumer group under the classic protocol: members, generations and rebalances, as
//! Kafka's `GroupCoordinator` runs them.
//!
//! States: Empty → PreparingRebalance (members join; the join completes when every member has
//! rejoined, or at the rebalance timeout without the laggards) → CompletingRebalance (the
//! leader's SyncGroup brings the assignment; it is written, then every member gets its part)
//! → Stable. A member joining, leaving, changing its protocols or missing its session timeout
//! starts a new rebalance; the last member leaving empties the group. Dead: deleted, or
//! unloaded because this broker no longer leads its partition.

use super::records::{GroupRecord, GroupValue, MemberValue, OffsetValue};
use super::{
    AfterWrite, GroupConfig, JoinReply, JoinRequest, JoinedMember, Output, Reply, SyncReply, SyncRequest, WaiterId,
    Write,
};
use crate::types::{ErrorCode, TopicPartition};
use bytes::Bytes;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups give.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A joined member.
#[derive(Clone, Debug)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    session_timeout_ms: i32,
    protocol_type: String,
    /// In the member's order of preference.
    protocols: Vec<(String, Bytes)>,
    /// This generation's assignment (empty until the group is Stable).
    assignment: Bytes,
    /// Its JoinGroup, parked until the rebalance completes.
    awaiting_join: Option<WaiterId>,
    /// Its SyncGroup, parked until the leader's assignment is written.
    awaiting_sync: Option<WaiterId>,
    /// The member is removed if it is not heard from by then (unless a request of it is parked).
    session_deadline_ms: i64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

/// What a member looks like to DescribeGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSummary {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Clone, Debug)]
pub struct Group {
    pub group_id: String,
    /// The `__consumer_offsets` partition that holds the group.
    pub partition: i32,
    state: GroupState,
    /// Bumped by every completed join; a generation's members, protocol and leader do not
    /// change while it lasts.
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → member id, for every static member in `members`.
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and until when they may join with them.
    pending_members: BTreeMap<String, i64>,
    /// PreparingRebalance: the join completes at the latest then.
    rebalance_deadline_ms: i64,
    /// PreparingRebalance of an empty group: the join does not complete before then.
    initial_delay_until_ms: Option<i64>,
    /// When the initial delay started (it is extended at most up to the rebalance timeout).
    rebalance_started_ms: i64,
    /// CompletingRebalance: members that have not sent SyncGroup by then are removed.
    sync_deadline_ms: i64,
    /// The leader's assignment while it is being written.
    pending_assignment: Option<BTreeMap<String, Bytes>>,
    /// When the group entered its state (offsets of a group empty for the retention expire).
    state_timestamp_ms: i64,
    /// Committed offsets (replayed from records only).
    pub offsets: BTreeMap<TopicPartition, OffsetValue>,
}

impl Group {
    pub fn new(group_id: &str, partition: i32, now_ms: i64) -> Self {
        Group {
            group_id: group_id.to_string(),
            partition,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: None,
            rebalance_started_ms: 0,
            sync_deadline_ms: 0,
            pending_assignment: None,
            state_timestamp_ms: now_ms,
            offsets: BTreeMap::new(),
        }
    }

    /// A group as its last stored generation left it (a coordinator loading its partition):
    /// members get a fresh session from `now_ms`.
    pub fn from_stored(group_id: &str, partition: i32, value: &GroupValue, now_ms: i64) -> Self {
        let mut group = Group::new(group_id, partition, now_ms);
        group.generation_id = value.generation_id;
        group.protocol_type = Some(value.protocol_type.clone()).filter(|t| !t.is_empty());
        group.state_timestamp_ms = if value.state_timestamp_ms >= 0 { value.state_timestamp_ms } else { now_ms };
        if value.members.is_empty() {
            return group;
        }
        group.state = GroupState::Stable;
        group.protocol_name = value.protocol.clone();
        group.leader_id = value.leader.clone();
        let protocol = value.protocol.clone().unwrap_or_default();
        for m in &value.members {
            if let Some(instance) = &m.group_instance_id {
                group.static_members.insert(instance.clone(), m.member_id.clone());
            }
            let member = Member {
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocol_type: value.protocol_type.clone(),
                protocols: vec![(protocol.clone(), m.subscription.clone())],
                assignment: m.assignment.clone(),
                awaiting_join: None,
                awaiting_sync: None,
                session_deadline_ms: now_ms + i64::from(m.session_timeout_ms),
            };
            group.members.insert(m.member_id.clone(), member);
        }
        group
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader_id(&self) -> Option<&str> {
        self.leader_id.as_deref()
    }

    pub fn state_timestamp_ms(&self) -> i64 {
        self.state_timestamp_ms
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending_members.is_empty()
    }

    /// The topics a consumer group's members subscribe to, read from their protocol metadata
    /// (the consumer protocol's subscription); `None` if that cannot be known (another protocol
    /// type, or metadata that does not decode): then every topic counts as subscribed.
    pub fn subscribed_topics(&self) -> Option<std::collections::BTreeSet<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name()?;
        let mut topics = std::collections::BTreeSet::new();
        for member in self.members.values() {
            let mut metadata = member.metadata_for(protocol);
            if metadata.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]).clamp(0, 3);
            let _ = bytes::Buf::get_i16(&mut metadata);
            let subscription = ConsumerProtocolSubscription::decode(&mut metadata, version).ok()?;
            topics.extend(subscription.topics.iter().map(|t| t.to_string()));
        }
        Some(topics)
    }

    pub fn members(&self) -> Vec<MemberSummary> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| MemberSummary {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata_for(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    /// Every parked request of this group, answered with `error` (the coordinator moved, or the
    /// group was deleted); the group is Dead from now on.
    pub fn shut_down(&mut self, error: ErrorCode, out: &mut Output) {
        for (id, member) in &mut self.members {
            if let Some(waiter) = member.awaiting_join.take() {
                out.reply(waiter, Reply::Join(JoinReply::error(error, id)));
            }
            if let Some(waiter) = member.awaiting_sync.take() {
                out.reply(waiter, Reply::Sync(SyncReply::error(error)));
            }
        }
        self.transition(GroupState::Dead, self.state_timestamp_ms);
    }

    /// Checks the static-member identity a request claims: FENCED_INSTANCE_ID when the instance
    /// id belongs to another member id (a newer instance took it over).
    fn fenced(&self, member_id: &str, group_instance_id: Option<&str>) -> bool {
        match group_instance_id {
            Some(instance) => self.static_members.get(instance).is_some_and(|owner| owner != member_id),
            None => false,
        }
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    /// Whether a member with these protocols could join: the same protocol type, and at least
    /// one protocol every member (and it) supports.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == name)))
    }

    /// The protocol for the next generation: among those every member supports, the one most
    /// members prefer (each votes for its first supported one); ties go to the first in the
    /// leader's order (or the first member's).
    fn select_protocol(&self) -> String {
        let voter_order = self
            .leader_id
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next())
            .expect("select_protocol with members");
        let candidates: Vec<&String> = voter_order
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == *name)))
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        let best = candidates.iter().map(|c| votes.get(c).copied().unwrap_or(0)).max().unwrap_or(0);
        candidates
            .into_iter()
            .find(|c| votes.get(c).copied().unwrap_or(0) == best)
            .expect("members always share a protocol (checked at join)")
            .clone()
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members.values().map(|m| i64::from(m.rebalance_timeout_ms)).max().unwrap_or(0)
    }

    // ------------------------------------------------------------ JoinGroup

    pub fn join(&mut self, config: &GroupConfig, now_ms: i64, request: JoinRequest, waiter: WaiterId) -> Output {
        let mut out = Output::default();
        if self.state == GroupState::Dead {
            // Deleted or unloaded meanwhile: the client looks the coordinator up again.
            out.reply(waiter, Reply::Join(JoinReply::error(ErrorCode::COORDINATOR_NOT_AVAILABLE, &request.member_id)));
        } else if !self.supports(&request.protocol_type, &request.protocols) {
            out.reply(
                waiter,
                Reply::Join(JoinReply::error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, &request.member_id)),
            );
        } else if request.member_id.is_empty() {
            self.join_unknown_member(config, now_ms, request, waiter, &mut out);
        } else {
            self.join_known_member(config, now_ms, request, waiter, &mut out);
        }
        out
    }

    fn join_unknown_member(
        &mut self,
        config: &GroupConfig,
        now_ms: i64,
        request: JoinRequest,
        waiter: WaiterId,
        out: &mut Output,
    ) {
        let prefix = request.group_instance_id.as_deref().unwrap_or(&request.client_id);
        // A client id can be long (32 KiB): the member id keeps a readable start of it.
        let prefix: String = prefix.chars().take(200).collect();
        let new_member_id = format!("{prefix}-{}", uuid_string(request.member_id_entropy));
        if let Some(instance) = request.group_instance_id.clone() {
            if let Some(old_member_id) = self.static_members.get(&instance).cloned() {
                self.replace_static_member(config, now_ms, &old_member_id, new_member_id, request, waiter, out);
                return;
            }
        }
        if self.members.len() + self.pending_members.len() >= config.max_size {
            out.reply(waiter, Reply::Join(JoinReply::error(ErrorCode::GROUP_MAX_SIZE_REACHED, "")));
            return;
        }
        if request.require_known_member_id && request.group_instance_id.is_none() {
            // KIP-394: the member must come back with this id, so a JoinGroup whose answer was
            // lost does not leave a ghost member behind.
            self.pending_members.insert(new_member_id.clone(), now_ms + i64::from(request.session_timeout_ms));
            out.reply(waiter, Reply::Join(JoinReply::error(ErrorCode::MEMBER_ID_REQUIRED, &new_member_id)));
            return;
        }
        self.add_member_and_rebalance(config, now_ms, new_member_id, request, waiter, out);
    }

    fn join_known_member(
        &mut self,
        config: &GroupConfig,
        now_ms: i64,
        request: JoinRequest,
        waiter: WaiterId,
        out: &mut Output,
    ) {
        let member_id = request.member_id.clone();
        if self.fenced(&member_id, request.group_instance_id.as_deref()) {
            out.reply(waiter, Reply::Join(JoinReply::error(ErrorCode::FENCED_INSTANCE_ID, &member_id)));
            return;
        }
        if self.pending_members.remove(&member_id).is_some() {
            self.add_member_and_rebalance(config, now_ms, member_id, request, waiter, out);
            return;
        }
        let Some(member) = self.members.get_mut(&member_id) else {
            out.reply(waiter, Reply::Join(JoinReply::error(ErrorCode::UNKNOWN_MEMBER_ID, &member_id)));
            return;
        };
        if let Some(old) = member.awaiting_join.take() {
            // The member asked again (its first answer was lost): the older request is void.
            out.reply(old, Reply::Join(JoinReply::error(ErrorCode::UNKNOWN_MEMBER_ID, &member_id)));
        }
        let protocols_changed = member.protocols != request.protocols;
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(now_ms, &member_id, &request, Some(waiter));
                self.maybe_complete_join(now_ms, out);
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if !(protocols_changed || self.state == GroupState::Stable && self.is_leader(&member_id)) =>
            {
                // Nothing changed: the member missed its answer; give it the generation again.
                let member = self.members.get_mut(&member_id).expect("checked");
                member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                let reply = self.join_reply(&member_id, false);
                out.reply(waiter, Reply::Join(reply));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(now_ms, &member_id, &request, Some(waiter));
                self.prepare_rebalance(config, now_ms, out);
            }
            GroupState::Empty | GroupState::Dead => {
                out.reply(waiter, Reply::Join(JoinReply::error(ErrorCode::UNKNOWN_MEMBER_ID, &member_id)));
            }
        }
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    fn add_member_and_rebalance(
        &mut self,
        config: &GroupConfig,
        now_ms: i64,
        member_id: String,
        request: JoinRequest,
        waiter: WaiterId,
        out: &mut Output,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            self.static_members.insert(instance.clone(), member_id.clone());
        }
        if self.leader_id.is_none() {
            // As Kafka: the first member to join leads.
            self.leader_id = Some(member_id.clone());
        }
        let member = Member {
            group_instance_id: request.group_instance_id.clone(),
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            session_timeout_ms: request.session_timeout_ms,
            protocol_type: request.protocol_type.clone(),
            protocols: request.protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: Some(waiter),
            awaiting_sync: None,
            session_deadline_ms: now_ms + i64::from(request.session_timeout_ms),
        };
        self.members.insert(member_id, member);
        if self.state == GroupState::PreparingRebalance {
            if let Some(until) = self.initial_delay_until_ms {
                // A member joined during the initial delay: wait another delay for more, but
                // never past the rebalance timeout.
                let limit = self.rebalance_started_ms + self.max_rebalance_timeout_ms();
                self.initial_delay_until_ms = Some(until.max((now_ms + config.initial_rebalance_delay_ms).min(limit)));
            }
            self.maybe_complete_join(now_ms, out);
        } else {
            self.prepare_rebalance(config, now_ms, out);
        }
    }

    fn update_member(&mut self, now_ms: i64, member_id: &str, request: &JoinRequest, waiter: Option<WaiterId>) {
        let member = self.members.get_mut(member_id).expect("updating a member that exists");
        member.protocols = request.protocols.clone();
        member.protocol_type = request.protocol_type.clone();
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.awaiting_join = waiter;
        member.session_deadline_ms = now_ms + i64::from(request.session_timeout_ms);
    }

    /// A known static member rejoined without its member id (it restarted): the new id takes
    /// the old one's place, and the old one is fenced. In a stable group whose protocol would
    /// not change, it gets the current generation and assignment back without a rebalance.
    #[allow(clippy::too_many_arguments)]
    fn replace_static_member(
        &mut self,
        config: &GroupConfig,
        now_ms: i64,
        old_member_id: &str,
        new_member_id: String,
        request: JoinRequest,
        waiter: WaiterId,
        out: &mut Output,
    ) {
        let mut member = self.members.remove(old_member_id).expect("static members are members");
        if let Some(old) = member.awaiting_join.take() {
            out.reply(old, Reply::Join(JoinReply::error(ErrorCode::FENCED_INSTANCE_ID, old_member_id)));
        }
        if let Some(old) = member.awaiting_sync.take() {
            out.reply(old, Reply::Sync(SyncReply::error(ErrorCode::FENCED_INSTANCE_ID)));
        }
        let protocols_unchanged = member.protocols == request.protocols;
        self.members.insert(new_member_id.clone(), member);
        let instance = request.group_instance_id.clone().expect("a static member");
        self.static_members.insert(instance, new_member_id.clone());
        if self.is_leader(old_member_id) {
            self.leader_id = Some(new_member_id.clone());
        }
        if let Some(pending) = self.pending_assignment.as_mut() {
            if let Some(assignment) = pending.remove(old_member_id) {
                pending.insert(new_member_id.clone(), assignment);
            }
        }
        match self.state {
            GroupState::Stable if protocols_unchanged => {
                self.update_member(now_ms, &new_member_id, &request, None);
                let is_leader = self.is_leader(&new_member_id);
                let reply = self.join_reply(&new_member_id, is_leader);
                out.reply(waiter, Reply::Join(reply));
            }
            GroupState::PreparingRebalance => {
                self.update_member(now_ms, &new_member_id, &request, Some(waiter));
                self.maybe_complete_join(now_ms, out);
            }
            _ => {
                // CompletingRebalance: the leader may be assigning to the old id; a stable group
                // whose protocols change needs a new assignment. Either way: rebalance.
                self.update_member(now_ms, &new_member_id, &request, Some(waiter));
                self.prepare_rebalance(config, now_ms, out);
            }
        }
    }

    /// The JoinGroup answer for `member_id` in the current generation.
    fn join_reply(&self, member_id: &str, skip_assignment: bool) -> JoinReply {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if self.is_leader(member_id) {
            self.members
                .iter()
                .map(|(id, m)| JoinedMember {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinReply {
            error: ErrorCode::NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment,
        }
    }

    /// Starts a rebalance: members must rejoin within the rebalance timeout. An empty group's
    /// first rebalance waits `group.initial.rebalance.delay.ms` for more members.
    fn prepare_rebalance(&mut self, config: &GroupConfig, now_ms: i64, out: &mut Output) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_assignment(ErrorCode::REBALANCE_IN_PROGRESS, out);
        }
        let timeout = self.max_rebalance_timeout_ms();
        self.initial_delay_until_ms =
            (self.state == GroupState::Empty).then(|| now_ms + config.initial_rebalance_delay_ms.min(timeout.max(0)));
        self.rebalance_started_ms = now_ms;
        self.rebalance_deadline_ms = now_ms + timeout;
        self.transition(GroupState::PreparingRebalance, now_ms);
        self.maybe_complete_join(now_ms, out);
    }

    /// Drops the assignment being completed; members waiting in SyncGroup get `error`.
    fn reset_assignment(&mut self, error: ErrorCode, out: &mut Output) {
        self.pending_assignment = None;
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            if let Some(waiter) = member.awaiting_sync.take() {
                out.reply(waiter, Reply::Sync(SyncReply::error(error)));
            }
        }
    }

    /// Completes the join if every member has rejoined (and the initial delay is over).
    fn maybe_complete_join(&mut self, now_ms: i64, out: &mut Output) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.initial_delay_until_ms.is_some_and(|until| now_ms < until) {
            return;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some()) && self.pending_members.is_empty();
        if all_joined || now_ms >= self.rebalance_deadline_ms {
            self.complete_join(now_ms, out);
        }
    }

    /// Members that did not rejoin are removed; the generation moves on; every member that
    /// rejoined gets its answer (the leader with the member list).
    fn complete_join(&mut self, now_ms: i64, out: &mut Output) {
        self.initial_delay_until_ms = None;
        self.pending_members.clear();
        let laggards: Vec<String> =
            self.members.iter().filter(|(_, m)| m.awaiting_join.is_none()).map(|(id, _)| id.clone()).collect();
        for id in laggards {
            self.remove_member_entry(&id);
        }
        self.generation_id += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader_id = None;
            self.transition(GroupState::Empty, now_ms);
            out.writes.push(self.store(AfterWrite::Nothing, None));
            return;
        }
        if !self.leader_id.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader_id = self.members.keys().next().cloned();
        }
        self.protocol_name = Some(self.select_protocol());
        self.transition(GroupState::CompletingRebalance, now_ms);
        self.sync_deadline_ms = now_ms + self.max_rebalance_timeout_ms();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let reply = self.join_reply(&id, false);
            let member = self.members.get_mut(&id).expect("listed");
            member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
            let waiter = member.awaiting_join.take().expect("every remaining member rejoined");
            out.reply(waiter, Reply::Join(reply));
        }
    }

    fn remove_member_entry(&mut self, member_id: &str) {
        if let Some(member) = self.members.remove(member_id) {
            if let Some(instance) = member.group_instance_id {
                if self.static_members.get(&instance).is_some_and(|m| m == member_id) {
                    self.static_members.remove(&instance);
                }
            }
        }
        if self.is_leader(member_id) {
            self.leader_id = None;
        }
    }

    /// A member left or expired: the others rebalance without it.
    fn remove_member(&mut self, config: &GroupConfig, now_ms: i64, member_id: &str, out: &mut Output) {
        if let Some(member) = self.members.get_mut(member_id) {
            if let Some(waiter) = member.awaiting_join.take() {
                out.reply(waiter, Reply::Join(JoinReply::error(ErrorCode::UNKNOWN_MEMBER_ID, member_id)));
            }
            if let Some(waiter) = member.awaiting_sync.take() {
                out.reply(waiter, Reply::Sync(SyncReply::error(ErrorCode::UNKNOWN_MEMBER_ID)));
            }
        }
        self.remove_member_entry(member_id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(config, now_ms, out),
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ------------------------------------------------------------ SyncGroup

    pub fn sync(&mut self, now_ms: i64, request: SyncRequest, waiter: WaiterId) -> Output {
        let mut out = Output::default();
        let error = self.check_sync(&request);
        if !error.is_none() {
            out.reply(waiter, Reply::Sync(SyncReply::error(error)));
            return out;
        }
        let member_id = request.member_id.clone();
        let member = self.members.get_mut(&member_id).expect("checked");
        member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        match self.state {
            GroupState::CompletingRebalance => {
                if let Some(old) = member.awaiting_sync.replace(waiter) {
                    out.reply(old, Reply::Sync(SyncReply::error(ErrorCode::REBALANCE_IN_PROGRESS)));
                }
                if self.is_leader(&member_id) && self.pending_assignment.is_none() {
                    let assignment: BTreeMap<String, Bytes> = self
                        .members
                        .keys()
                        .map(|id| {
                            let given = request.assignments.iter().find(|(m, _)| m == id).map(|(_, a)| a.clone());
                            (id.clone(), given.unwrap_or_default())
                        })
                        .collect();
                    let write = self.store(
                        AfterWrite::Assignment { group_id: self.group_id.clone(), generation_id: self.generation_id },
                        Some(&assignment),
                    );
                    self.pending_assignment = Some(assignment);
                    out.writes.push(write);
                }
            }
            GroupState::Stable => {
                let reply = SyncReply {
                    error: ErrorCode::NONE,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment: member.assignment.clone(),
                };
                out.reply(waiter, Reply::Sync(reply));
            }
            GroupState::PreparingRebalance => {
                out.reply(waiter, Reply::Sync(SyncReply::error(ErrorCode::REBALANCE_IN_PROGRESS)))
            }
            GroupState::Empty | GroupState::Dead => unreachable!("check_sync refuses members of empty groups"),
        }
        out
    }

    fn check_sync(&self, request: &SyncRequest) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        }
        if !self.members.contains_key(&request.member_id) {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        }
        if self.fenced(&request.member_id, request.group_instance_id.as_deref()) {
            return ErrorCode::FENCED_INSTANCE_ID;
        }
        if request.generation_id != self.generation_id {
            return ErrorCode::ILLEGAL_GENERATION;
        }
        let type_differs = request.protocol_type.as_ref().is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_differs = request.protocol_name.as_ref().is_some_and(|n| Some(n) != self.protocol_name.as_ref());
        if type_differs || name_differs {
            return ErrorCode::INCONSISTENT_GROUP_PROTOCOL;
        }
        ErrorCode::NONE
    }

    /// The leader's assignment for `generation_id` was written (or failed to be).
    pub fn assignment_written(
        &mut self,
        config: &GroupConfig,
        now_ms: i64,
        generation_id: i32,
        result: Result<(), ErrorCode>,
    ) -> Output {
        let mut out = Output::default();
        if self.state != GroupState::CompletingRebalance || self.generation_id != generation_id {
            return out; // the group moved on meanwhile; the members were answered then
        }
        let Some(assignment) = self.pending_assignment.take() else { return out };
        match result {
            Ok(()) => {
                let everything = crate::planted::active(crate::planted::Bug::LeaderGetsEveryAssignment)
                    .then(|| planted_merge(assignment.values()));
                for (id, member) in &mut self.members {
                    member.assignment = match &everything {
                        Some(merged) if self.leader_id.as_ref() == Some(id) => merged.clone(),
                        _ => assignment.get(id).cloned().unwrap_or_default(),
                    };
                    if let Some(waiter) = member.awaiting_sync.take() {
                        let reply = SyncReply {
                            error: ErrorCode::NONE,
                            protocol_type: self.protocol_type.clone(),
                            protocol_name: self.protocol_name.clone(),
                            assignment: member.assignment.clone(),
                        };
                        out.reply(waiter, Reply::Sync(reply));
                    }
                }
                self.transition(GroupState::Stable, now_ms);
            }
            Err(error) => {
                self.reset_assignment(error, &mut out);
                self.prepare_rebalance(config, now_ms, &mut out);
            }
        }
        out
    }

    // ------------------------------------------------------------ Heartbeat, LeaveGroup

    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        }
        if self.fenced(member_id, group_instance_id) {
            return ErrorCode::FENCED_INSTANCE_ID;
        }
        let Some(member) = self.members.get_mut(member_id) else { return ErrorCode::UNKNOWN_MEMBER_ID };
        if generation_id != self.generation_id {
            return ErrorCode::ILLEGAL_GENERATION;
        }
        member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        match self.state {
            GroupState::PreparingRebalance => ErrorCode::REBALANCE_IN_PROGRESS,
            _ => ErrorCode::NONE,
        }
    }

    /// One leaving member (by member id, or by instance id for a static member with an empty
    /// member id, LeaveGroup v3+).
    pub fn leave(
        &mut self,
        config: &GroupConfig,
        now_ms: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        out: &mut Output,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        }
        let member_id = match group_instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(owner) if member_id.is_empty() || owner == member_id => owner.clone(),
                Some(_) => return ErrorCode::FENCED_INSTANCE_ID,
                None => return ErrorCode::UNKNOWN_MEMBER_ID,
            },
            None => member_id.to_string(),
        };
        if self.pending_members.remove(&member_id).is_some() {
            self.maybe_complete_join(now_ms, out);
            return ErrorCode::NONE;
        }
        if !self.members.contains_key(&member_id) {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        }
        self.remove_member(config, now_ms, &member_id, out);
        ErrorCode::NONE
    }

    // ------------------------------------------------------------ time

    /// Session expiry, pending member ids that were never used, rebalance and sync timeouts.
    pub fn tick(&mut self, config: &GroupConfig, now_ms: i64) -> Output {
        let mut out = Output::default();
        self.pending_members.retain(|_, deadline| *deadline > now_ms);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_join.is_none() && m.awaiting_sync.is_none() && m.session_deadline_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.group_id, member = %id, "member's session expired");
            self.remove_member(config, now_ms, &id, &mut out);
        }
        if self.state == GroupState::CompletingRebalance
            && now_ms >= self.sync_deadline_ms
            && self.pending_assignment.is_none()
        {
            let unsynced: Vec<String> =
                self.members.iter().filter(|(_, m)| m.awaiting_sync.is_none()).map(|(id, _)| id.clone()).collect();
            for id in unsynced {
                tracing::info!(group = %self.group_id, member = %id, "member did not sync within the rebalance timeout");
                self.remove_member(config, now_ms, &id, &mut out);
            }
        }
        self.maybe_complete_join(now_ms, &mut out);
        out
    }

    // ------------------------------------------------------------ records

    /// The record of this generation (with `assignment`, or the members' current ones).
    fn store(&self, then: AfterWrite, assignment: Option<&BTreeMap<String, Bytes>>) -> Write {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = self
            .members
            .iter()
            .map(|(id, m)| MemberValue {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: m.metadata_for(&protocol),
                assignment: assignment.and_then(|a| a.get(id).cloned()).unwrap_or_else(|| m.assignment.clone()),
            })
            .collect();
        let value = GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members,
        };
        Write {
            partition: self.partition,
            records: vec![GroupRecord::Group { group_id: self.group_id.clone(), value: Some(value) }],
            then,
        }
    }

    /// Whether an OffsetCommit from (member, instance, generation) may commit now; Kafka's
    /// rules: a group only storing offsets (Empty, generation -1) takes commits from anyone,
    /// otherwise the member must be in the group at its current generation and not in the
    /// middle of completing a rebalance.
    pub fn check_commit(
        &mut self,
        now_ms: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        }
        if self.fenced(member_id, group_instance_id) {
            return ErrorCode::FENCED_INSTANCE_ID;
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            return ErrorCode::NONE;
        }
        let forgets_generation = crate::planted::active(crate::planted::Bug::CommitOldGeneration);
        let Some(member) = self.members.get_mut(member_id) else {
            return if forgets_generation { ErrorCode::NONE } else { ErrorCode::UNKNOWN_MEMBER_ID };
        };
        if generation_id != self.generation_id && !forgets_generation {
            return ErrorCode::ILLEGAL_GENERATION;
        }
        member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        match self.state {
            GroupState::CompletingRebalance => ErrorCode::REBALANCE_IN_PROGRESS,
            _ => ErrorCode::NONE,
        }
    }
}

/// A member id suffix in Kafka's form (a UUID), from randomness the caller drew.
fn uuid_string(entropy: u128) -> String {
    let hex = format!("{entropy:032x}");
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Planted `leader-gets-every-assignment`: every member's part (consumer protocol), merged.
fn planted_merge<'a>(parts: impl Iterator<Item = &'a Bytes>) -> Bytes {
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as Assigned;
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    use kafka_protocol::protocol::{Decodable, Encodable};
    let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for part in parts {
        let mut bytes = part.clone();
        if bytes.len() < 2 {
            continue;
        }
        let version = bytes::Buf::get_i16(&mut bytes).clamp(0, 3);
        if let Ok(decoded) = ConsumerProtocolAssignment::decode(&mut bytes, version) {
            for t in decoded.assigned_partitions {
                topics.entry(t.topic.to_string()).or_default().extend(t.partitions);
            }
        }
    }
    let merged = ConsumerProtocolAssignment::default().with_assigned_partitions(
        topics
            .into_iter()
            .map(|(topic, partitions)| {
                let name = kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(topic));
                Assigned::default().with_topic(name).with_partitions(partitions)
            })
            .collect(),
    );
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    merged.encode(&mut out, 0).expect("encodes");
    out.freeze()
}
