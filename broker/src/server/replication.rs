//! The broker's background work for replication:
//! - [`controller_link`]: register with the controller, then heartbeat; every answer carries the
//!   metadata records this broker has not replayed yet.
//! - [`isr_loop`]: as leader, propose ISR shrinks (followers not caught up for
//!   `replica.lag.time.max.ms`) and expansions (followers caught up to the HW) to the controller.
//! - [`spawn_fetcher`]: as follower at a leader epoch, truncate to where the log agrees with the
//!   leader (OffsetForLeaderEpoch, KIP-101/279 — never to the follower's own HW), then fetch
//!   and append until the leader epoch changes.
//!
//! Every network call has its own timeout; all loops stop on shutdown or when the node dies.

use super::signal::Signal;
use super::state::{Broker, SharedPartition};
use crate::controller::rpc::{ControllerReply, ControllerRequest};
use crate::controller::AlterPartition;
use crate::controller::NO_LEADER;
use crate::env::now_ms;
use crate::protocol::client::Connection;
use crate::replication::follower::{self, EpochEnd, FollowerLog};
use crate::replication::IsrProposal;
use crate::types::ErrorCode;
use crate::types::{LeaderEpoch, Offset, TopicPartition};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, OffsetForLeaderEpochRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Pause after a failed call before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How often leaders look at their ISRs.
const ISR_CHECK_INTERVAL: Duration = Duration::from_millis(100);
const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;

/// Sleeps `duration` unless shutdown comes first. Returns false on shutdown.
async fn pause(shutdown: &Signal<()>, duration: Duration) -> bool {
    if shutdown.get().is_some() {
        return false;
    }
    tokio::select! {
        biased;
        _ = shutdown.wait() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

// ------------------------------------------------------------ controller link

/// Registers, then heartbeats every `broker.heartbeat.interval.ms`. A broker whose log
/// directory went offline stops heartbeating, so the controller fences it and moves its
/// leaderships (Kafka halts such a broker).
pub async fn controller_link(broker: Arc<Broker>, shutdown: Signal<()>) {
    let interval = Duration::from_millis(broker.config.heartbeat_interval_ms as u64);
    loop {
        let mut wait = interval;
        if broker.offline_reason().is_none() {
            let registration = broker.meta().broker_epoch;
            match registration {
                None => {
                    let (host, port) = broker.advertised.clone();
                    let request = ControllerRequest::Register {
                        node_id: broker.node_id,
                        incarnation: broker.incarnation,
                        host,
                        port,
                    };
                    match broker.controller_call(request).await {
                        Ok(ControllerReply::Registered { broker_epoch, cluster_id }) => {
                            let mut meta = broker.meta();
                            meta.broker_epoch = Some(broker_epoch);
                            meta.cluster_id = cluster_id;
                            tracing::info!(broker_epoch, "registered with the controller");
                            wait = Duration::ZERO; // heartbeat at once to be unfenced
                        }
                        Ok(other) => tracing::warn!(?other, "unexpected controller reply"),
                        Err(e) => {
                            tracing::debug!(error = %e, "registration failed");
                            wait = RETRY_BACKOFF.max(interval / 4);
                        }
                    }
                }
                Some(broker_epoch) => {
                    let logs = broker.replica_logs();
                    let request = ControllerRequest::Heartbeat { node_id: broker.node_id, broker_epoch, logs };
                    let sent_at = now_ms();
                    match broker.controller_call(request).await {
                        Ok(ControllerReply::Heartbeat { fenced }) => {
                            if fenced {
                                wait = interval.min(Duration::from_millis(50));
                            } else {
                                broker.renew_controller_lease(sent_at);
                            }
                        }
                        Ok(other) => tracing::warn!(?other, "unexpected controller reply"),
                        Err(e) if e.code == ErrorCode::STALE_BROKER_EPOCH => {
                            tracing::warn!(error = %e, "the controller no longer knows this registration: registering again");
                            broker.meta().broker_epoch = None;
                            wait = Duration::ZERO;
                        }
                        Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
                    }
                }
            }
        }
        if !pause(&shutdown, wait).await {
            return;
        }
    }
}

// ------------------------------------------------------------ ISR

/// Leaders propose ISR changes; one proposal per partition at a time.
pub async fn isr_loop(broker: Arc<Broker>, shutdown: Signal<()>) {
    loop {
        if !pause(&shutdown, ISR_CHECK_INTERVAL).await {
            return;
        }
        if broker.offline_reason().is_some() {
            continue;
        }
        let Some(broker_epoch) = broker.meta().broker_epoch else { continue };
        let partitions: Vec<SharedPartition> = broker.meta().partitions.values().cloned().collect();
        let now = now_ms();
        for shared in partitions {
            let Some(proposal) = shared.lock().propose_isr(now, broker.config.replica_lag_time_max_ms) else {
                continue;
            };
            let IsrProposal { image, isr, joining } = proposal;
            tracing::info!(topic_id = image.topic_id, partition = image.partition, from = ?image.isr, to = ?isr, "proposing an ISR change");
            let request = ControllerRequest::AlterPartition(AlterPartition {
                node_id: broker.node_id,
                broker_epoch,
                topic_id: image.topic_id,
                partition: image.partition,
                leader_epoch: image.leader_epoch,
                partition_epoch: image.partition_epoch,
                isr,
                joining,
            });
            let result = broker.controller_call(request).await;
            if let Err(e) = &result {
                tracing::info!(error = %e, "ISR change refused");
            }
            // Answered either way: the committed image (applied with the answer) is the truth.
            let hw_moved = shared.lock().isr_answered();
            if hw_moved {
                broker.hw_changed.notify_waiters();
            }
        }
    }
}

// ------------------------------------------------------------ follower fetcher

/// Starts following `tp` at `leader_epoch`; the task ends when the partition's leader epoch
/// moves on (a newer task takes over) or this broker leads it.
pub fn spawn_fetcher(broker: Arc<Broker>, tp: TopicPartition, leader_epoch: i32) {
    tokio::spawn(async move { run_fetcher(broker, tp, leader_epoch).await });
}

/// The fetcher's view of whether it is still the one to run.
fn still_following(broker: &Broker, tp: &TopicPartition, leader_epoch: i32) -> Option<(SharedPartition, i32)> {
    let shared = broker.partition(tp)?;
    let (current, leader) = {
        let p = shared.lock();
        (p.follows_at(leader_epoch), p.image().leader)
    };
    (current && broker.offline_reason().is_none()).then_some((shared, leader))
}

async fn run_fetcher(broker: Arc<Broker>, tp: TopicPartition, leader_epoch: i32) {
    let mut connection: Option<Connection<TcpStream>> = None;
    let mut connection_epoch: Option<i64> = None;
    let mut truncated = crate::planted::active(crate::planted::Bug::SkipTruncation);
    let request_timeout =
        Duration::from_millis(broker.config.replica_fetch_wait_max_ms as u64) + Duration::from_secs(5);
    loop {
        let Some((shared, leader)) = still_following(&broker, &tp, leader_epoch) else { return };
        if leader == NO_LEADER {
            tokio::time::sleep(RETRY_BACKOFF).await;
            continue;
        }
        // A new registration (the controller forgot the old one) needs a new client id.
        if connection_epoch != broker.meta().broker_epoch {
            connection = None;
        }
        if connection.is_none() {
            let address = broker.meta().image.brokers.get(&leader).map(|b| format!("{}:{}", b.host, b.port));
            let Some(address) = address else {
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            };
            let Some(broker_epoch) = broker.meta().broker_epoch else {
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            };
            let client_id = super::handlers::replica_client_id(broker.node_id, broker_epoch);
            match tokio::time::timeout(request_timeout, Connection::connect(&address, &client_id)).await {
                Ok(Ok(mut c)) => {
                    c.request_timeout = request_timeout;
                    connection = Some(c);
                    connection_epoch = Some(broker_epoch);
                }
                _ => {
                    tokio::time::sleep(RETRY_BACKOFF).await;
                    continue;
                }
            }
        }
        let conn = connection.as_mut().expect("connected above");
        let step = if truncated {
            fetch_step(&broker, &tp, &shared, conn, leader_epoch).await
        } else {
            truncate_step(&broker, &tp, &shared, conn, leader_epoch).await.map(|()| {
                truncated = true;
                FetchStep::Continue
            })
        };
        match step {
            Ok(FetchStep::Continue) => {}
            Ok(FetchStep::Retruncate) => truncated = crate::planted::active(crate::planted::Bug::SkipTruncation),
            Ok(FetchStep::Backoff) => tokio::time::sleep(RETRY_BACKOFF).await,
            Err(e) => {
                tracing::debug!(%tp, error = %e, "replica fetch failed");
                if crate::planted::active(crate::planted::Bug::FetcherStopsOnError) {
                    return;
                }
                connection = None;
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }
}

enum FetchStep {
    Continue,
    /// The logs diverge again (or the fetch offset is past the leader's end): truncate anew.
    Retruncate,
    /// The leader is not ready (its metadata is older or newer than ours): try again soon.
    Backoff,
}

/// Asks the leader where our latest epoch ends and truncates there (KIP-101/279).
async fn truncate_step(
    broker: &Broker,
    tp: &TopicPartition,
    shared: &SharedPartition,
    conn: &mut Connection<TcpStream>,
    leader_epoch: i32,
) -> anyhow::Result<()> {
    let Some(latest) = shared.lock().log().latest_epoch() else {
        return Ok(()); // nothing written in any epoch: nothing to truncate
    };
    let request = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(broker.node_id)).with_topics(vec![
        OffsetForLeaderTopic::default().with_topic(TopicName(StrBytes::from_string(tp.topic.clone()))).with_partitions(
            vec![OffsetForLeaderPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(leader_epoch)
                .with_leader_epoch(latest.0)],
        ),
    ]);
    let response = conn
        .send(ApiKey::OffsetForLeaderEpoch, OFFSET_FOR_LEADER_EPOCH_VERSION, RequestKind::OffsetForLeaderEpoch(request))
        .await?;
    let ResponseKind::OffsetForLeaderEpoch(response) = response else { anyhow::bail!("unexpected response") };
    let answer = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| anyhow::anyhow!("empty OffsetForLeaderEpoch response"))?;
    if answer.error_code != ErrorCode::NONE.0 {
        anyhow::bail!("OffsetForLeaderEpoch error {}", answer.error_code);
    }
    let epoch_end = EpochEnd { leader_epoch: answer.leader_epoch, end_offset: answer.end_offset };
    follower::check_epoch_answer(tp, &response.topics[0].topic.0, answer.partition, epoch_end, latest.0)
        .map_err(anyhow::Error::msg)?;
    let mut p = shared.lock();
    if !p.follows_at(leader_epoch) {
        // Leadership moved while we waited: this answer is about a leader we no longer follow.
        return Ok(());
    }
    let ours = FollowerLog {
        log_start_offset: p.log().log_start_offset(),
        log_end_offset: p.log().log_end_offset(),
        asked_epoch: latest,
    };
    let target = follower::truncation_target(ours, epoch_end, |epoch| p.log().end_offset_for_epoch(epoch).1)
        .map_err(anyhow::Error::msg)?;
    if let Err(e) = p.truncate_as_follower(target) {
        broker.note_log_error(&e);
        anyhow::bail!("truncation failed: {e}");
    }
    Ok(())
}

/// One fetch from the leader; appends what it returns.
async fn fetch_step(
    broker: &Broker,
    tp: &TopicPartition,
    shared: &SharedPartition,
    conn: &mut Connection<TcpStream>,
    leader_epoch: i32,
) -> anyhow::Result<FetchStep> {
    let fetch_offset = shared.lock().log().log_end_offset();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(broker.node_id))
        .with_max_wait_ms(broker.config.replica_fetch_wait_max_ms as i32)
        .with_min_bytes(1)
        .with_max_bytes(broker.config.replica_fetch_max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(leader_epoch)
                .with_fetch_offset(fetch_offset.0)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(broker.config.replica_fetch_max_bytes)])]);
    let response = conn.send(ApiKey::Fetch, FETCH_VERSION, RequestKind::Fetch(request)).await?;
    let ResponseKind::Fetch(response) = response else { anyhow::bail!("unexpected response") };
    if response.error_code != ErrorCode::NONE.0 {
        anyhow::bail!("fetch error {}", response.error_code);
    }
    let topic = response.responses.first().ok_or_else(|| anyhow::anyhow!("empty fetch response"))?;
    let data = topic.partitions.first().ok_or_else(|| anyhow::anyhow!("empty fetch response"))?;
    follower::check_fetch_answer(
        tp,
        &topic.topic.0,
        data.partition_index,
        ErrorCode(data.error_code),
        data.high_watermark,
        data.log_start_offset,
    )
    .map_err(anyhow::Error::msg)?;
    match ErrorCode(data.error_code) {
        ErrorCode::NONE => {}
        ErrorCode::OFFSET_OUT_OF_RANGE => {
            // OFFSET_OUT_OF_RANGE: below the leader's log start (retention ran there), or past
            // its end (our tail diverges).
            if fetch_offset.0 < data.log_start_offset {
                let mut p = shared.lock();
                if !p.follows_at(leader_epoch) || p.log().log_end_offset() != fetch_offset {
                    // Leadership or the log moved while we waited: this answer is stale.
                    return Ok(FetchStep::Continue);
                }
                tracing::info!(%tp, log_start = data.log_start_offset, "follower log is behind the leader's log start: starting over there");
                if let Err(e) = p.restart_as_follower_at(Offset(data.log_start_offset)) {
                    broker.note_log_error(&e);
                }
                return Ok(FetchStep::Continue);
            }
            return Ok(FetchStep::Retruncate);
        }
        ErrorCode::NOT_LEADER_OR_FOLLOWER | ErrorCode::FENCED_LEADER_EPOCH | ErrorCode::UNKNOWN_LEADER_EPOCH => {
            return Ok(FetchStep::Backoff)
        }
        code => anyhow::bail!("fetch partition error {code}"),
    }
    let mut p = shared.lock();
    if !p.follows_at(leader_epoch) {
        return Ok(FetchStep::Continue); // leadership moved while we waited: the loop ends
    }
    if p.log().log_end_offset() != fetch_offset {
        return Ok(FetchStep::Continue); // the log moved while we waited (truncation): fetch again
    }
    if let Some(records) = &data.records {
        if !records.is_empty() {
            if let Err(e) = p.append_as_follower(records, now_ms(), LeaderEpoch(leader_epoch)) {
                broker.note_log_error(&e);
                tracing::warn!(%tp, error = %e, "could not append replicated batches");
                return Ok(FetchStep::Retruncate);
            }
        }
    }
    p.update_follower_high_watermark(Offset(data.high_watermark));
    Ok(FetchStep::Continue)
}
