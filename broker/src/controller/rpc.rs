//! Broker ↔ controller messages on the controller listener: length-prefixed JSON frames, one
//! request and one response per call. Every response carries the metadata records the broker
//! has not seen yet (from the offset it sent), so any call — a heartbeat most often — moves the
//! broker's image forward; brokers never read the controller's state any other way.

use super::core::{ApiError, Controller, CreatedTopic, NewTopic, ReplicaLog};
use super::image::{MetadataRecord, PartitionImage};
use crate::protocol::{read_frame, write_frame};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Records sent in one response at most; a broker far behind catches up over several calls.
const RECORDS_PER_RESPONSE_MAX: usize = 2_000;
/// Frames larger than this close the connection.
const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Connections to the controller listener at once; more are closed as accepted (brokers use
/// one connection per call, so only a flood reaches this).
const CONNECTIONS_MAX: usize = 1_000;
/// A controller connection that sends no whole request for this long is closed (a broker's
/// call sends its request at once).
const REQUEST_WAIT_MS: u64 = 30_000;
/// How often the controller checks broker sessions.
const TICK_INTERVAL_MS: u64 = 100;

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
    AlterPartition {
        node_id: i32,
        broker_epoch: i64,
        topic_id: u128,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
        /// The registration (broker epoch) of each member joining the ISR, as the leader saw
        /// it caught up: a member that restarted since is refused (KIP-903).
        joining: Vec<(i32, i64)>,
    },
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
            controller.handle_register(node_id, incarnation, host, port, now_ms).map(|broker_epoch| {
                ControllerReply::Registered { broker_epoch, cluster_id: controller.cluster_id.clone() }
            })
        }
        ControllerRequest::Heartbeat { node_id, broker_epoch, logs } => controller
            .handle_heartbeat(node_id, broker_epoch, envelope.metadata_offset, &logs, now_ms)
            .map(|fenced| ControllerReply::Heartbeat { fenced }),
        ControllerRequest::AlterPartition {
            node_id,
            broker_epoch,
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            isr,
            joining,
        } => controller
            .handle_alter_partition(
                node_id,
                broker_epoch,
                topic_id,
                partition,
                leader_epoch,
                partition_epoch,
                isr,
                &joining,
            )
            .map(ControllerReply::Partition),
        ControllerRequest::CreateTopics { topics, validate_only } => {
            let mut records_budget = super::core::MAX_RECORDS_PER_USER_OP;
            let results = topics
                .into_iter()
                .map(|topic| {
                    let mut topic_id = crate::server::state::random_u128();
                    while topic_id == 0
                        || controller.image().topic_by_id(topic_id).is_some()
                        || controller.image().removed_topic_ids.contains(&topic_id)
                    {
                        topic_id = crate::server::state::random_u128();
                    }
                    controller.handle_create_topic(topic, validate_only, topic_id, &mut records_budget)
                })
                .collect();
            Ok(ControllerReply::CreatedTopics(results))
        }
        ControllerRequest::DeleteTopics { names } => Ok(ControllerReply::DeletedTopics(
            names.iter().map(|n| controller.handle_delete_topic(n).map(|t| t.topic_id)).collect(),
        )),
        ControllerRequest::AllocateProducerIds { node_id, broker_epoch } => controller
            .handle_allocate_producer_ids(node_id, broker_epoch)
            .map(|(first, size)| ControllerReply::ProducerIds { first, size }),
    };
    let records_from = envelope.metadata_offset.clamp(0, controller.next_offset());
    let records = controller.records_from(records_from, RECORDS_PER_RESPONSE_MAX).to_vec();
    ResponseEnvelope { records_from, records, end_offset: controller.next_offset(), result }
}

async fn read_json<T: for<'de> Deserialize<'de>>(stream: &mut TcpStream) -> std::io::Result<Option<T>> {
    match read_frame(stream, FRAME_BYTES_MAX).await {
        Ok(frame) => serde_json::from_slice(&frame).map(Some).map_err(std::io::Error::other),
        Err(crate::protocol::FrameError::Closed) => Ok(None),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

async fn write_json<T: Serialize>(stream: &mut TcpStream, value: &T) -> std::io::Result<()> {
    let payload = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    write_frame(stream, &frame).await
}

/// Serves the controller listener until `shutdown`, and fences silent brokers.
pub async fn serve(listener: TcpListener, controller: Arc<Mutex<Controller>>, mut shutdown: watch::Receiver<bool>) {
    let ticker = {
        let controller = controller.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(TICK_INTERVAL_MS)) => {}
                }
                let result = controller.lock().expect("controller lock poisoned").tick(crate::server::state::now_ms());
                if let Err(e) = result {
                    tracing::error!(error = %e, "controller tick failed");
                }
            }
        })
    };
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if open.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= CONNECTIONS_MAX {
            open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(%peer, "controller listener: {CONNECTIONS_MAX} connections open, refusing another");
            continue;
        }
        let controller = controller.clone();
        let mut shutdown = shutdown.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let request_wait = Duration::from_millis(REQUEST_WAIT_MS);
            loop {
                let request = tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    request = tokio::time::timeout(request_wait, read_json::<RequestEnvelope>(&mut stream)) => request,
                };
                let envelope = match request {
                    Ok(Ok(Some(envelope))) => envelope,
                    Ok(Ok(None)) | Err(_) => break,
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "closing controller connection");
                        break;
                    }
                };
                let response = {
                    let mut controller = controller.lock().expect("controller lock poisoned");
                    handle(&mut controller, envelope, crate::server::state::now_ms())
                };
                match tokio::time::timeout(request_wait, write_json(&mut stream, &response)).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
    let _ = ticker.await;
}

/// Why a controller call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("controller unreachable: {0}")]
    Unreachable(String),
    #[error("controller call timed out after {0:?}")]
    Timeout(Duration),
}

/// One call: connect, send, read the answer, all within `timeout` (the simulator never times a
/// connection out by itself).
pub async fn call(address: &str, envelope: &RequestEnvelope, timeout: Duration) -> Result<ResponseEnvelope, CallError> {
    let exchange = async {
        let mut stream =
            TcpStream::connect(address).await.map_err(|e| CallError::Unreachable(format!("{address}: {e}")))?;
        let _ = stream.set_nodelay(true);
        write_json(&mut stream, envelope).await.map_err(|e| CallError::Unreachable(e.to_string()))?;
        match read_json::<ResponseEnvelope>(&mut stream).await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(CallError::Unreachable("connection closed".to_string())),
            Err(e) => Err(CallError::Unreachable(e.to_string())),
        }
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| CallError::Timeout(timeout))?
}
