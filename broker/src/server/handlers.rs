//! One handler per API: decoded request in, response out. Handlers only set fields that exist
//! at the request's version (kafka-protocol refuses to encode anything else).
//!
//! Partition requests go to the leader: a broker that does not lead the partition answers
//! NOT_LEADER_OR_FOLLOWER and the client refreshes its metadata. Leader epochs in requests are
//! checked as KIP-320 says: older than ours is FENCED_LEADER_EPOCH, newer is UNKNOWN_LEADER_EPOCH.

use super::groups::OFFSETS_TOPIC;
use super::state::{Broker, Lookup, SharedPartition};
use crate::controller::rpc::{ControllerReply, ControllerRequest};
use crate::controller::validate_topic_name;
use crate::controller::{NewTopic, NO_LEADER};
use crate::env::now_ms;
use crate::log::AppendOutcome;
use crate::protocol::SUPPORTED_APIS;
use crate::replication::{AcksAllWait, AppendRefusal};
use crate::types::{ApiError as TopicError, ErrorCode};
use crate::types::{LeaderEpoch, Offset, TopicPartition};
use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Fetches never wait longer than this, whatever the client asks.
const FETCH_WAIT_MS_MAX: i32 = 30_000;
/// acks=all produces never wait longer than this, whatever the client asks.
const PRODUCE_WAIT_MS_MAX: i32 = 120_000;

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

pub fn api_versions(error_code: ErrorCode) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default().with_error_code(error_code.0).with_api_keys(api_keys)
}

/// Checks a request's `current_leader_epoch` (-1 = not given) against the leader's (KIP-320).
fn check_leader_epoch(current_leader_epoch: i32, ours: LeaderEpoch) -> ErrorCode {
    match current_leader_epoch {
        e if e < 0 || e == ours.0 => ErrorCode::NONE,
        e if e < ours.0 => ErrorCode::FENCED_LEADER_EPOCH,
        _ => ErrorCode::UNKNOWN_LEADER_EPOCH,
    }
}

/// The partition, if this broker leads it and it may be read or written at
/// `current_leader_epoch`; otherwise the error code to answer with.
fn leader_partition(
    broker: &Broker,
    tp: &TopicPartition,
    current_leader_epoch: i32,
) -> Result<SharedPartition, ErrorCode> {
    if broker.offline_reason().is_some() {
        return Err(ErrorCode::KAFKA_STORAGE_ERROR);
    }
    let partition = match broker.lookup(tp) {
        Lookup::UnknownTopic | Lookup::UnknownPartition => return Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
        Lookup::NotReplica => return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER),
        Lookup::Replica(p) => p,
        Lookup::Failed(_) => return Err(ErrorCode::KAFKA_STORAGE_ERROR),
    };
    {
        let p = partition.lock();
        if !p.is_leader() {
            return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        let epoch_error = check_leader_epoch(current_leader_epoch, p.leader_epoch());
        if epoch_error != ErrorCode::NONE {
            return Err(epoch_error);
        }
    }
    Ok(partition)
}

// ---------------------------------------------------------------- Metadata

pub async fn metadata(broker: &Arc<Broker>, request: MetadataRequest, version: i16) -> MetadataResponse {
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested: Option<Vec<MetadataRequestTopic>> = match request.topics {
        Some(topics) if version == 0 && topics.is_empty() => None,
        other => other,
    };
    let auto_create = broker.config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
    let names: Vec<Result<String, MetadataResponseTopic>> = match requested {
        None => broker.meta().image.topics.keys().cloned().map(Ok).collect(),
        Some(requested) => requested.into_iter().map(|wanted| requested_name(broker, wanted)).collect(),
    };
    // Auto-create the missing ones (one controller call for all of them).
    if auto_create {
        let missing: Vec<NewTopic> = names
            .iter()
            .filter_map(|n| n.as_ref().ok())
            .filter(|name| !broker.meta().image.topics.contains_key(*name))
            .map(|name| match name.as_str() {
                OFFSETS_TOPIC => super::groups::offsets_topic(broker),
                _ => NewTopic {
                    name: name.clone(),
                    partitions: -1,
                    replication_factor: -1,
                    assignments: vec![],
                    configs: BTreeMap::new(),
                },
            })
            .collect();
        if !missing.is_empty() {
            let reply =
                broker.controller_call(ControllerRequest::CreateTopics { topics: missing, validate_only: false }).await;
            match reply {
                Ok(ControllerReply::CreatedTopics(results)) => {
                    for result in results
                        .into_iter()
                        .filter_map(Result::err)
                        .filter(|e| e.code != ErrorCode::TOPIC_ALREADY_EXISTS)
                    {
                        tracing::warn!(code = result.code.0, reason = result.message, "auto-creating a topic failed");
                    }
                }
                Ok(other) => tracing::warn!(?other, "unexpected controller reply"),
                Err(e) => tracing::warn!(error = %e, "auto-creating topics failed"),
            }
        }
    }
    let topics = names
        .into_iter()
        .map(|name| match name {
            Ok(name) => metadata_topic(broker, &name, version),
            Err(response) => response,
        })
        .collect();
    let meta = broker.meta();
    let mut brokers: Vec<MetadataResponseBroker> = meta
        .image
        .live_brokers()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port)
        })
        .collect();
    if !brokers.iter().any(|b| b.node_id.0 == broker.node_id) {
        // Not unfenced yet (or not registered): clients can still reach this broker.
        let (host, port) = broker.advertised.clone();
        brokers.push(
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(broker.node_id))
                .with_host(str_bytes(host))
                .with_port(port),
        );
    }
    let mut response = MetadataResponse::default().with_brokers(brokers).with_topics(topics);
    if version >= 1 {
        // KRaft clusters report a live broker as "controller": the controller is not reachable
        // by clients.
        response = response.with_controller_id(BrokerId(broker.node_id));
    }
    if version >= 2 {
        response = response.with_cluster_id(Some(str_bytes(meta.cluster_id.clone())));
    }
    response
}

/// The topic name a request entry asks for, or the response for an entry that names none.
fn requested_name(broker: &Broker, wanted: MetadataRequestTopic) -> Result<String, MetadataResponseTopic> {
    let name = match (&wanted.name, wanted.topic_id.is_nil()) {
        (Some(name), _) => name.0.to_string(),
        (None, false) => match broker.meta().image.topic_by_id(wanted.topic_id.as_u128()) {
            Some(topic) => topic.name.clone(),
            None => {
                return Err(MetadataResponseTopic::default()
                    .with_error_code(ErrorCode::UNKNOWN_TOPIC_ID.0)
                    .with_topic_id(wanted.topic_id))
            }
        },
        (None, true) => return Err(MetadataResponseTopic::default().with_error_code(ErrorCode::INVALID_REQUEST.0)),
    };
    if let Err(e) = validate_topic_name(&name) {
        return Err(MetadataResponseTopic::default().with_name(Some(topic_name(&name))).with_error_code(e.code.0));
    }
    Ok(name)
}

fn metadata_topic(broker: &Broker, name: &str, version: i16) -> MetadataResponseTopic {
    let meta = broker.meta();
    let Some(topic) = meta.image.topics.get(name) else {
        return MetadataResponseTopic::default()
            .with_name(Some(topic_name(name)))
            .with_error_code(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0);
    };
    let ids = |nodes: &[i32]| nodes.iter().map(|&n| BrokerId(n)).collect::<Vec<_>>();
    let partitions = (0..topic.partitions)
        .filter_map(|index| meta.image.partitions.get(&(topic.topic_id, index)))
        .map(|p| {
            let mut partition = MetadataResponsePartition::default()
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(p.leader))
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr));
            if p.leader == NO_LEADER {
                partition = partition.with_error_code(ErrorCode::LEADER_NOT_AVAILABLE.0);
            }
            if version >= 5 {
                let offline: Vec<i32> = p.replicas.iter().copied().filter(|r| !meta.image.is_live(*r)).collect();
                partition = partition.with_offline_replicas(ids(&offline));
            }
            if version >= 7 {
                partition = partition.with_leader_epoch(p.leader_epoch);
            }
            partition
        })
        .collect();
    let mut response = MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_partitions(partitions)
        .with_is_internal(version >= 1 && name == OFFSETS_TOPIC);
    if version >= 10 {
        response = response.with_topic_id(uuid::Uuid::from_u128(topic.topic_id));
    }
    response
}

// ---------------------------------------------------------------- Produce

/// An appended batch an acks=all produce waits on until the high watermark passes it.
struct AwaitingReplication {
    partition: SharedPartition,
    wait: AcksAllWait,
}

/// A partition's index, its result so far, and what it still waits for.
type PartitionOutcome = (i32, PartitionProduceResult, Option<AwaitingReplication>);

/// Handles Produce. Returns `None` for acks=0 (Kafka sends no response). acks=all waits (at
/// most the request's timeout) until every ISR member has the batch: Kafka's delayed produce.
pub async fn produce(broker: &Broker, request: ProduceRequest, version: i16) -> Option<ProduceResponse> {
    let acks = request.acks;
    let mut results: Vec<(String, Vec<PartitionOutcome>)> = Vec::new();
    let mut appended = false;
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let partitions = topic
            .partition_data
            .into_iter()
            .map(|data| {
                let tp = TopicPartition::new(name.clone(), data.index);
                let transactional = request.transactional_id.is_some();
                let (result, awaiting) = produce_partition(broker, &tp, acks, transactional, data.records);
                appended |= result.error_code == ErrorCode::NONE;
                (data.index, result, awaiting)
            })
            .collect();
        results.push((name, partitions));
    }
    if appended {
        broker.data_appended.notify_waiters();
        broker.hw_changed.notify_waiters();
    }
    if acks == -1 {
        let wait_ms = request.timeout_ms.clamp(0, PRODUCE_WAIT_MS_MAX);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms as u64);
        loop {
            let changed = broker.hw_changed.notified();
            let mut waiting = false;
            for (_, partitions) in &mut results {
                for (_, result, awaiting) in partitions.iter_mut() {
                    let Some(wait) = awaiting else { continue };
                    match replication_outcome(wait) {
                        Some(code) => {
                            if code != ErrorCode::NONE {
                                *result = PartitionProduceResult::error(code, replication_error_message(code));
                            }
                            *awaiting = None;
                        }
                        None => waiting = true,
                    }
                }
            }
            if !waiting {
                break;
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() || tokio::time::timeout(remaining, changed).await.is_err() {
                for (_, partitions) in &mut results {
                    for (_, result, awaiting) in partitions.iter_mut() {
                        if awaiting.take().is_some() {
                            *result = PartitionProduceResult::error(
                                ErrorCode::REQUEST_TIMED_OUT,
                                "the in-sync replicas did not all confirm the batch within the request timeout",
                            );
                        }
                    }
                }
                break;
            }
        }
    }
    if acks == 0 {
        return None;
    }
    let responses = results
        .into_iter()
        .map(|(name, partitions)| {
            let partition_responses = partitions
                .into_iter()
                .map(|(index, result, _)| produce_partition_response(index, result, version))
                .collect();
            TopicProduceResponse::default().with_name(topic_name(&name)).with_partition_responses(partition_responses)
        })
        .collect();
    Some(ProduceResponse::default().with_responses(responses))
}

/// `None` while still waiting; else NONE (replicated) or the error to answer with.
fn replication_outcome(awaiting: &AwaitingReplication) -> Option<ErrorCode> {
    awaiting.partition.lock().acks_all_outcome(&awaiting.wait)
}

fn replication_error_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NOT_LEADER_OR_FOLLOWER => "leadership moved before the batch was replicated",
        ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND => "the ISR shrank below min.insync.replicas after the append",
        _ => "replication failed",
    }
}

struct PartitionProduceResult {
    error_code: ErrorCode,
    error_message: Option<String>,
    base_offset: i64,
    log_start_offset: i64,
}

impl PartitionProduceResult {
    fn error(error_code: ErrorCode, message: impl Into<String>) -> Self {
        PartitionProduceResult {
            error_code,
            error_message: Some(message.into()),
            base_offset: -1,
            log_start_offset: -1,
        }
    }
}

fn produce_partition(
    broker: &Broker,
    tp: &TopicPartition,
    acks: i16,
    transactional: bool,
    records: Option<Bytes>,
) -> (PartitionProduceResult, Option<AwaitingReplication>) {
    let refuse = |code: ErrorCode, message: String| (PartitionProduceResult::error(code, message), None);
    if !matches!(acks, -1..=1) {
        return refuse(ErrorCode::INVALID_REQUIRED_ACKS, format!("acks must be -1, 0 or 1, got {acks}"));
    }
    if transactional {
        return refuse(ErrorCode::INVALID_REQUEST, "transactional produce is not supported yet".to_string());
    }
    if tp.topic == OFFSETS_TOPIC {
        // Only the group coordinator writes there; a stray record would be replayed as a group's.
        return refuse(ErrorCode::INVALID_TOPIC_EXCEPTION, format!("cannot append to internal topic {OFFSETS_TOPIC}"));
    }
    let partition = match leader_partition(broker, tp, -1) {
        Ok(p) => p,
        Err(code) => return refuse(code, format!("{tp}: this broker cannot take writes for it (error {code})")),
    };
    let Some(records) = records else {
        return refuse(ErrorCode::CORRUPT_MESSAGE, "produce request without records".to_string());
    };
    let mut p = partition.lock();
    match p.append_as_leader(records, acks, now_ms()) {
        Ok((outcome, wait)) => {
            if let AppendOutcome::Duplicate(info) = outcome {
                tracing::debug!(%tp, base_offset = info.base_offset.0, "duplicate batch answered with its original offset");
            }
            let info = outcome.info();
            let result = PartitionProduceResult {
                error_code: ErrorCode::NONE,
                error_message: None,
                base_offset: info.base_offset.0,
                log_start_offset: info.log_start_offset.0,
            };
            drop(p);
            let awaiting = wait.map(|wait| AwaitingReplication { partition: partition.clone(), wait });
            (result, awaiting)
        }
        Err(refusal) => {
            if let AppendRefusal::Log(error) = &refusal {
                broker.note_log_error(error);
            }
            tracing::debug!(%tp, %refusal, "produce rejected");
            refuse(refusal.error_code(), refusal.to_string())
        }
    }
}

fn produce_partition_response(index: i32, result: PartitionProduceResult, version: i16) -> PartitionProduceResponse {
    let mut response = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(result.error_code.0)
        .with_base_offset(result.base_offset)
        .with_log_append_time_ms(-1);
    if version >= 5 {
        response = response.with_log_start_offset(result.log_start_offset);
    }
    if version >= 8 {
        response = response.with_error_message(result.error_message.map(str_bytes));
    }
    response
}

// ---------------------------------------------------------------- Fetch

/// Fetch, for consumers (`replica_id` -1: up to the high watermark) and for followers
/// (`replica_id` = their node id: up to the log end; the fetch offset is the follower's log end
/// and may move the high watermark).
pub async fn fetch(broker: &Broker, request: FetchRequest, version: i16, client_id: Option<&str>) -> FetchResponse {
    if version >= 7 && request.session_id != 0 {
        // Sessionless broker (KIP-227 allows declining sessions): an incremental fetch for a
        // session we never created is answered so the client falls back to a full fetch.
        return FetchResponse::default().with_error_code(ErrorCode::FETCH_SESSION_ID_NOT_FOUND.0);
    }
    let wait_ms = request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms as u64);
    loop {
        // Register for wakeups before reading so an append in between is not missed.
        let appended = broker.data_appended.notified();
        let (response, bytes, any_error) = fetch_once(broker, &request, version, client_id);
        let satisfied = bytes >= request.min_bytes.max(0) as usize || any_error;
        if satisfied || tokio::time::Instant::now() >= deadline {
            return response;
        }
        // `timeout_at` does not exist under madsim 0.2.34; `timeout` does.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(remaining, appended).await.is_err() {
            return fetch_once(broker, &request, version, client_id).0;
        }
    }
}

fn fetch_once(
    broker: &Broker,
    request: &FetchRequest,
    version: i16,
    client_id: Option<&str>,
) -> (FetchResponse, usize, bool) {
    let read_committed = request.isolation_level == 1;
    let replica = (request.replica_id.0 >= 0).then(|| Replica {
        node_id: request.replica_id.0,
        current: current_registration(broker, request.replica_id.0, client_id),
    });
    let mut bytes_left = request.max_bytes.max(0) as usize;
    let mut total_bytes = 0;
    let mut any_error = false;
    let mut hw_moved = false;
    let mut responses = Vec::new();
    for topic in &request.topics {
        let name = topic.topic.0.to_string();
        let mut partitions = Vec::new();
        for partition in &topic.partitions {
            let tp = TopicPartition::new(name.clone(), partition.partition);
            let min_one_batch = total_bytes == 0;
            let (mut data, moved) =
                fetch_partition(broker, &tp, partition, replica, bytes_left, min_one_batch, version);
            hw_moved |= moved;
            if read_committed {
                data = data.with_aborted_transactions(Some(Vec::new()));
            }
            let size = data.records.as_ref().map_or(0, Bytes::len);
            any_error |= data.error_code != ErrorCode::NONE.0;
            total_bytes += size;
            bytes_left = bytes_left.saturating_sub(size);
            partitions.push(data);
        }
        responses.push(FetchableTopicResponse::default().with_topic(topic_name(&name)).with_partitions(partitions));
    }
    if hw_moved {
        broker.hw_changed.notify_waiters();
        broker.data_appended.notify_waiters();
    }
    (FetchResponse::default().with_responses(responses), total_bytes, any_error)
}

/// A follower's fetch: its node id, and whether it comes from the follower's current
/// registration (a fetch still waiting from before a restart must not count as progress).
#[derive(Clone, Copy)]
struct Replica {
    node_id: i32,
    current: bool,
}

/// The client id of a follower's fetcher: `replica-<node id>-epoch-<broker epoch>`. (Fetch v15
/// carries the broker epoch in the request, KIP-903; below v15 the client id does.)
pub fn replica_client_id(node_id: i32, broker_epoch: i64) -> String {
    format!("replica-{node_id}-epoch-{broker_epoch}")
}

/// Whether a follower's fetch comes from the registration the metadata knows for it.
fn current_registration(broker: &Broker, node_id: i32, client_id: Option<&str>) -> bool {
    let epoch = client_id
        .and_then(|c| c.strip_prefix(&format!("replica-{node_id}-epoch-")))
        .and_then(|e| e.parse::<i64>().ok());
    let registered = broker.meta().image.brokers.get(&node_id).map(|b| b.broker_epoch);
    epoch.is_some() && epoch == registered
}

fn fetch_partition(
    broker: &Broker,
    tp: &TopicPartition,
    request: &fetch_request::FetchPartition,
    replica: Option<Replica>,
    bytes_left: usize,
    min_one_batch: bool,
    version: i16,
) -> (PartitionData, bool) {
    let empty =
        PartitionData::default().with_partition_index(tp.partition).with_high_watermark(-1).with_last_stable_offset(-1);
    let current_leader_epoch = if version >= 9 { request.current_leader_epoch } else { -1 };
    let partition = match leader_partition(broker, tp, current_leader_epoch) {
        Ok(p) => p,
        Err(code) => return (empty.with_error_code(code.0), false),
    };
    let mut p = partition.lock();
    let fetch_offset = Offset(request.fetch_offset);
    let mut hw_moved = false;
    let upper_bound = match replica {
        Some(replica) => {
            if replica.current {
                hw_moved = p.record_follower_fetch(replica.node_id, fetch_offset, now_ms());
            }
            p.log().log_end_offset()
        }
        None => {
            if !p.high_watermark_established() || broker.controller_lease_expired(now_ms()) {
                // A new leader whose HW has not caught up with its epoch yet, or one that may
                // have been replaced (its controller lease ran out): what it would report
                // could be below what the other leader showed.
                return (empty.with_error_code(ErrorCode::NOT_LEADER_OR_FOLLOWER.0), false);
            }
            p.high_watermark()
        }
    };
    let high_watermark = p.high_watermark();
    let log_start_offset = p.log().log_start_offset();
    let max_bytes = (request.partition_max_bytes.max(0) as usize).min(bytes_left);
    let result = p.log().read(fetch_offset, max_bytes, upper_bound, min_one_batch);
    let data = empty
        .with_high_watermark(high_watermark.0)
        .with_last_stable_offset(high_watermark.0)
        .with_log_start_offset(log_start_offset.0);
    let data = match result {
        Ok(read) => data.with_records(Some(read.records)),
        Err(error) => {
            broker.note_log_error(&error);
            data.with_error_code(error.error_code().0)
        }
    };
    (data, hw_moved)
}

// ---------------------------------------------------------------- ListOffsets

pub fn list_offsets(broker: &Broker, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let tp = TopicPartition::new(name.clone(), p.partition_index);
                    let response = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    let epoch = if version >= 4 { p.current_leader_epoch } else { -1 };
                    match list_offset(broker, &tp, p.timestamp, epoch, version) {
                        Ok((offset, timestamp, leader_epoch)) => {
                            let response = response.with_offset(offset).with_timestamp(timestamp);
                            if version >= 4 {
                                response.with_leader_epoch(leader_epoch.0)
                            } else {
                                response
                            }
                        }
                        Err(code) => response.with_error_code(code.0).with_offset(-1).with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(topic_name(&name)).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// Kafka's special ListOffsets timestamps.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

fn list_offset(
    broker: &Broker,
    tp: &TopicPartition,
    timestamp: i64,
    current_leader_epoch: i32,
    version: i16,
) -> Result<(i64, i64, LeaderEpoch), ErrorCode> {
    let partition = leader_partition(broker, tp, current_leader_epoch)?;
    let p = partition.lock();
    if !p.high_watermark_established() {
        // Kafka's answer (KIP-207) while a new leader's HW is below its epoch start.
        return Err(ErrorCode::OFFSET_NOT_AVAILABLE);
    }
    if broker.controller_lease_expired(now_ms()) {
        return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER); // it may have been replaced by now
    }
    let high_watermark = p.high_watermark();
    let found = match timestamp {
        // Consumers see up to the high watermark (= LSO without transactions).
        LATEST_TIMESTAMP => Ok(Some((high_watermark, -1))),
        EARLIEST_TIMESTAMP => Ok(Some((p.log().log_start_offset(), -1))),
        MAX_TIMESTAMP if version >= 7 => p.log().offset_of_max_timestamp(),
        t if t < 0 => return Err(ErrorCode::INVALID_REQUEST),
        t => p.log().offset_for_timestamp(t),
    };
    match found {
        Ok(Some((offset, _))) if offset > high_watermark => Ok((-1, -1, p.leader_epoch())),
        Ok(Some((offset, timestamp))) => Ok((offset.0, timestamp, p.leader_epoch())),
        Ok(None) => Ok((-1, -1, p.leader_epoch())),
        Err(error) => {
            broker.note_log_error(&error);
            Err(error.error_code())
        }
    }
}

// ---------------------------------------------------------------- CreateTopics / DeleteTopics

pub async fn create_topics(broker: &Arc<Broker>, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut seen = BTreeMap::new();
    for topic in &request.topics {
        *seen.entry(topic.name.0.to_string()).or_insert(0) += 1;
    }
    let mut results: Vec<(String, Option<Result<crate::controller::CreatedTopic, TopicError>>)> = Vec::new();
    let mut to_create = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        if seen[&name] > 1 {
            let error = TopicError::new(
                ErrorCode::INVALID_REQUEST,
                format!("topic `{name}` appears more than once in the request"),
            );
            results.push((name, Some(Err(error))));
            continue;
        }
        let mut configs = BTreeMap::new();
        let mut bad = None;
        for config in &topic.configs {
            match &config.value {
                Some(value) => {
                    configs.insert(config.name.to_string(), value.to_string());
                }
                None => {
                    bad = Some(TopicError::new(
                        ErrorCode::INVALID_CONFIG,
                        format!("config `{}` has a null value", config.name),
                    ))
                }
            }
        }
        if let Some(error) = bad {
            results.push((name, Some(Err(error))));
            continue;
        }
        let mut assignments: Vec<(i32, Vec<i32>)> =
            topic.assignments.iter().map(|a| (a.partition_index, a.broker_ids.iter().map(|b| b.0).collect())).collect();
        assignments.sort();
        if assignments.iter().enumerate().any(|(i, (index, _))| *index != i as i32) {
            let error = TopicError::new(
                ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                "assignments must list partitions 0, 1, .. once each",
            );
            results.push((name, Some(Err(error))));
            continue;
        }
        to_create.push(NewTopic {
            name: name.clone(),
            partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            assignments: assignments.into_iter().map(|(_, replicas)| replicas).collect(),
            configs,
        });
        results.push((name, None));
    }
    if !to_create.is_empty() {
        let reply = broker
            .controller_call(ControllerRequest::CreateTopics {
                topics: to_create,
                validate_only: request.validate_only,
            })
            .await;
        let mut created = match reply {
            Ok(ControllerReply::CreatedTopics(created)) => created.into_iter(),
            Ok(other) => vec![Err(TopicError::new(
                ErrorCode::UNKNOWN_SERVER_ERROR,
                format!("unexpected controller reply {other:?}"),
            ))]
            .into_iter(),
            Err(e) => vec![Err(e); results.len()].into_iter(),
        };
        let fallback = TopicError::new(ErrorCode::REQUEST_TIMED_OUT, "the controller did not answer");
        for (_, slot) in results.iter_mut().filter(|(_, slot)| slot.is_none()) {
            *slot = Some(created.next().unwrap_or_else(|| Err(fallback.clone())));
        }
    }
    let topics = results
        .into_iter()
        .map(|(name, result)| create_topic_result(&name, result.expect("every topic answered"), version))
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

fn create_topic_result(
    name: &str,
    result: Result<crate::controller::CreatedTopic, TopicError>,
    version: i16,
) -> CreatableTopicResult {
    let response = CreatableTopicResult::default().with_name(topic_name(name));
    match result {
        Ok(created) => {
            let mut response = response;
            if version >= 5 {
                let configs = created
                    .configs
                    .into_iter()
                    .map(|(key, value)| {
                        CreatableTopicConfigs::default()
                            .with_name(str_bytes(key))
                            .with_value(Some(str_bytes(value)))
                            .with_config_source(1)
                    })
                    .collect();
                response = response
                    .with_num_partitions(created.partitions)
                    .with_replication_factor(created.replication_factor)
                    .with_configs(Some(configs));
            }
            if version >= 7 {
                response = response.with_topic_id(uuid::Uuid::from_u128(created.topic_id));
            }
            response
        }
        Err(e) => {
            tracing::info!(topic = name, code = e.code.0, reason = e.message, "CreateTopics refused");
            let mut response = response.with_error_code(e.code.0).with_error_message(Some(str_bytes(e.message)));
            if version >= 5 {
                response = response.with_num_partitions(-1).with_replication_factor(-1);
            }
            response
        }
    }
}

pub async fn delete_topics(broker: &Arc<Broker>, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    // v1-5 name topics in `topic_names`; v6 in `topics`, by name or by id.
    let mut targets: Vec<(Option<String>, uuid::Uuid)> =
        request.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect();
    targets.extend(request.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)));
    let resolved: Vec<Result<String, TopicError>> = targets
        .into_iter()
        .map(|(name, topic_id)| match name {
            Some(name) => Ok(name),
            None => broker
                .meta()
                .image
                .topic_by_id(topic_id.as_u128())
                .map(|t| t.name.clone())
                .ok_or(TopicError::new(ErrorCode::UNKNOWN_TOPIC_ID, "unknown topic id")),
        })
        .collect();
    let resolved: Vec<Result<String, TopicError>> = resolved
        .into_iter()
        .map(|r| match r {
            Ok(name) if name == OFFSETS_TOPIC => Err(TopicError::new(
                ErrorCode::INVALID_TOPIC_EXCEPTION,
                format!("{OFFSETS_TOPIC} is internal: deleting it would lose every group's committed offsets"),
            )),
            other => other,
        })
        .collect();
    let names: Vec<String> = resolved.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let mut deleted = if names.is_empty() {
        Vec::new().into_iter()
    } else {
        match broker.controller_call(ControllerRequest::DeleteTopics { names: names.clone() }).await {
            Ok(ControllerReply::DeletedTopics(results)) => results.into_iter(),
            Ok(other) => {
                vec![
                    Err(TopicError::new(ErrorCode::UNKNOWN_SERVER_ERROR, format!("unexpected reply {other:?}")));
                    names.len()
                ]
                .into_iter()
            }
            Err(e) => vec![Err(e); names.len()].into_iter(),
        }
    };
    let responses = resolved
        .into_iter()
        .map(|target| {
            let result = target.and_then(|name| {
                let outcome =
                    deleted.next().unwrap_or_else(|| Err(TopicError::new(ErrorCode::REQUEST_TIMED_OUT, "no answer")));
                outcome.map(|id| (name, id))
            });
            let mut response = DeletableTopicResult::default();
            match result {
                Ok((name, id)) => {
                    response = response.with_name(Some(topic_name(&name)));
                    if version >= 6 {
                        response = response.with_topic_id(uuid::Uuid::from_u128(id));
                    }
                }
                Err(e) => {
                    response = response.with_error_code(e.code.0);
                    if version >= 5 {
                        response = response.with_error_message(Some(str_bytes(e.message)));
                    }
                }
            }
            response
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

// ---------------------------------------------------------------- OffsetForLeaderEpoch

/// Where a leader epoch ends (KIP-279): librdkafka validates its fetch position with it after
/// metadata changes, and followers truncate with it (KIP-101). Served by the leader only.
pub fn offset_for_leader_epoch(broker: &Broker, request: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.topic.0.to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let response =
                        EpochEndOffset::default().with_partition(p.partition).with_leader_epoch(-1).with_end_offset(-1);
                    let tp = TopicPartition::new(name.clone(), p.partition);
                    let partition = match leader_partition(broker, &tp, p.current_leader_epoch) {
                        Ok(partition) => partition,
                        Err(code) => return response.with_error_code(code.0),
                    };
                    let (epoch, end_offset) = partition.lock().log().end_offset_for_epoch(LeaderEpoch(p.leader_epoch));
                    response.with_leader_epoch(epoch.0).with_end_offset(end_offset.0)
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(topic_name(&name)).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

// ---------------------------------------------------------------- InitProducerId

pub async fn init_producer_id(broker: &Arc<Broker>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    if request.transactional_id.is_some() {
        tracing::warn!("InitProducerId with a transactional id refused: transactions are not implemented yet");
        return InitProducerIdResponse::default()
            .with_error_code(ErrorCode::INVALID_REQUEST.0)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // Kafka gives an idempotent producer a fresh producer id every time (even when it sends
    // its old id and epoch to bump): the new id has no sequence history to conflict with.
    match broker.allocate_producer_id().await {
        Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            let code =
                if e.code == ErrorCode::KAFKA_STORAGE_ERROR { e.code } else { ErrorCode::COORDINATOR_NOT_AVAILABLE };
            tracing::info!(error = %e, "InitProducerId failed");
            InitProducerIdResponse::default()
                .with_error_code(code.0)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_epoch_checks_follow_kip_320() {
        assert_eq!(check_leader_epoch(-1, LeaderEpoch(2)), ErrorCode::NONE);
        assert_eq!(check_leader_epoch(2, LeaderEpoch(2)), ErrorCode::NONE);
        assert_eq!(check_leader_epoch(1, LeaderEpoch(2)), ErrorCode::FENCED_LEADER_EPOCH);
        assert_eq!(check_leader_epoch(3, LeaderEpoch(2)), ErrorCode::UNKNOWN_LEADER_EPOCH);
    }

    #[test]
    fn api_versions_lists_every_supported_api() {
        let response = api_versions(ErrorCode::NONE);
        assert_eq!(response.api_keys.len(), SUPPORTED_APIS.len());
        assert!(response.api_keys.iter().any(|k| k.api_key == ApiKey::InitProducerId as i16));
    }
}
