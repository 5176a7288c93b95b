//! Broker ↔ controller messages on the controller listener: length-prefixed JSON frames, one
//! request and one response per call. Every response carries the metadata records the broker
//! has not seen yet (from the offset it sent), so any call — a heartbeat most often — moves the
//! broker's image forward; brokers never read the controller's state any other way.
//!
//! This module holds the messages and [`handle`] (synchronous); the listener and the call are in
//! `server::controller_rpc`.

use super::core::{AlterPartition, ApiError, Controller, CreatedTopic, NewTopic, ReplicaLog};
use super::image::{MetadataRecord, PartitionImage};
use serde::{Deserialize, Serialize};

/// Records sent in one response at most; a broker far behind catches up over several calls.
const RECORDS_PER_RESPONSE_MAX: usize = 2_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    Register {
        node_id: i32,
        incarnation: u128,
        host: String,
        port: i32,
    },
    /// `logs`: where each of the broker's replicas ends (for recovery elections).
    Heartbeat {
        node_id: i32,
        broker_epoch: i64,
        logs: Vec<ReplicaLog>,
    },
    AlterPartition(AlterPartition),
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    AllocateProducerIds {
        node_id: i32,
        broker_epoch: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    Registered { broker_epoch: i64, cluster_id: String },
    Heartbeat { fenced: bool },
    Partition(PartitionImage),
    CreatedTopics(Vec<Result<CreatedTopic, ApiError>>),
    DeletedTopics(Vec<Result<u128, ApiError>>),
    ProducerIds { first: i64, size: i64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// The broker has replayed every record before this offset.
    pub metadata_offset: i64,
    pub request: ControllerRequest,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// Offset of `records[0]`.
    pub records_from: i64,
    pub records: Vec<MetadataRecord>,
    /// The controller's log end: more records wait when `records_from + records.len()` is below.
    pub end_offset: i64,
    pub result: Result<ControllerReply, ApiError>,
}

/// Applies one request to the controller.
pub fn handle(controller: &mut Controller, envelope: RequestEnvelope, now_ms: i64) -> ResponseEnvelope {
    let result = match envelope.request {
        ControllerRequest::Register { node_id, incarnation, host, port } => {
            controller.run(|c| c.decide_register(node_id, incarnation, host, port, now_ms)).map(|broker_epoch| {
                ControllerReply::Registered { broker_epoch, cluster_id: controller.cluster_id.clone() }
            })
        }
        ControllerRequest::Heartbeat { node_id, broker_epoch, logs } => controller
            .run(|c| c.decide_heartbeat(node_id, broker_epoch, envelope.metadata_offset, &logs, now_ms))
            .map(|fenced| ControllerReply::Heartbeat { fenced }),
        ControllerRequest::AlterPartition(request) => {
            controller.run(|c| c.decide_alter_partition(request)).map(ControllerReply::Partition)
        }
        ControllerRequest::CreateTopics { topics, validate_only } => {
            let mut records_budget = super::core::MAX_RECORDS_PER_USER_OP;
            let results = topics
                .into_iter()
                .map(|topic| {
                    let mut topic_id = crate::env::random_u128();
                    while topic_id == 0
                        || controller.image().topic_by_id(topic_id).is_some()
                        || controller.image().removed_topic_ids.contains(&topic_id)
                    {
                        topic_id = crate::env::random_u128();
                    }
                    controller.run(|c| c.decide_create_topic(topic, validate_only, topic_id, &mut records_budget))
                })
                .collect();
            Ok(ControllerReply::CreatedTopics(results))
        }
        ControllerRequest::DeleteTopics { names } => Ok(ControllerReply::DeletedTopics(
            names.iter().map(|n| controller.run(|c| c.decide_delete_topic(n)).map(|t| t.topic_id)).collect(),
        )),
        ControllerRequest::AllocateProducerIds { node_id, broker_epoch } => controller
            .run(|c| c.decide_allocate_producer_ids(node_id, broker_epoch))
            .map(|(first, size)| ControllerReply::ProducerIds { first, size }),
    };
    let records_from = envelope.metadata_offset.clamp(0, controller.next_offset());
    let records = controller.records_from(records_from, RECORDS_PER_RESPONSE_MAX).to_vec();
    ResponseEnvelope { records_from, records, end_offset: controller.next_offset(), result }
}
