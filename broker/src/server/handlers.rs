//! One handler per API: decoded request in, response out. Handlers only set fields that exist
//! at the request's version (kafka-protocol refuses to encode anything else).

use super::state::{now_ms, validate_topic_name, Broker, SharedLog, TopicError};
use crate::log::AppendOutcome;
use crate::protocol::SUPPORTED_APIS;
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
use std::time::Duration;

/// Kafka error codes used by the handlers.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_REQUEST: i16 = 42;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 79;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
}

/// Every partition is led by this broker at this epoch until replication arrives.
const LEADER_EPOCH: LeaderEpoch = LeaderEpoch(0);
/// Fetches never wait longer than this, whatever the client asks.
const FETCH_WAIT_MS_MAX: i32 = 30_000;

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

pub fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys)
}

/// Checks a client's `current_leader_epoch` (-1 = not given) against the leader's.
fn check_leader_epoch(current_leader_epoch: i32) -> i16 {
    match current_leader_epoch {
        e if e < 0 || e == LEADER_EPOCH.0 => code::NONE,
        e if e < LEADER_EPOCH.0 => code::FENCED_LEADER_EPOCH,
        _ => code::UNKNOWN_LEADER_EPOCH,
    }
}

// ---------------------------------------------------------------- Metadata

pub fn metadata(broker: &Broker, request: MetadataRequest, version: i16) -> MetadataResponse {
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested: Option<Vec<MetadataRequestTopic>> = match request.topics {
        Some(topics) if version == 0 && topics.is_empty() => None,
        other => other,
    };
    let auto_create = broker.config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match requested {
        None => {
            let names: Vec<String> = broker.topics().by_name.keys().cloned().collect();
            topics.extend(names.iter().map(|name| metadata_topic(broker, name, version)));
        }
        Some(requested) => {
            for wanted in requested {
                topics.push(metadata_for_request(broker, wanted, auto_create, version));
            }
        }
    }
    let (host, port) = broker.advertised.clone();
    let mut response = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(broker.config.node_id))
            .with_host(str_bytes(host))
            .with_port(port)])
        .with_topics(topics);
    if version >= 1 {
        response = response.with_controller_id(BrokerId(broker.config.node_id));
    }
    if version >= 2 {
        response = response.with_cluster_id(Some(str_bytes(broker.cluster_id.clone())));
    }
    response
}

fn metadata_for_request(
    broker: &Broker,
    wanted: MetadataRequestTopic,
    auto_create: bool,
    version: i16,
) -> MetadataResponseTopic {
    let name = match (&wanted.name, wanted.topic_id.is_nil()) {
        (Some(name), _) => name.0.to_string(),
        (None, false) => {
            let id = wanted.topic_id.as_u128();
            match broker.topics().image().topic_by_id(id) {
                Some(topic) => topic.name.clone(),
                None => {
                    return MetadataResponseTopic::default()
                        .with_error_code(code::UNKNOWN_TOPIC_ID)
                        .with_topic_id(wanted.topic_id)
                }
            }
        }
        (None, true) => return MetadataResponseTopic::default().with_error_code(code::INVALID_REQUEST),
    };
    if let Err(e) = validate_topic_name(&name) {
        return MetadataResponseTopic::default().with_name(Some(topic_name(&name))).with_error_code(e.code);
    }
    let exists = broker.topics().get(&name).is_some();
    if !exists && auto_create {
        match broker.create_topic(&name, broker.config.num_partitions, BTreeMap::new(), false) {
            Ok(_) | Err(TopicError { code: 36, .. }) => {}
            Err(e) => {
                tracing::warn!(topic = name, error = e.message, "auto-creating topic failed");
                return MetadataResponseTopic::default().with_name(Some(topic_name(&name))).with_error_code(e.code);
            }
        }
    }
    metadata_topic(broker, &name, version)
}

fn metadata_topic(broker: &Broker, name: &str, version: i16) -> MetadataResponseTopic {
    let topics = broker.topics();
    let Some(topic) = topics.get(name) else {
        return MetadataResponseTopic::default()
            .with_name(Some(topic_name(name)))
            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
    };
    let node = BrokerId(broker.config.node_id);
    let offline = broker.offline_reason().is_some();
    let partitions = (0..topic.image.partitions)
        .map(|index| {
            let mut partition = MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(if offline { vec![] } else { vec![node] });
            if offline {
                partition = partition.with_error_code(code::KAFKA_STORAGE_ERROR).with_leader_id(BrokerId(-1));
            } else {
                partition = partition.with_leader_id(node);
            }
            if version >= 5 && offline {
                partition = partition.with_offline_replicas(vec![node]);
            }
            if version >= 7 {
                partition = partition.with_leader_epoch(LEADER_EPOCH.0);
            }
            partition
        })
        .collect();
    let mut response = MetadataResponseTopic::default().with_name(Some(topic_name(name))).with_partitions(partitions);
    if version >= 10 {
        response = response.with_topic_id(uuid::Uuid::from_u128(topic.image.topic_id));
    }
    response
}

// ---------------------------------------------------------------- Produce

/// Handles Produce. Returns `None` for acks=0 (Kafka sends no response).
pub fn produce(broker: &Broker, request: ProduceRequest, version: i16) -> Option<ProduceResponse> {
    let acks = request.acks;
    let mut responses = Vec::new();
    let mut appended = false;
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let partition_responses = topic
            .partition_data
            .into_iter()
            .map(|data| {
                let tp = TopicPartition::new(name.clone(), data.index);
                let result = produce_partition(broker, &tp, acks, request.transactional_id.is_some(), data.records);
                appended |= result.error_code == code::NONE;
                produce_partition_response(data.index, result, version)
            })
            .collect();
        responses.push(
            TopicProduceResponse::default().with_name(topic_name(&name)).with_partition_responses(partition_responses),
        );
    }
    if appended {
        broker.data_appended.notify_waiters();
    }
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

struct PartitionProduceResult {
    error_code: i16,
    error_message: Option<String>,
    base_offset: i64,
    log_start_offset: i64,
}

impl PartitionProduceResult {
    fn error(error_code: i16, message: impl Into<String>) -> Self {
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
) -> PartitionProduceResult {
    if !matches!(acks, -1..=1) {
        return PartitionProduceResult::error(
            code::INVALID_REQUIRED_ACKS,
            format!("acks must be -1, 0 or 1, got {acks}"),
        );
    }
    if transactional {
        return PartitionProduceResult::error(code::INVALID_REQUEST, "transactional produce is not supported yet");
    }
    if let Some(reason) = broker.offline_reason() {
        return PartitionProduceResult::error(code::KAFKA_STORAGE_ERROR, format!("log directory is offline: {reason}"));
    }
    let (log, min_insync_replicas) = {
        let topics = broker.topics();
        let min_isr = topics.get(&tp.topic).map(|t| t.min_insync_replicas).unwrap_or(1);
        (topics.partition(tp), min_isr)
    };
    let Some(log) = log else {
        return PartitionProduceResult::error(code::UNKNOWN_TOPIC_OR_PARTITION, format!("{tp} does not exist"));
    };
    // One broker: the ISR is this broker alone.
    if acks == -1 && min_insync_replicas > 1 {
        return PartitionProduceResult::error(
            code::NOT_ENOUGH_REPLICAS,
            format!("ISR has 1 replica, min.insync.replicas is {min_insync_replicas}"),
        );
    }
    let Some(records) = records else {
        return PartitionProduceResult::error(code::CORRUPT_MESSAGE, "produce request without records");
    };
    let outcome = log.lock().expect("log lock poisoned").append(records, LEADER_EPOCH, now_ms());
    match outcome {
        Ok(outcome) => {
            if let AppendOutcome::Duplicate(info) = outcome {
                tracing::debug!(%tp, base_offset = info.base_offset.0, "duplicate batch answered with its original offset");
            }
            let info = outcome.info();
            PartitionProduceResult {
                error_code: code::NONE,
                error_message: None,
                base_offset: info.base_offset.0,
                log_start_offset: info.log_start_offset.0,
            }
        }
        Err(error) => {
            broker.note_log_error(&error);
            tracing::debug!(%tp, %error, "produce rejected");
            PartitionProduceResult::error(error.error_code(), error.to_string())
        }
    }
}

fn produce_partition_response(index: i32, result: PartitionProduceResult, version: i16) -> PartitionProduceResponse {
    let mut response = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(result.error_code)
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

pub async fn fetch(broker: &Broker, request: FetchRequest, version: i16) -> FetchResponse {
    if version >= 7 && request.session_id != 0 {
        // Sessionless broker (KIP-227 allows declining sessions): an incremental fetch for a
        // session we never created is answered so the client falls back to a full fetch.
        return FetchResponse::default().with_error_code(code::FETCH_SESSION_ID_NOT_FOUND);
    }
    if request.replica_id.0 >= 0 {
        tracing::warn!(replica_id = request.replica_id.0, "replica fetch refused: this broker has no followers");
        return FetchResponse::default().with_error_code(code::INVALID_REQUEST);
    }
    let wait_ms = request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms as u64);
    loop {
        // Register for wakeups before reading so an append in between is not missed.
        let appended = broker.data_appended.notified();
        let (response, bytes, any_error) = fetch_once(broker, &request, version);
        let satisfied = bytes >= request.min_bytes.max(0) as usize || any_error;
        if satisfied || tokio::time::Instant::now() >= deadline {
            return response;
        }
        // `timeout_at` does not exist under madsim 0.2.34; `timeout` does.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(remaining, appended).await.is_err() {
            return fetch_once(broker, &request, version).0;
        }
    }
}

fn fetch_once(broker: &Broker, request: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    let read_committed = request.isolation_level == 1;
    let mut bytes_left = request.max_bytes.max(0) as usize;
    let mut total_bytes = 0;
    let mut any_error = false;
    let mut responses = Vec::new();
    for topic in &request.topics {
        let name = topic.topic.0.to_string();
        let mut partitions = Vec::new();
        for partition in &topic.partitions {
            let tp = TopicPartition::new(name.clone(), partition.partition);
            let min_one_batch = total_bytes == 0;
            let mut data = fetch_partition(broker, &tp, partition, bytes_left, min_one_batch, version);
            if read_committed {
                data = data.with_aborted_transactions(Some(Vec::new()));
            }
            let size = data.records.as_ref().map_or(0, Bytes::len);
            any_error |= data.error_code != code::NONE;
            total_bytes += size;
            bytes_left = bytes_left.saturating_sub(size);
            partitions.push(data);
        }
        responses.push(FetchableTopicResponse::default().with_topic(topic_name(&name)).with_partitions(partitions));
    }
    (FetchResponse::default().with_responses(responses), total_bytes, any_error)
}

fn fetch_partition(
    broker: &Broker,
    tp: &TopicPartition,
    request: &fetch_request::FetchPartition,
    bytes_left: usize,
    min_one_batch: bool,
    version: i16,
) -> PartitionData {
    let empty =
        PartitionData::default().with_partition_index(tp.partition).with_high_watermark(-1).with_last_stable_offset(-1);
    let error = |code: i16| empty.clone().with_error_code(code);
    if let Some(_reason) = broker.offline_reason() {
        return error(code::KAFKA_STORAGE_ERROR);
    }
    let Some(log) = broker.partition(tp) else { return error(code::UNKNOWN_TOPIC_OR_PARTITION) };
    if version >= 9 {
        let epoch_error = check_leader_epoch(request.current_leader_epoch);
        if epoch_error != code::NONE {
            return error(epoch_error);
        }
    }
    let log = log.lock().expect("log lock poisoned");
    // One replica: HW = LSO = LEO.
    let high_watermark = log.log_end_offset();
    let log_start_offset = log.log_start_offset();
    let max_bytes = (request.partition_max_bytes.max(0) as usize).min(bytes_left);
    let result = log.read(Offset(request.fetch_offset), max_bytes, high_watermark, min_one_batch);
    let data = empty
        .with_high_watermark(high_watermark.0)
        .with_last_stable_offset(high_watermark.0)
        .with_log_start_offset(log_start_offset.0);
    match result {
        Ok(read) => data.with_records(Some(read.records)),
        Err(error) => {
            broker.note_log_error(&error);
            data.with_error_code(error.error_code())
        }
    }
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
                    match list_offset(broker, &tp, p.timestamp, p.current_leader_epoch, version) {
                        Ok((offset, timestamp)) => {
                            let response = response.with_offset(offset).with_timestamp(timestamp);
                            if version >= 4 {
                                response.with_leader_epoch(LEADER_EPOCH.0)
                            } else {
                                response
                            }
                        }
                        Err(code) => response.with_error_code(code).with_offset(-1).with_timestamp(-1),
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
) -> Result<(i64, i64), i16> {
    if broker.offline_reason().is_some() {
        return Err(code::KAFKA_STORAGE_ERROR);
    }
    let log: SharedLog = broker.partition(tp).ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
    if version >= 4 {
        let epoch_error = check_leader_epoch(current_leader_epoch);
        if epoch_error != code::NONE {
            return Err(epoch_error);
        }
    }
    let log = log.lock().expect("log lock poisoned");
    let found = match timestamp {
        LATEST_TIMESTAMP => Ok(Some((log.log_end_offset(), -1))),
        EARLIEST_TIMESTAMP => Ok(Some((log.log_start_offset(), -1))),
        MAX_TIMESTAMP if version >= 7 => log.offset_of_max_timestamp(),
        t if t < 0 => return Err(code::INVALID_REQUEST),
        t => log.offset_for_timestamp(t),
    };
    match found {
        Ok(Some((offset, timestamp))) => Ok((offset.0, timestamp)),
        Ok(None) => Ok((-1, -1)),
        Err(error) => {
            broker.note_log_error(&error);
            Err(error.error_code())
        }
    }
}

// ---------------------------------------------------------------- CreateTopics / DeleteTopics

pub fn create_topics(broker: &Broker, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut seen = BTreeMap::new();
    for topic in &request.topics {
        *seen.entry(topic.name.0.to_string()).or_insert(0) += 1;
    }
    let results = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let result = if seen[&name] > 1 {
                Err(TopicError::new(
                    code::INVALID_REQUEST,
                    format!("topic `{name}` appears more than once in the request"),
                ))
            } else {
                create_one_topic(broker, &topic, request.validate_only)
            };
            create_topic_result(broker, &name, result, version)
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}

fn create_one_topic(
    broker: &Broker,
    topic: &create_topics_request::CreatableTopic,
    validate_only: bool,
) -> Result<(i32, BTreeMap<String, String>, u128), TopicError> {
    let node = broker.config.node_id;
    let mut partitions = if topic.num_partitions == -1 { broker.config.num_partitions } else { topic.num_partitions };
    if !topic.assignments.is_empty() {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err(TopicError::new(
                code::INVALID_REQUEST,
                "give either assignments or num_partitions/replication_factor, not both",
            ));
        }
        for (expected, assignment) in topic.assignments.iter().enumerate() {
            let valid = assignment.partition_index == expected as i32
                && assignment.broker_ids.len() == 1
                && assignment.broker_ids[0].0 == node;
            if !valid {
                return Err(TopicError::new(
                    code::INVALID_REPLICA_ASSIGNMENT,
                    format!("assignments must list partitions 0.. in order, each on broker {node} alone"),
                ));
            }
        }
        partitions = topic.assignments.len() as i32;
    }
    if partitions <= 0 {
        return Err(TopicError::new(
            code::INVALID_PARTITIONS,
            format!("number of partitions must be positive, got {partitions}"),
        ));
    }
    let factor = if topic.replication_factor == -1 {
        broker.config.default_replication_factor
    } else {
        topic.replication_factor
    };
    if topic.assignments.is_empty() && factor != 1 {
        return Err(TopicError::new(
            code::INVALID_REPLICATION_FACTOR,
            format!("replication factor {factor} is larger than the 1 available broker"),
        ));
    }
    let mut configs = BTreeMap::new();
    for config in &topic.configs {
        let Some(value) = &config.value else {
            return Err(TopicError::new(40, format!("config `{}` has a null value", config.name)));
        };
        configs.insert(config.name.to_string(), value.to_string());
    }
    let image = broker.create_topic(&topic.name.0, partitions, configs.clone(), validate_only)?;
    Ok((partitions, configs, image.topic_id))
}

fn create_topic_result(
    broker: &Broker,
    name: &str,
    result: Result<(i32, BTreeMap<String, String>, u128), TopicError>,
    version: i16,
) -> CreatableTopicResult {
    let response = CreatableTopicResult::default().with_name(topic_name(name));
    match result {
        Ok((partitions, configs, topic_id)) => {
            let mut response = response;
            if version >= 5 {
                let configs = configs
                    .into_iter()
                    .map(|(key, value)| {
                        CreatableTopicConfigs::default()
                            .with_name(str_bytes(key))
                            .with_value(Some(str_bytes(value)))
                            .with_config_source(1)
                    })
                    .collect();
                response =
                    response.with_num_partitions(partitions).with_replication_factor(1).with_configs(Some(configs));
            }
            if version >= 7 {
                response = response.with_topic_id(uuid::Uuid::from_u128(topic_id));
            }
            let _ = broker;
            response
        }
        Err(e) => {
            tracing::info!(topic = name, code = e.code, reason = e.message, "CreateTopics refused");
            let mut response = response.with_error_code(e.code).with_error_message(Some(str_bytes(e.message)));
            if version >= 5 {
                response = response.with_num_partitions(-1).with_replication_factor(-1);
            }
            response
        }
    }
}

pub fn delete_topics(broker: &Broker, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    // v1-5 name topics in `topic_names`; v6 in `topics`, by name or by id.
    let mut targets: Vec<(Option<String>, uuid::Uuid)> =
        request.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect();
    targets.extend(request.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)));
    let responses = targets
        .into_iter()
        .map(|(name, topic_id)| {
            let resolved = match name {
                Some(name) => Ok(name),
                None => broker
                    .topics()
                    .image()
                    .topic_by_id(topic_id.as_u128())
                    .map(|t| t.name.clone())
                    .ok_or(TopicError::new(code::UNKNOWN_TOPIC_ID, "unknown topic id")),
            };
            let result = resolved.and_then(|name| broker.delete_topic(&name).map(|image| (name, image.topic_id)));
            let mut response = DeletableTopicResult::default();
            match result {
                Ok((name, id)) => {
                    response = response.with_name(Some(topic_name(&name)));
                    if version >= 6 {
                        response = response.with_topic_id(uuid::Uuid::from_u128(id));
                    }
                }
                Err(e) => {
                    response = response.with_error_code(e.code);
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
/// metadata changes, and followers will truncate with it.
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
                    if broker.offline_reason().is_some() {
                        return response.with_error_code(code::KAFKA_STORAGE_ERROR);
                    }
                    let Some(log) = broker.partition(&tp) else {
                        return response.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    let epoch_error = check_leader_epoch(p.current_leader_epoch);
                    if epoch_error != code::NONE {
                        return response.with_error_code(epoch_error);
                    }
                    let (epoch, end_offset) =
                        log.lock().expect("log lock poisoned").end_offset_for_epoch(LeaderEpoch(p.leader_epoch));
                    response.with_leader_epoch(epoch.0).with_end_offset(end_offset.0)
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(topic_name(&name)).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

// ---------------------------------------------------------------- InitProducerId

pub fn init_producer_id(broker: &Broker, request: InitProducerIdRequest) -> InitProducerIdResponse {
    if request.transactional_id.is_some() {
        tracing::warn!("InitProducerId with a transactional id refused: transactions are not implemented yet");
        return InitProducerIdResponse::default()
            .with_error_code(code::INVALID_REQUEST)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // Kafka gives an idempotent producer a fresh producer id every time (even when it sends
    // its old id and epoch to bump): the new id has no sequence history to conflict with.
    match broker.allocate_producer_id() {
        Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => InitProducerIdResponse::default()
            .with_error_code(e.code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_epoch_checks_follow_kip_320() {
        assert_eq!(check_leader_epoch(-1), code::NONE);
        assert_eq!(check_leader_epoch(0), code::NONE);
        assert_eq!(check_leader_epoch(3), code::UNKNOWN_LEADER_EPOCH);
    }

    #[test]
    fn api_versions_lists_every_supported_api() {
        let response = api_versions(0);
        assert_eq!(response.api_keys.len(), SUPPORTED_APIS.len());
        assert!(response.api_keys.iter().any(|k| k.api_key == ApiKey::InitProducerId as i16));
    }
}
