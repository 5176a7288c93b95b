//! Subscribe-mode consumers: group members that speak the classic protocol from the client
//! side as Kafka's consumers do (FindCoordinator, JoinGroup with MEMBER_ID_REQUIRED, the
//! leader's `range` assignment in the consumer-protocol encoding, SyncGroup, Heartbeat,
//! OffsetFetch, OffsetCommit after each poll, LeaveGroup at the end), and record what they
//! were given: assignments per generation, commits, committed offsets, and every poll.
//!
//! Every request has its own timeout (the link's); the rebalance timeout is kept below it, so a
//! JoinGroup long poll is answered before the link gives up.

use crate::client::{fetch, FetchResult, Recorder, Router};
use crate::group_assignors::Assignor;
use crate::history::{Op, Outcome, Partition, Process};
use broker::types::ErrorCode;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// `session.timeout.ms` of the simulator's members (the broker's default minimum).
pub const SESSION_TIMEOUT_MS: i32 = 6_000;
/// `max.poll.interval.ms` as the rebalance timeout: below the link's 3 s request timeout. A
/// KIP-848 member has this long to acknowledge a revocation.
pub const REBALANCE_TIMEOUT_MS: i32 = 2_500;
/// How often a member heartbeats (well within the rebalance timeout, so it rejoins in time).
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);

/// The workload's group.
pub const GROUP: &str = "sim-group";

/// One member's settings.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub process: Process,
    pub name: String,
    pub bootstrap: Vec<String>,
    pub topic: String,
    pub partitions: i32,
    pub group: String,
    pub fetch_max_bytes: i32,
    /// A slow consumer: every [`STALL_EVERY`] it takes [`STALL_FOR`] over a batch before
    /// committing it, longer than its session, as a consumer that exceeds
    /// `max.poll.interval.ms` would. It is expelled meanwhile, and its late commit must be
    /// refused.
    pub slow: bool,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// The assignor the members offer (all the same); the leader runs it.
    pub assignor: Assignor,
    /// `enable.auto.commit`: commit every [`AUTO_COMMIT_EVERY`] instead of after every poll.
    pub auto_commit: bool,
    /// KIP-848 (`group.protocol=consumer`, `crate::group_consumer_protocol`): the broker
    /// assigns, with `server_assignor` (`None`: its default); `assignor` is not used.
    pub consumer_protocol: bool,
    pub server_assignor: Option<&'static str>,
}

impl MemberConfig {
    /// Who owns a partition, for the history: a static member's instance id (a restarted one
    /// is the same owner under a new member id, the old one fenced), else its member id.
    pub(crate) fn owner(&self, member_id: &str) -> String {
        self.instance_id.clone().unwrap_or_else(|| member_id.to_string())
    }

    pub(crate) fn instance(&self) -> Option<StrBytes> {
        self.instance_id.as_deref().map(text)
    }
}

/// `auto.commit.interval.ms` of members that auto commit.
const AUTO_COMMIT_EVERY: Duration = Duration::from_secs(1);
/// An owned partition's position before OffsetFetch answered.
pub(crate) const UNKNOWN_POSITION: i64 = -1;

/// How often a slow member stalls.
const STALL_EVERY: Duration = Duration::from_secs(20);
/// How long a slow member stalls: past its session timeout.
const STALL_FOR: Duration = Duration::from_secs(8);

pub(crate) fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The member's subscription in the consumer protocol: the topic (version 0), and with a
/// cooperative assignor the partitions it owns (version 1).
fn subscription(topic: &str, owned: Option<Vec<Partition>>) -> Bytes {
    let mut buf = BytesMut::new();
    let subscription = ConsumerProtocolSubscription::default().with_topics(vec![text(topic)]);
    match owned {
        None => {
            buf.put_i16(0);
            subscription.encode(&mut buf, 0).expect("encodes");
        }
        Some(partitions) => {
            buf.put_i16(1);
            let owned = vec![consumer_protocol_subscription::TopicPartition::default()
                .with_topic(TopicName(text(topic)))
                .with_partitions(partitions)];
            subscription.with_owned_partitions(owned).encode(&mut buf, 1).expect("encodes");
        }
    }
    buf.freeze()
}

/// The partitions of `topic` a member's subscription says it owns (none if it says nothing).
fn owned_in(mut metadata: Bytes, topic: &str) -> Vec<Partition> {
    if metadata.remaining() < 2 {
        return Vec::new();
    }
    let version = metadata.get_i16();
    let Ok(subscription) = ConsumerProtocolSubscription::decode(&mut metadata, version.clamp(0, 3)) else {
        return Vec::new();
    };
    subscription
        .owned_partitions
        .into_iter()
        .filter(|t| t.topic.0.as_str() == topic)
        .flat_map(|t| t.partitions)
        .collect()
}

fn encode_assignment(topic: &str, partitions: &[Partition]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(vec![AssignedPartitions::default()
            .with_topic(TopicName(text(topic)))
            .with_partitions(partitions.to_vec())])
        .encode(&mut buf, 0)
        .expect("encodes");
    buf.freeze()
}

fn decode_assignment(mut bytes: Bytes, topic: &str) -> Option<Vec<Partition>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    if bytes.remaining() < 2 {
        return None;
    }
    let version = bytes.get_i16();
    let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3)).ok()?;
    Some(
        assignment
            .assigned_partitions
            .into_iter()
            .filter(|t| t.topic.0.as_str() == topic)
            .flat_map(|t| t.partitions)
            .collect(),
    )
}

/// Where a member stands with its group.
pub(crate) struct Membership {
    pub(crate) coordinator: Option<String>,
    pub(crate) member_id: String,
    /// The generation, or a KIP-848 member's epoch; -1: not in the group (join).
    pub(crate) generation: i32,
    /// Owned partitions → (position, first poll since the assignment). Position
    /// [`UNKNOWN_POSITION`] until OffsetFetch said where the partition's commits are.
    pub(crate) owned: BTreeMap<Partition, (i64, bool)>,
    /// KIP-848: the next heartbeat restates everything (after a join or a coordinator move).
    pub(crate) full_heartbeat: bool,
    /// KIP-848: the next heartbeat acknowledges a changed assignment (says what is owned).
    pub(crate) ack_pending: bool,
    /// With auto commit: the next commit.
    next_auto_commit: tokio::time::Instant,
    /// The group's committed offset of each partition as this member last heard it (its own
    /// acknowledged commits, OffsetFetch answers): a position beyond it is committed again.
    acknowledged: BTreeMap<Partition, i64>,
    /// A slow member's next stall.
    next_stall: tokio::time::Instant,
}

/// Why the member must (re)join.
pub(crate) enum Rejoin {
    /// Keep the member id (REBALANCE_IN_PROGRESS).
    Same,
    /// Start as a new member (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, FENCED_INSTANCE_ID).
    Fresh,
    /// Look the coordinator up again first.
    FindCoordinator,
}

fn classify(code: ErrorCode) -> Rejoin {
    match code {
        ErrorCode::REBALANCE_IN_PROGRESS => Rejoin::Same,
        ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::ILLEGAL_GENERATION | ErrorCode::FENCED_INSTANCE_ID => Rejoin::Fresh,
        _ => Rejoin::FindCoordinator,
    }
}

/// A group member: joins, consumes and commits what it owns until `stop`, then leaves.
pub async fn run_group_member(config: MemberConfig, recorder: Recorder, stop: Arc<tokio::sync::Notify>) {
    let mut router = Router::new(config.bootstrap.clone(), config.name.clone(), config.topic.clone());
    let mut m = Membership {
        coordinator: None,
        member_id: String::new(),
        generation: -1,
        owned: BTreeMap::new(),
        next_auto_commit: tokio::time::Instant::now() + AUTO_COMMIT_EVERY,
        acknowledged: BTreeMap::new(),
        next_stall: tokio::time::Instant::now() + STALL_EVERY,
        full_heartbeat: true,
        ack_pending: false,
    };
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let pause = match step(&config, &mut router, &mut m, &recorder).await {
            Ok(()) => Duration::from_millis(50),
            Err(Rejoin::Same) => Duration::from_millis(10),
            Err(Rejoin::Fresh) => {
                // Out of the group: whatever it owned is lost (Kafka's onPartitionsLost), even
                // to a cooperative member; a new owner may have moved on since (swarm-groups
                // seed 233: a zombie's kept position, committed later, moved a commit back). A
                // KIP-848 member rejoins under the same member id, as librdkafka does, after a
                // heartbeat interval (a fenced id stays fenced until its old session ends).
                m.generation = -1;
                m.owned.clear();
                m.acknowledged.clear();
                if config.consumer_protocol {
                    HEARTBEAT_EVERY
                } else {
                    m.member_id.clear();
                    Duration::from_millis(10)
                }
            }
            Err(Rejoin::FindCoordinator) => {
                m.coordinator = None;
                Duration::from_millis(100)
            }
        };
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    if config.consumer_protocol {
        crate::group_consumer_protocol::leave(&config, &mut router, &m, &recorder).await;
    } else {
        leave(&config, &mut router, &m).await;
    }
}

/// One round: make sure the member is in a generation, then poll, commit and heartbeat.
async fn step(
    config: &MemberConfig,
    router: &mut Router,
    m: &mut Membership,
    recorder: &Recorder,
) -> Result<(), Rejoin> {
    if m.coordinator.is_none() {
        m.coordinator = Some(find_coordinator(router, &config.group).await.ok_or(Rejoin::FindCoordinator)?);
        if config.consumer_protocol {
            m.full_heartbeat = true; // the epoch stands; the new coordinator hears everything
        } else {
            m.generation = -1;
        }
    }
    if m.generation < 0 {
        if config.consumer_protocol {
            crate::group_consumer_protocol::heartbeat(config, router, m, recorder).await?;
        } else {
            join_and_sync(config, router, m, recorder).await?;
        }
    }
    fetch_committed(config, router, m, recorder).await?;
    let heartbeat_due = tokio::time::Instant::now() + HEARTBEAT_EVERY;
    let partitions: Vec<Partition> = m.owned.keys().copied().collect();
    for partition in partitions {
        let (position, after_seek) = m.owned[&partition];
        if position == UNKNOWN_POSITION {
            continue;
        }
        let invoked = recorder.now_ns();
        match fetch(router, &config.topic, partition, position, 100, config.fetch_max_bytes).await {
            FetchResult::Records { records, high_watermark } if !records.is_empty() => {
                let next = records.last().map_or(position, |(o, _)| o + 1);
                recorder.record(
                    config.process,
                    invoked,
                    Outcome::Ok,
                    Op::Poll { partition, records, high_watermark: Some(high_watermark), after_seek },
                );
                m.owned.insert(partition, (next, false));
                if config.slow && tokio::time::Instant::now() >= m.next_stall {
                    tokio::time::sleep(STALL_FOR).await;
                    m.next_stall = tokio::time::Instant::now() + STALL_EVERY;
                }
                if !config.auto_commit {
                    commit(config, router, m, recorder, partition, next).await?;
                }
            }
            FetchResult::Records { .. } | FetchResult::Error => {}
            FetchResult::OutOfRange => {
                // auto.offset.reset=earliest: our topics expire nothing, so it is 0.
                m.owned.insert(partition, (0, true));
            }
        }
        if tokio::time::Instant::now() >= heartbeat_due {
            break;
        }
    }
    // Auto commit: every AUTO_COMMIT_EVERY. Commit after every poll: here only what a poll's
    // commit left unacknowledged (its answer lost), or a member with nothing new to read
    // would never commit it again (swarm-groups seed 487).
    if !config.auto_commit || tokio::time::Instant::now() >= m.next_auto_commit {
        commit_positions(config, router, m, recorder).await?;
    }
    if config.consumer_protocol {
        crate::group_consumer_protocol::heartbeat(config, router, m, recorder).await
    } else {
        heartbeat(config, router, m).await
    }
}

/// Commits each owned partition's position that is not the committed offset as the member
/// last heard it.
pub(crate) async fn commit_positions(
    config: &MemberConfig,
    router: &mut Router,
    m: &mut Membership,
    recorder: &Recorder,
) -> Result<(), Rejoin> {
    m.next_auto_commit = tokio::time::Instant::now() + AUTO_COMMIT_EVERY;
    let due: Vec<(Partition, i64)> = m
        .owned
        .iter()
        .filter(|(p, (position, _))| *position != UNKNOWN_POSITION && m.acknowledged.get(p) != Some(position))
        .map(|(p, (position, _))| (*p, *position))
        .collect();
    for (partition, position) in due {
        commit(config, router, m, recorder, partition, position).await?;
    }
    Ok(())
}

pub(crate) async fn coordinator_call(
    router: &mut Router,
    m: &Membership,
    api: ApiKey,
    version: i16,
    body: RequestKind,
) -> Result<ResponseKind, Rejoin> {
    let addr = m.coordinator.clone().ok_or(Rejoin::FindCoordinator)?;
    router.send_to(&addr, api, version, body).await.map_err(|_| Rejoin::FindCoordinator)
}

async fn find_coordinator(router: &mut Router, group: &str) -> Option<String> {
    let request = FindCoordinatorRequest::default().with_key(text(group)).with_key_type(0);
    match router.send_any(ApiKey::FindCoordinator, 3, RequestKind::FindCoordinator(request)).await {
        Ok(ResponseKind::FindCoordinator(r)) if ErrorCode(r.error_code).is_none() => {
            Some(format!("{}:{}", r.host, r.port))
        }
        _ => None,
    }
}

async fn join_and_sync(
    config: &MemberConfig,
    router: &mut Router,
    m: &mut Membership,
    recorder: &Recorder,
) -> Result<(), Rejoin> {
    if !config.assignor.cooperative() {
        m.owned.clear(); // eager: everything is given up when a rebalance starts
    }
    let owned: Vec<Partition> = m.owned.keys().copied().collect();
    let join = |member_id: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(text(&config.group)))
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
            .with_member_id(text(member_id))
            .with_group_instance_id(config.instance())
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(text("range"))
                .with_name(text(config.assignor.name()))
                .with_metadata(subscription(&config.topic, config.assignor.cooperative().then(|| owned.clone())))])
    };
    let mut answer =
        coordinator_call(router, m, ApiKey::JoinGroup, 5, RequestKind::JoinGroup(join(&m.member_id))).await?;
    if let ResponseKind::JoinGroup(r) = &answer {
        if ErrorCode(r.error_code) == ErrorCode::MEMBER_ID_REQUIRED {
            m.member_id = r.member_id.to_string();
            answer =
                coordinator_call(router, m, ApiKey::JoinGroup, 5, RequestKind::JoinGroup(join(&m.member_id))).await?;
        }
    }
    let ResponseKind::JoinGroup(joined) = answer else { return Err(Rejoin::FindCoordinator) };
    let code = ErrorCode(joined.error_code);
    if !code.is_none() {
        return Err(classify(code));
    }
    m.member_id = joined.member_id.to_string();
    let assignments = if joined.leader == joined.member_id {
        let members: Vec<(String, Vec<Partition>)> = joined
            .members
            .iter()
            .map(|member| (member.member_id.to_string(), owned_in(member.metadata.clone(), &config.topic)))
            .collect();
        config
            .assignor
            .assign(&members, config.partitions)
            .into_iter()
            .map(|(member, partitions)| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(text(&member))
                    .with_assignment(encode_assignment(&config.topic, &partitions))
            })
            .collect()
    } else {
        Vec::new()
    };
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(text(&config.group)))
        .with_generation_id(joined.generation_id)
        .with_member_id(text(&m.member_id))
        .with_group_instance_id(config.instance())
        .with_assignments(assignments);
    let invoked = recorder.now_ns();
    let ResponseKind::SyncGroup(synced) =
        coordinator_call(router, m, ApiKey::SyncGroup, 3, RequestKind::SyncGroup(sync)).await?
    else {
        return Err(Rejoin::FindCoordinator);
    };
    let code = ErrorCode(synced.error_code);
    if !code.is_none() {
        return Err(classify(code));
    }
    let partitions = decode_assignment(synced.assignment, &config.topic).ok_or(Rejoin::Fresh)?;
    recorder.record(
        config.process,
        invoked,
        Outcome::Ok,
        Op::GroupAssigned {
            member: config.owner(&m.member_id),
            generation: joined.generation_id,
            partitions: partitions.clone(),
        },
    );
    m.generation = joined.generation_id;
    let before = std::mem::take(&mut m.owned);
    m.owned = partitions.iter().map(|p| (*p, before.get(p).copied().unwrap_or((UNKNOWN_POSITION, true)))).collect();
    if before.keys().any(|p| !m.owned.contains_key(p)) {
        // Cooperative: partitions were taken away to be given to others; rejoin at once, so
        // the next generation can hand them over.
        m.generation = -1;
        return Err(Rejoin::Same);
    }
    Ok(())
}

/// Starts each owned partition at its committed offset (or the beginning).
async fn fetch_committed(
    config: &MemberConfig,
    router: &mut Router,
    m: &mut Membership,
    recorder: &Recorder,
) -> Result<(), Rejoin> {
    let unknown: Vec<Partition> =
        m.owned.iter().filter(|(_, (position, _))| *position == UNKNOWN_POSITION).map(|(p, _)| *p).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let request = OffsetFetchRequest::default().with_group_id(GroupId(text(&config.group))).with_topics(Some(vec![
        OffsetFetchRequestTopic::default().with_name(TopicName(text(&config.topic))).with_partition_indexes(unknown),
    ]));
    let invoked = recorder.now_ns();
    let ResponseKind::OffsetFetch(r) =
        coordinator_call(router, m, ApiKey::OffsetFetch, 5, RequestKind::OffsetFetch(request)).await?
    else {
        return Err(Rejoin::FindCoordinator);
    };
    if !ErrorCode(r.error_code).is_none() {
        m.lose_generation(config);
        return Err(classify(ErrorCode(r.error_code)));
    }
    for p in r.topics.iter().flat_map(|t| t.partitions.iter()) {
        if !ErrorCode(p.error_code).is_none() || !m.owned.contains_key(&p.partition_index) {
            m.lose_generation(config);
            return Err(Rejoin::FindCoordinator);
        }
        let offset = (p.committed_offset >= 0).then_some(p.committed_offset);
        recorder.record(
            config.process,
            invoked,
            Outcome::Ok,
            Op::GroupOffsetFetch { partition: p.partition_index, offset },
        );
        m.owned.insert(p.partition_index, (offset.unwrap_or(0), true));
        if let Some(offset) = offset {
            m.acknowledged.insert(p.partition_index, offset);
        }
    }
    Ok(())
}

async fn commit(
    config: &MemberConfig,
    router: &mut Router,
    m: &mut Membership,
    recorder: &Recorder,
    partition: Partition,
    offset: i64,
) -> Result<(), Rejoin> {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(&config.group)))
        .with_generation_id_or_member_epoch(m.generation)
        .with_member_id(text(&m.member_id))
        .with_group_instance_id(config.instance())
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(&config.topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(text("")))])]);
    let op = Op::GroupCommit { member: config.owner(&m.member_id), generation: m.generation, partition, offset };
    let invoked = recorder.now_ns();
    // v9: a KIP-848 member's epoch is checked as such.
    let version = if config.consumer_protocol { 9 } else { 7 };
    let answer = coordinator_call(router, m, ApiKey::OffsetCommit, version, RequestKind::OffsetCommit(request)).await;
    let code = match &answer {
        Ok(ResponseKind::OffsetCommit(r)) => {
            r.topics.first().and_then(|t| t.partitions.first()).map(|p| ErrorCode(p.error_code))
        }
        _ => None,
    };
    match code {
        Some(ErrorCode::NONE) => {
            recorder.record(config.process, invoked, Outcome::Ok, op);
            m.acknowledged.insert(partition, offset);
            Ok(())
        }
        Some(code) => {
            // A refused commit: nothing was stored, except for the coordinator errors that
            // follow a write that timed out (it may still land).
            let outcome = if matches!(code, ErrorCode::COORDINATOR_NOT_AVAILABLE | ErrorCode::NOT_COORDINATOR) {
                Outcome::Info
            } else {
                Outcome::Fail
            };
            recorder.record(config.process, invoked, outcome, op);
            if config.consumer_protocol {
                // STALE_MEMBER_EPOCH: the next heartbeat brings the epoch; the position stays
                // unacknowledged and is committed again.
                return match code {
                    ErrorCode::STALE_MEMBER_EPOCH => Ok(()),
                    ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::FENCED_MEMBER_EPOCH => Err(Rejoin::Fresh),
                    _ => Err(Rejoin::FindCoordinator),
                };
            }
            m.generation = -1;
            Err(classify(code))
        }
        None => {
            recorder.record(config.process, invoked, Outcome::Info, op);
            m.lose_generation(config);
            Err(Rejoin::FindCoordinator)
        }
    }
}

impl Membership {
    /// A classic member must join again after a coordinator error; a KIP-848 member keeps its
    /// epoch (its next heartbeat is a full one).
    fn lose_generation(&mut self, config: &MemberConfig) {
        if config.consumer_protocol {
            self.full_heartbeat = true;
        } else {
            self.generation = -1;
        }
    }
}

async fn heartbeat(config: &MemberConfig, router: &mut Router, m: &mut Membership) -> Result<(), Rejoin> {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(text(&config.group)))
        .with_generation_id(m.generation)
        .with_member_id(text(&m.member_id))
        .with_group_instance_id(config.instance());
    match coordinator_call(router, m, ApiKey::Heartbeat, 3, RequestKind::Heartbeat(request)).await {
        Ok(ResponseKind::Heartbeat(r)) if ErrorCode(r.error_code).is_none() => Ok(()),
        Ok(ResponseKind::Heartbeat(r)) => {
            m.generation = -1;
            Err(classify(ErrorCode(r.error_code)))
        }
        _ => {
            m.generation = -1;
            Err(Rejoin::FindCoordinator)
        }
    }
}

async fn leave(config: &MemberConfig, router: &mut Router, m: &Membership) {
    if m.member_id.is_empty() || m.coordinator.is_none() {
        return;
    }
    let request = LeaveGroupRequest::default().with_group_id(GroupId(text(&config.group))).with_members(vec![
        MemberIdentity::default().with_member_id(text(&m.member_id)).with_group_instance_id(config.instance()),
    ]);
    let _ = coordinator_call(router, m, ApiKey::LeaveGroup, 3, RequestKind::LeaveGroup(request)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cooperative_subscription_carries_the_owned_partitions_and_an_eager_one_none() {
        assert_eq!(owned_in(subscription("t", Some(vec![2, 5])), "t"), vec![2, 5]);
        assert_eq!(owned_in(subscription("t", None), "t"), Vec::<Partition>::new());
        assert_eq!(owned_in(Bytes::from_static(b"x"), "t"), Vec::<Partition>::new());
    }

    #[test]
    fn an_assignment_round_trips_through_the_consumer_protocol() {
        let bytes = encode_assignment("t", &[1, 4]);
        assert_eq!(decode_assignment(bytes, "t"), Some(vec![1, 4]));
        assert_eq!(decode_assignment(Bytes::new(), "t"), Some(vec![]));
    }
}
