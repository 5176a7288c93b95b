//! The consumer-group APIs: wire requests in (every version the broker advertises), the
//! coordinator core's answers out. FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.

use super::groups::{self, dispatch, wait_parked, OFFSETS_TOPIC};
use super::state::Broker;
use crate::controller::rpc::{ControllerReply, ControllerRequest};
use crate::controller::NO_LEADER;
use crate::env::now_ms;
use crate::group::{CommitRequest, JoinReply, JoinRequest, OffsetValue, Reply, SyncReply, SyncRequest};
use crate::types::{ErrorCode, TopicPartition};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How long a SyncGroup may stay parked: the group answers it within its rebalance timeout,
/// which the request does not carry; this is the largest Kafka allows.
const SYNC_WAIT_MS_MAX: i64 = 300_000;
/// A JoinGroup's rebalance timeout is honoured up to this.
const JOIN_WAIT_MS_MAX: i64 = 1_800_000;

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn opt_string(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

// ---------------------------------------------------------------- FindCoordinator

/// Where each key's coordinator is. Only groups (key type 0): transactions are not served yet,
/// and say so.
pub async fn find_coordinator(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        request.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![request.key.to_string()]
    };
    let mut results = Vec::with_capacity(keys.len());
    for key in keys {
        let found = match request.key_type {
            0 => coordinator_for(broker, &key).await,
            1 => Err((ErrorCode::INVALID_REQUEST, "transactions are not supported by this broker yet".to_string())),
            other => Err((ErrorCode::INVALID_REQUEST, format!("unknown coordinator key type {other}"))),
        };
        results.push((key, found));
    }
    if version >= 4 {
        let coordinators = results
            .into_iter()
            .map(|(key, found)| {
                let c = Coordinator::default().with_key(str_bytes(key));
                match found {
                    Ok((node, host, port)) => c.with_node_id(BrokerId(node)).with_host(str_bytes(host)).with_port(port),
                    Err((code, message)) => c
                        .with_node_id(BrokerId(-1))
                        .with_host(str_bytes(""))
                        .with_port(-1)
                        .with_error_code(code.0)
                        .with_error_message(Some(str_bytes(message))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (_, found) = results.pop().expect("one key before v4");
    match found {
        Ok((node, host, port)) => {
            FindCoordinatorResponse::default().with_node_id(BrokerId(node)).with_host(str_bytes(host)).with_port(port)
        }
        Err((code, message)) => {
            let r = FindCoordinatorResponse::default()
                .with_error_code(code.0)
                .with_node_id(BrokerId(-1))
                .with_host(str_bytes(""))
                .with_port(-1);
            if version >= 1 {
                r.with_error_message(Some(str_bytes(message)))
            } else {
                r
            }
        }
    }
}

type Found = Result<(i32, String, i32), (ErrorCode, String)>;

/// The broker leading the group's `__consumer_offsets` partition; the topic is created on
/// first use.
async fn coordinator_for(broker: &Arc<Broker>, group_id: &str) -> Found {
    if group_id.is_empty() {
        return Err((ErrorCode::INVALID_REQUEST, "the group id is empty".to_string()));
    }
    let exists = broker.meta().image.topics.contains_key(OFFSETS_TOPIC);
    if !exists {
        create_offsets_topic(broker).await;
        return Err((ErrorCode::COORDINATOR_NOT_AVAILABLE, "creating __consumer_offsets".to_string()));
    }
    let partition = broker.groups.core().partition_for(group_id);
    let meta = broker.meta();
    let not_available = |why: &str| Err((ErrorCode::COORDINATOR_NOT_AVAILABLE, why.to_string()));
    let Some(topic) = meta.image.topics.get(OFFSETS_TOPIC) else { return not_available("__consumer_offsets is gone") };
    let Some(p) = meta.image.partitions.get(&(topic.topic_id, partition)) else {
        return not_available("the group's __consumer_offsets partition does not exist");
    };
    if p.leader == NO_LEADER {
        return not_available("the group's __consumer_offsets partition has no leader");
    }
    match meta.image.brokers.get(&p.leader) {
        Some(b) if !b.fenced => Ok((b.node_id, b.host.clone(), b.port)),
        _ if p.leader == broker.node_id => Ok((broker.node_id, broker.advertised.0.clone(), broker.advertised.1)),
        _ => not_available("the coordinator's broker is not available"),
    }
}

async fn create_offsets_topic(broker: &Arc<Broker>) {
    let topic = groups::offsets_topic(broker);
    let factor = topic.replication_factor;
    let reply =
        broker.controller_call(ControllerRequest::CreateTopics { topics: vec![topic], validate_only: false }).await;
    match reply {
        Ok(ControllerReply::CreatedTopics(results)) => {
            for error in
                results.into_iter().filter_map(Result::err).filter(|e| e.code != ErrorCode::TOPIC_ALREADY_EXISTS)
            {
                tracing::warn!(
                    code = error.code.0,
                    reason = error.message,
                    offsets_topic_replication_factor = factor,
                    "creating __consumer_offsets failed (are there offsets.topic.replication.factor brokers?)"
                );
            }
        }
        Ok(other) => tracing::warn!(?other, "unexpected controller reply"),
        Err(e) => tracing::warn!(error = %e, "creating __consumer_offsets failed"),
    }
}

// ---------------------------------------------------------------- JoinGroup / SyncGroup

pub async fn join_group(
    broker: &Arc<Broker>,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> JoinGroupResponse {
    let rebalance_timeout_ms = if version >= 1 { request.rebalance_timeout_ms } else { request.session_timeout_ms };
    let join = JoinRequest {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: opt_string(&request.group_instance_id),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms,
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        require_known_member_id: version >= 4,
        member_id_entropy: groups::member_id_entropy(),
    };
    let member_id = join.member_id.clone();
    if let Err(code) = groups::check_coordinator(broker, &join.group_id) {
        return join_response(JoinReply::error(code, &member_id), version);
    }
    let (waiter, rx) = broker.groups.park();
    let out = broker.groups.core().join(now_ms(), join, waiter);
    dispatch(broker, out);
    let limit = i64::from(rebalance_timeout_ms).clamp(0, JOIN_WAIT_MS_MAX);
    let reply = match wait_parked(broker, waiter, rx, limit).await {
        Some(Reply::Join(reply)) => reply,
        _ => JoinReply::error(ErrorCode::REBALANCE_IN_PROGRESS, &member_id),
    };
    join_response(reply, version)
}

fn join_response(reply: JoinReply, version: i16) -> JoinGroupResponse {
    let members = reply
        .members
        .into_iter()
        .map(|m| {
            let member =
                JoinGroupResponseMember::default().with_member_id(str_bytes(m.member_id)).with_metadata(m.metadata);
            if version >= 5 {
                member.with_group_instance_id(m.group_instance_id.map(str_bytes))
            } else {
                member
            }
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(reply.error.0)
        .with_generation_id(reply.generation_id)
        .with_leader(str_bytes(reply.leader))
        .with_member_id(str_bytes(reply.member_id))
        .with_members(members);
    // Before v7 the protocol name is a non-null string.
    response = if version >= 7 {
        response
            .with_protocol_type(reply.protocol_type.map(str_bytes))
            .with_protocol_name(reply.protocol_name.map(str_bytes))
    } else {
        response.with_protocol_name(Some(str_bytes(reply.protocol_name.unwrap_or_default())))
    };
    if version >= 9 {
        response = response.with_skip_assignment(reply.skip_assignment);
    }
    response
}

pub async fn sync_group(broker: &Arc<Broker>, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let sync = SyncRequest {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: opt_string(&request.group_instance_id),
        generation_id: request.generation_id,
        protocol_type: opt_string(&request.protocol_type),
        protocol_name: opt_string(&request.protocol_name),
        assignments: request.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect(),
    };
    if let Err(code) = groups::check_coordinator(broker, &sync.group_id) {
        return SyncGroupResponse::default().with_error_code(code.0);
    }
    let (waiter, rx) = broker.groups.park();
    let out = broker.groups.core().sync(now_ms(), sync, waiter);
    dispatch(broker, out);
    let reply = match wait_parked(broker, waiter, rx, SYNC_WAIT_MS_MAX).await {
        Some(Reply::Sync(reply)) => reply,
        _ => SyncReply::error(ErrorCode::REBALANCE_IN_PROGRESS),
    };
    let response = SyncGroupResponse::default().with_error_code(reply.error.0).with_assignment(reply.assignment);
    if version >= 5 {
        response
            .with_protocol_type(reply.protocol_type.map(str_bytes))
            .with_protocol_name(reply.protocol_name.map(str_bytes))
    } else {
        response
    }
}

// ---------------------------------------------------------------- Heartbeat / LeaveGroup

pub fn heartbeat(broker: &Broker, request: HeartbeatRequest) -> HeartbeatResponse {
    if let Err(code) = groups::check_coordinator(broker, &request.group_id) {
        return HeartbeatResponse::default().with_error_code(code.0);
    }
    let code = broker.groups.core().heartbeat(
        now_ms(),
        &request.group_id,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(code.0)
}

pub fn leave_group(broker: &Arc<Broker>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        request.members.iter().map(|m| (m.member_id.to_string(), opt_string(&m.group_instance_id))).collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let (code, codes, out) = match groups::check_coordinator(broker, &request.group_id) {
        Ok(()) => broker.groups.core().leave(now_ms(), &request.group_id, &leaving),
        Err(code) => (code, Vec::new(), crate::group::Output::default()),
    };
    dispatch(broker, out);
    if version < 3 {
        // One member, no member list: its error is the group's.
        let code = if code.is_none() { codes.first().copied().unwrap_or(code) } else { code };
        return LeaveGroupResponse::default().with_error_code(code.0);
    }
    let members = leaving
        .into_iter()
        .zip(codes.into_iter().chain(std::iter::repeat(code)))
        .map(|((member_id, instance), code)| {
            MemberResponse::default()
                .with_member_id(str_bytes(member_id))
                .with_group_instance_id(instance.map(str_bytes))
                .with_error_code(code.0)
        })
        .collect();
    LeaveGroupResponse::default().with_error_code(code.0).with_members(members)
}

// ---------------------------------------------------------------- OffsetCommit / OffsetFetch

pub async fn offset_commit(broker: &Arc<Broker>, request: OffsetCommitRequest, version: i16) -> OffsetCommitResponse {
    let now = now_ms();
    let mut codes: BTreeMap<TopicPartition, ErrorCode> = BTreeMap::new();
    let mut offsets = Vec::new();
    {
        let meta = broker.meta();
        for topic in &request.topics {
            let known = meta.image.topics.get(topic.name.0.as_str()).map(|t| t.partitions);
            for p in &topic.partitions {
                let tp = TopicPartition::new(topic.name.0.to_string(), p.partition_index);
                if !known.is_some_and(|n| (0..n).contains(&p.partition_index)) {
                    codes.insert(tp, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
                    continue;
                }
                let value = OffsetValue {
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                    commit_timestamp_ms: now,
                };
                offsets.push((tp, value));
            }
        }
    }
    let commit = CommitRequest {
        group_id: request.group_id.to_string(),
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.to_string(),
        group_instance_id: opt_string(&request.group_instance_id),
        offsets,
        version,
    };
    let (decided, write) = match groups::check_coordinator(broker, &commit.group_id) {
        Ok(()) => broker.groups.core().commit_offsets(now, commit),
        Err(code) => (commit.offsets.iter().map(|(tp, _)| (tp.clone(), code)).collect(), None),
    };
    let result = match &write {
        Some(write) => match groups::append(broker, write) {
            Ok(awaiting) => groups::await_replication(broker, awaiting).await,
            Err(code) => Err(code),
        },
        None => Ok(()),
    };
    if let Some(write) = &write {
        groups::written(broker, write, result);
    }
    for (tp, code) in decided {
        let code = match (code, result) {
            (ErrorCode::NONE, Err(failed)) => failed,
            (code, _) => code,
        };
        codes.insert(tp, code);
    }
    // Answer in the request's order.
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let tp = TopicPartition::new(topic.name.0.to_string(), p.partition_index);
                    let code = codes.get(&tp).copied().unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR);
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code.0)
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's committed offsets: per partition (offset, leader epoch, metadata), or the
/// group's error.
type Fetched = Result<Vec<(String, Vec<(i32, i64, i32, String)>)>, ErrorCode>;

fn fetch_group(
    broker: &Broker,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    member: Option<(Option<String>, i32)>,
) -> Fetched {
    let wanted: Option<Vec<TopicPartition>> = topics.map(|topics| {
        topics
            .iter()
            .flat_map(|(name, indexes)| indexes.iter().map(|i| TopicPartition::new(name.clone(), *i)))
            .collect()
    });
    groups::check_coordinator(broker, group_id)?;
    let found = {
        let core = broker.groups.core();
        if let Some((member_id, epoch)) = member {
            let code = core.check_consumer_fetch(group_id, member_id.as_deref(), epoch);
            if !code.is_none() {
                return Err(code);
            }
        }
        core.fetch_offsets(group_id, wanted.as_deref())?
    };
    let mut by_topic: BTreeMap<String, Vec<(i32, i64, i32, String)>> = BTreeMap::new();
    for (tp, value) in found {
        let entry = match value {
            Some(v) => (tp.partition, v.offset, v.leader_epoch, v.metadata),
            None => (tp.partition, -1, -1, String::new()),
        };
        by_topic.entry(tp.topic).or_default().push(entry);
    }
    Ok(by_topic.into_iter().collect())
}

pub fn offset_fetch(broker: &Broker, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|g| {
                let topics = g
                    .topics
                    .as_ref()
                    .map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
                let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                // v9: a consumer group's member fetches at its current epoch.
                let member = if version >= 9 { Some((opt_string(&g.member_id), g.member_epoch)) } else { None };
                match fetch_group(broker, &g.group_id, topics, member) {
                    Ok(found) => group.with_topics(
                        found
                            .into_iter()
                            .map(|(name, partitions)| {
                                let partitions = partitions
                                    .into_iter()
                                    .map(|(index, offset, epoch, metadata)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(index)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(str_bytes(metadata)))
                                    })
                                    .collect();
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(str_bytes(name)))
                                    .with_partitions(partitions)
                            })
                            .collect(),
                    ),
                    Err(code) => group.with_error_code(code.0),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let asked: Option<Vec<(String, Vec<i32>)>> = request
        .topics
        .as_ref()
        .map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
    let partition = |index: i32, offset: i64, epoch: i32, metadata: String, code: ErrorCode| {
        let p = OffsetFetchResponsePartition::default()
            .with_partition_index(index)
            .with_committed_offset(offset)
            .with_metadata(Some(str_bytes(metadata)))
            .with_error_code(code.0);
        if version >= 5 {
            p.with_committed_leader_epoch(epoch)
        } else {
            p
        }
    };
    match fetch_group(broker, &request.group_id, asked.clone(), None) {
        Ok(found) => {
            let topics = found
                .into_iter()
                .map(|(name, partitions)| {
                    let partitions = partitions
                        .into_iter()
                        .map(|(index, offset, epoch, metadata)| {
                            partition(index, offset, epoch, metadata, ErrorCode::NONE)
                        })
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(name)))
                        .with_partitions(partitions)
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
        Err(code) if version >= 2 => OffsetFetchResponse::default().with_error_code(code.0),
        Err(code) => {
            // v1 has no group-level error: every partition asked for carries it.
            let topics = asked
                .unwrap_or_default()
                .into_iter()
                .map(|(name, indexes)| {
                    let partitions = indexes.into_iter().map(|i| partition(i, -1, -1, String::new(), code)).collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(name)))
                        .with_partitions(partitions)
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
    }
}

// ---------------------------------------------------------------- ListGroups / DescribeGroups / DeleteGroups

/// ListGroups: classic groups (type "classic") and consumer groups (type "consumer", protocol
/// type "consumer"), filtered by state (v4+) and type (v5+), case-insensitively.
pub fn list_groups(broker: &Broker, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: Vec<String> = request.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = request.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let (classic, consumer) = {
        let core = broker.groups.core();
        (core.list(), core.list_consumer())
    };
    let all = classic
        .into_iter()
        .map(|g| (g.group_id, g.protocol_type, g.state.name().to_string(), "classic"))
        .chain(consumer.into_iter().map(|(id, state)| (id, "consumer".to_string(), state.to_string(), "consumer")));
    let groups = all
        .filter(|(_, _, state, kind)| {
            (states.is_empty() || states.contains(&state.to_lowercase()))
                && (types.is_empty() || types.iter().any(|t| t == kind))
        })
        .map(|(id, protocol_type, state, kind)| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(str_bytes(state));
            }
            if version >= 5 {
                listed = listed.with_group_type(str_bytes(kind));
            }
            listed
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub fn describe_groups(broker: &Broker, request: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            let described = if version >= 3 { described.with_authorized_operations(i32::MIN) } else { described };
            let described_group =
                groups::check_coordinator(broker, id).and_then(|()| broker.groups.core().describe(id));
            match described_group {
                Ok(g) => {
                    let members = g
                        .members
                        .into_iter()
                        .map(|m| {
                            let member = DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment);
                            if version >= 4 {
                                member.with_group_instance_id(m.group_instance_id.map(str_bytes))
                            } else {
                                member
                            }
                        })
                        .collect();
                    described
                        .with_group_state(str_bytes(g.state.name()))
                        .with_protocol_type(str_bytes(g.protocol_type))
                        .with_protocol_data(str_bytes(g.protocol_name))
                        .with_members(members)
                }
                Err(code) => described.with_error_code(code.0),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for id in &request.groups_names {
        let decided = groups::check_coordinator(broker, id).and_then(|()| broker.groups.core().delete(id));
        let code = match decided {
            Err(code) => code,
            Ok(write) => {
                let result = match groups::append(broker, &write) {
                    Ok(awaiting) => groups::await_replication(broker, awaiting).await,
                    Err(code) => Err(code),
                };
                groups::written(broker, &write, result);
                result.err().unwrap_or(ErrorCode::NONE)
            }
        };
        results.push(DeletableGroupResult::default().with_group_id(id.clone()).with_error_code(code.0));
    }
    DeleteGroupsResponse::default().with_results(results)
}

// ---------------------------------------------------------------- OffsetDelete

/// OffsetDelete (v0): removes a group's committed offsets for partitions it does not consume
/// (`kafka-consumer-groups.sh --delete-offsets`). Partitions of topics this broker does not
/// know get UNKNOWN_TOPIC_OR_PARTITION, as in Kafka.
pub async fn offset_delete(broker: &Arc<Broker>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = request.group_id.to_string();
    let mut asked: Vec<(TopicPartition, bool)> = Vec::new();
    {
        let meta = broker.meta();
        for topic in &request.topics {
            let known = meta.image.topics.get(topic.name.0.as_str()).map(|t| t.partitions);
            for p in &topic.partitions {
                let tp = TopicPartition::new(topic.name.0.to_string(), p.partition_index);
                asked.push((tp, known.is_some_and(|n| (0..n).contains(&p.partition_index))));
            }
        }
    }
    let known: Vec<TopicPartition> = asked.iter().filter(|(_, k)| *k).map(|(tp, _)| tp.clone()).collect();
    let decided = groups::check_coordinator(broker, &group_id)
        .and_then(|()| broker.groups.core().delete_offsets(&group_id, &known));
    let (codes, write) = match decided {
        Ok(decided) => decided,
        Err(code) => return OffsetDeleteResponse::default().with_error_code(code.0),
    };
    if let Some(write) = write {
        let result = match groups::append(broker, &write) {
            Ok(awaiting) => groups::await_replication(broker, awaiting).await,
            Err(code) => Err(code),
        };
        groups::written(broker, &write, result);
        if let Err(code) = result {
            return OffsetDeleteResponse::default().with_error_code(code.0);
        }
    }
    let mut codes = codes.into_iter();
    let mut topics: BTreeMap<String, Vec<OffsetDeleteResponsePartition>> = BTreeMap::new();
    for (tp, known) in asked {
        let code = if known {
            codes.next().expect("one code per known partition")
        } else {
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        };
        topics
            .entry(tp.topic)
            .or_default()
            .push(OffsetDeleteResponsePartition::default().with_partition_index(tp.partition).with_error_code(code.0));
    }
    let topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            OffsetDeleteResponseTopic::default().with_name(TopicName(str_bytes(name))).with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
