//! The KIP-848 consumer-group APIs: ConsumerGroupHeartbeat (v0-1) and ConsumerGroupDescribe
//! (v0-1), wire requests in, the coordinator core's answers out.

use super::groups::{self, dispatch, topics_snapshot, wait_parked};
use super::state::Broker;
use crate::env::now_ms;
use crate::group::consumer_records::Assignment;
use crate::group::{ConsumerHeartbeat, HeartbeatReply, Reply};
use crate::types::ErrorCode;
use kafka_protocol::messages::consumer_group_describe_response as describe;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as OwnedPartitions;
use kafka_protocol::messages::consumer_group_heartbeat_response as heartbeat;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A heartbeat waits at most this long for its records to commit (it is answered sooner in
/// every case but a lost wakeup); librdkafka gives up on one after its heartbeat interval.
const HEARTBEAT_WAIT_MS_MAX: i64 = 5_000;

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn owned(partitions: &[OwnedPartitions]) -> Assignment {
    let mut assignment = Assignment::new();
    for tp in partitions {
        assignment.entry(tp.topic_id.as_u128()).or_default().extend(tp.partitions.iter().copied());
    }
    assignment
}

pub async fn consumer_group_heartbeat(
    broker: &Arc<Broker>,
    request: ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> ConsumerGroupHeartbeatResponse {
    let heartbeat = ConsumerHeartbeat {
        version,
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: request.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .as_ref()
            .map(|n| n.iter().map(|t| t.to_string()).collect()),
        subscribed_topic_regex: request.subscribed_topic_regex.as_ref().map(|s| s.to_string()),
        server_assignor: request.server_assignor.as_ref().map(|s| s.to_string()),
        topic_partitions: request.topic_partitions.as_deref().map(owned),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
        member_id_entropy: groups::member_id_entropy(),
    };
    if let Err(code) = groups::check_coordinator(broker, &heartbeat.group_id) {
        return heartbeat_response(HeartbeatReply::error(code, "not the coordinator"));
    }
    let topics = topics_snapshot(broker);
    let lookup = |name: &str| topics.get(name).copied();
    let (waiter, rx) = broker.groups.park();
    let out = broker.groups.core().consumer_heartbeat(now_ms(), heartbeat, waiter, &lookup);
    dispatch(broker, out);
    let reply = match wait_parked(broker, waiter, rx, HEARTBEAT_WAIT_MS_MAX).await {
        Some(Reply::ConsumerHeartbeat(reply)) => reply,
        _ => HeartbeatReply::error(ErrorCode::COORDINATOR_NOT_AVAILABLE, "no answer in time"),
    };
    heartbeat_response(reply)
}

fn heartbeat_response(reply: HeartbeatReply) -> ConsumerGroupHeartbeatResponse {
    let assignment = reply.assignment.map(|a| {
        let partitions = a
            .into_iter()
            .map(|(topic, ps)| {
                heartbeat::TopicPartitions::default()
                    .with_topic_id(uuid::Uuid::from_u128(topic))
                    .with_partitions(ps.into_iter().collect())
            })
            .collect();
        heartbeat::Assignment::default().with_topic_partitions(partitions)
    });
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(reply.error.0)
        .with_error_message(reply.error_message.map(str_bytes))
        .with_member_id(reply.member_id.map(str_bytes))
        .with_member_epoch(reply.member_epoch)
        .with_heartbeat_interval_ms(reply.heartbeat_interval_ms)
        .with_assignment(assignment)
}

pub fn consumer_group_describe(
    broker: &Broker,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let names: BTreeMap<u128, String> = topics_snapshot(broker).into_iter().map(|(name, (id, _))| (id, name)).collect();
    let assignment = |a: &Assignment| {
        let partitions = a
            .iter()
            .filter_map(|(topic, ps)| {
                let name = names.get(topic)?; // a deleted topic is left out, as in Kafka
                Some(
                    describe::TopicPartitions::default()
                        .with_topic_id(uuid::Uuid::from_u128(*topic))
                        .with_topic_name(TopicName(str_bytes(name.clone())))
                        .with_partitions(ps.iter().copied().collect()),
                )
            })
            .collect();
        describe::Assignment::default().with_topic_partitions(partitions)
    };
    let groups = request
        .group_ids
        .iter()
        .map(|id| {
            let group =
                describe::DescribedGroup::default().with_group_id(id.clone()).with_authorized_operations(i32::MIN);
            if id.trim().is_empty() {
                return group.with_error_code(ErrorCode::INVALID_GROUP_ID.0);
            }
            let described =
                groups::check_coordinator(broker, id).and_then(|()| broker.groups.core().describe_consumer_group(id));
            match described {
                Err(code) => {
                    let message = (code == ErrorCode::GROUP_ID_NOT_FOUND)
                        .then(|| str_bytes(format!("Group {} is not a consumer group.", id.as_str())));
                    group.with_error_code(code.0).with_error_message(message)
                }
                Ok(g) => {
                    let members = g
                        .members
                        .iter()
                        .map(|m| {
                            describe::Member::default()
                                .with_member_id(str_bytes(m.member_id.clone()))
                                .with_instance_id(m.instance_id.clone().map(str_bytes))
                                .with_rack_id(m.rack_id.clone().map(str_bytes))
                                .with_member_epoch(m.member_epoch)
                                .with_client_id(str_bytes(m.client_id.clone()))
                                .with_client_host(str_bytes(m.client_host.clone()))
                                .with_subscribed_topic_names(
                                    m.subscribed_topic_names.iter().map(|n| TopicName(str_bytes(n.clone()))).collect(),
                                )
                                .with_subscribed_topic_regex(m.subscribed_topic_regex.clone().map(str_bytes))
                                .with_assignment(assignment(&m.assignment))
                                .with_target_assignment(assignment(&m.target))
                                .with_member_type(1)
                        })
                        .collect();
                    group
                        .with_group_state(str_bytes(g.state))
                        .with_group_epoch(g.group_epoch)
                        .with_assignment_epoch(g.assignment_epoch)
                        .with_assignor_name(str_bytes(g.assignor))
                        .with_members(members)
                }
            }
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
