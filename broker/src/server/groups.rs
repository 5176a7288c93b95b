//! The group coordinator's IO: the synchronous core (`crate::group`) behind a lock, the
//! requests it parks (JoinGroup and SyncGroup long polls), its writes to `__consumer_offsets`
//! (appended as leader, answered once the high watermark passes them), and the loop that
//! loads and unloads partitions as leadership moves and drives the core's timeouts.
//!
//! Lock order: the core's lock is never held while a partition's or the metadata lock is
//! taken, and never across an await.

use super::state::{Broker, SharedPartition};
use crate::controller::NewTopic;
use crate::env::{now_ms, random_u128};
use crate::group::{GroupConfig, GroupCoordinator, GroupRecord, LoadState, Output, Reply, WaiterId, Write};
use crate::protocol::client::{self, BatchRecord};
use crate::replication::{AcksAllWait, AppendRefusal};
use crate::types::{ErrorCode, TopicPartition};
use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// The internal topic that holds groups and their committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often the coordinator checks which partitions it leads and runs its timeouts.
pub const GROUP_TICK_MS: u64 = 100;

/// A parked JoinGroup or SyncGroup is answered at the latest after this much more than its
/// rebalance timeout (the group answers it first in every case but a lost wakeup).
const PARKED_MARGIN_MS: i64 = 5_000;

/// Bytes read per step while loading a partition.
const LOAD_READ_BYTES: usize = 1024 * 1024;

/// The coordinator of this broker.
#[derive(Debug)]
pub struct Groups {
    core: Mutex<GroupCoordinator>,
    /// Parked requests by waiter id; the core names them in its replies.
    waiters: Mutex<BTreeMap<WaiterId, oneshot::Sender<Reply>>>,
    next_waiter: AtomicU64,
}

impl Groups {
    pub fn new(config: GroupConfig) -> Self {
        Groups {
            core: Mutex::new(GroupCoordinator::new(config)),
            waiters: Mutex::default(),
            next_waiter: AtomicU64::new(1),
        }
    }

    pub fn core(&self) -> MutexGuard<'_, GroupCoordinator> {
        self.core.lock().expect("the group coordinator's lock is never poisoned (fail-stop on panic)")
    }

    /// A new parked request: its id, and where its answer arrives.
    pub fn park(&self) -> (WaiterId, oneshot::Receiver<Reply>) {
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("not poisoned").insert(id, tx);
        (id, rx)
    }

    /// Forgets a parked request whose wait ended without an answer.
    pub fn unpark(&self, id: WaiterId) {
        self.waiters.lock().expect("not poisoned").remove(&id);
    }

    fn answer(&self, id: WaiterId, reply: Reply) {
        if let Some(tx) = self.waiters.lock().expect("not poisoned").remove(&id) {
            let _ = tx.send(reply); // the connection may have gone meanwhile
        }
    }
}

/// Waits for a parked request's answer, at most `limit`; `None` if none came.
pub async fn wait_parked(broker: &Broker, id: WaiterId, rx: oneshot::Receiver<Reply>, limit_ms: i64) -> Option<Reply> {
    let limit = Duration::from_millis((limit_ms.max(0) + PARKED_MARGIN_MS) as u64);
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(reply)) => Some(reply),
        _ => {
            broker.groups.unpark(id);
            None
        }
    }
}

/// Carries out what the core asked for: answers, and writes (each in its own task).
pub fn dispatch(broker: &Arc<Broker>, out: Output) {
    for (id, reply) in out.replies {
        broker.groups.answer(id, reply);
    }
    for write in out.writes {
        match append(broker, &write) {
            Ok(awaiting) => {
                let broker = broker.clone();
                tokio::spawn(async move {
                    let result = await_replication(&broker, awaiting).await;
                    written(&broker, &write, result);
                });
            }
            Err(code) => written(broker, &write, Err(code)),
        }
    }
}

/// Hands a write's result to the core (with the cluster's topics, for the consumer-group
/// heartbeats decided next) and carries out what follows.
pub fn written(broker: &Arc<Broker>, write: &Write, result: Result<(), ErrorCode>) {
    let topics = topics_snapshot(broker);
    let lookup = |name: &str| topics.get(name).copied();
    let next = broker.groups.core().written(now_ms(), write, result, &lookup);
    dispatch(broker, next);
}

/// Every topic's id and partition count, by name: taken before the core's lock (never the
/// metadata lock under it).
pub fn topics_snapshot(broker: &Broker) -> BTreeMap<String, (u128, i32)> {
    broker.meta().image.topics.iter().map(|(name, t)| (name.clone(), (t.topic_id, t.partitions))).collect()
}

/// Appends a write's records to its partition if this broker still leads it at the epoch it
/// loaded it at; the error is what the waiting clients get.
pub fn append(broker: &Broker, write: &Write) -> Result<(SharedPartition, AcksAllWait), ErrorCode> {
    let loaded_epoch = match broker.groups.core().partitions().get(&write.partition) {
        Some(LoadState::Loaded { leader_epoch }) => *leader_epoch,
        _ => return Err(ErrorCode::NOT_COORDINATOR),
    };
    let tp = TopicPartition::new(OFFSETS_TOPIC, write.partition);
    let partition = broker.partition(&tp).ok_or(ErrorCode::NOT_COORDINATOR)?;
    let now = now_ms();
    let batch = encode_batch(&write.records, now);
    let appended = {
        let mut p = partition.lock();
        if !p.is_leader() || p.leader_epoch().0 != loaded_epoch {
            return Err(ErrorCode::NOT_COORDINATOR);
        }
        p.append_as_leader(batch, -1, now)
    };
    broker.data_appended.notify_waiters();
    broker.hw_changed.notify_waiters();
    match appended {
        Ok((_, Some(wait))) => Ok((partition, wait)),
        Ok((_, None)) => unreachable!("acks=-1 always waits"),
        Err(AppendRefusal::NotLeader) => Err(ErrorCode::NOT_COORDINATOR),
        Err(AppendRefusal::NotEnoughReplicas { .. }) => Err(ErrorCode::COORDINATOR_NOT_AVAILABLE),
        Err(AppendRefusal::Log(error)) => {
            broker.note_log_error(&error);
            tracing::warn!(%tp, %error, "a group coordinator write failed");
            Err(match error.error_code() {
                ErrorCode::MESSAGE_TOO_LARGE => ErrorCode::INVALID_COMMIT_OFFSET_SIZE,
                _ => ErrorCode::NOT_COORDINATOR,
            })
        }
    }
}

/// Waits until the high watermark passes the write (`offsets.commit.timeout.ms` at most), and
/// maps replication errors as Kafka's coordinator does.
pub async fn await_replication(
    broker: &Broker,
    (partition, wait): (SharedPartition, AcksAllWait),
) -> Result<(), ErrorCode> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(broker.config.offsets_commit_timeout_ms as u64);
    loop {
        let changed = broker.hw_changed.notified();
        match partition.lock().acks_all_outcome(&wait) {
            Some(ErrorCode::NONE) => return Ok(()),
            Some(ErrorCode::NOT_LEADER_OR_FOLLOWER) => return Err(ErrorCode::NOT_COORDINATOR),
            Some(_) => return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE),
            None => {}
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() || tokio::time::timeout(remaining, changed).await.is_err() {
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
    }
}

/// One v2 batch holding `records` (uncompressed, no producer id): a write is appended, and
/// committed, as one unit.
fn encode_batch(records: &[GroupRecord], now: i64) -> Bytes {
    let records: Vec<BatchRecord> = records
        .iter()
        .map(|record| {
            let (key, value) = record.encode();
            BatchRecord { key: Some(key), value, timestamp: now }
        })
        .collect();
    client::encode_batch(&records, None, Compression::None)
}

/// What `__consumer_offsets` is created with on first use.
pub fn offsets_topic(broker: &Broker) -> NewTopic {
    let mut configs = BTreeMap::new();
    // Compacted, as in Kafka: the newest record of each group and offset key stays (retention
    // would take a running group's offsets away), so a load replays the live groups, not the
    // whole history.
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert("segment.bytes".to_string(), broker.config.offsets_topic_segment_bytes.to_string());
    NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: broker.config.group.offsets_partitions,
        replication_factor: broker.config.offsets_replication_factor(),
        assignments: Vec::new(),
        configs,
    }
}

/// The coordinator's loop: load and unload partitions as leadership moves, run timeouts.
pub async fn group_loop(broker: Arc<Broker>, shutdown: super::signal::Signal<()>) {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_millis(GROUP_TICK_MS)) => {}
        }
        follow_leadership(&broker);
        let out = broker.groups.core().tick(now_ms());
        dispatch(&broker, out);
    }
}

/// Whether this broker may answer for `group_id` now: its controller lease holds (it cannot
/// have been replaced as leader behind its back), and it still leads the group's partition at
/// the epoch it loaded it at. Checked on every group request, so a zombie coordinator (cut
/// off, or just back and not yet told it was replaced) never answers from stale state; the
/// client looks the coordinator up again.
pub fn check_coordinator(broker: &Broker, group_id: &str) -> Result<(), ErrorCode> {
    let (partition, loaded) = {
        let core = broker.groups.core();
        let partition = core.partition_for(group_id);
        (partition, core.partitions().get(&partition).copied())
    };
    let Some(loaded) = loaded else { return Ok(()) }; // the core answers NOT_COORDINATOR
    if broker.controller_lease_expired(now_ms()) {
        return Err(ErrorCode::NOT_COORDINATOR);
    }
    let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
    let partition = broker.partition(&tp).ok_or(ErrorCode::NOT_COORDINATOR)?;
    let p = partition.lock();
    if p.is_leader() && p.leader_epoch().0 == loaded.leader_epoch() {
        Ok(())
    } else {
        Err(ErrorCode::NOT_COORDINATOR)
    }
}

/// Brings the coordinator's partitions in line with the `__consumer_offsets` partitions this
/// broker leads (none while its controller lease has expired), and loads those that are
/// waiting.
fn follow_leadership(broker: &Arc<Broker>) {
    let replicas: Vec<(i32, SharedPartition)> = broker
        .meta()
        .partitions
        .iter()
        .filter(|(tp, _)| tp.topic == OFFSETS_TOPIC)
        .map(|(tp, p)| (tp.partition, p.clone()))
        .collect();
    let zombie = broker.controller_lease_expired(now_ms());
    let led: BTreeMap<i32, i32> = replicas
        .iter()
        .filter(|_| !zombie)
        .filter_map(|(index, p)| {
            let p = p.lock();
            p.is_leader().then(|| (*index, p.leader_epoch().0))
        })
        .collect();
    let mut out = Output::default();
    let loading: Vec<(i32, i32)> = {
        let mut core = broker.groups.core();
        let current: Vec<(i32, i32)> = core.partitions().iter().map(|(p, s)| (*p, s.leader_epoch())).collect();
        for (partition, epoch) in current {
            if led.get(&partition) != Some(&epoch) {
                tracing::info!(partition, "no longer the group coordinator for this __consumer_offsets partition");
                out.append(core.unload(partition));
            }
        }
        for (&partition, &epoch) in &led {
            if core.partitions().get(&partition).map(|s| s.leader_epoch()) != Some(epoch) {
                out.append(core.begin_load(partition, epoch));
            }
        }
        core.partitions()
            .iter()
            .filter_map(|(p, s)| matches!(s, LoadState::Loading { .. }).then_some((*p, s.leader_epoch())))
            .collect()
    };
    dispatch(broker, out);
    for (partition, epoch) in loading {
        load(broker, &replicas, partition, epoch);
    }
}

/// Replays one partition into the coordinator once everything in it is committed (HW at the
/// log end: a record the new leader holds beyond its HW might still be lost with it).
fn load(broker: &Broker, replicas: &[(i32, SharedPartition)], partition: i32, epoch: i32) {
    let Some((_, shared)) = replicas.iter().find(|(index, _)| *index == partition) else { return };
    let records = {
        let p = shared.lock();
        if !p.is_leader() || p.leader_epoch().0 != epoch {
            return;
        }
        let log = p.log();
        let end = log.log_end_offset();
        if p.high_watermark() < end || !p.high_watermark_established() {
            return;
        }
        let mut records = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < end {
            let read = match log.read(offset, LOAD_READ_BYTES, end, true) {
                Ok(read) => read,
                Err(error) => {
                    broker.note_log_error(&error);
                    tracing::warn!(partition, %error, "loading a __consumer_offsets partition failed; will retry");
                    return;
                }
            };
            if read.records.is_empty() {
                break;
            }
            offset = decode_into(partition, read.records, &mut records).max(offset.next());
        }
        records
    };
    let count = records.len();
    let groups = broker.groups.core().finish_load(partition, epoch, records, now_ms());
    if count > 0 {
        tracing::info!(
            partition,
            leader_epoch = epoch,
            records = count,
            groups,
            "loaded the groups of a __consumer_offsets partition"
        );
    } else {
        tracing::debug!(partition, leader_epoch = epoch, "loaded an empty __consumer_offsets partition");
    }
}

/// Decodes stored batches into group records (skipping, with a warning, any record that is not
/// one: they are never written by us, and a client cannot produce to this topic). Returns the
/// offset after the last batch read: a batch the cleaner emptied still moves the load past it.
fn decode_into(partition: i32, mut bytes: Bytes, out: &mut Vec<GroupRecord>) -> crate::types::Offset {
    let mut next = crate::types::Offset(-1);
    while !bytes.is_empty() {
        let Ok(header) = crate::log::batch::parse_header(&bytes) else { break };
        let set = match RecordBatchDecoder::decode(&mut bytes) {
            Ok(set) => set,
            Err(error) => {
                tracing::warn!(partition, error = %error, "an unreadable batch in __consumer_offsets is skipped");
                break;
            }
        };
        next = crate::types::Offset(header.last_offset() + 1);
        for record in set.records {
            if record.control {
                continue;
            }
            let Some(key) = record.key else { continue };
            match GroupRecord::decode(&key, record.value.as_deref()) {
                Ok(r) => out.push(r),
                Err(why) => tracing::warn!(
                    partition,
                    offset = record.offset,
                    why,
                    "a record of __consumer_offsets that is not a group record is skipped"
                ),
            }
        }
    }
    next
}

/// A member id's randomness (seeded in the simulator).
pub fn member_id_entropy() -> u128 {
    random_u128()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::OffsetValue;

    /// A commit of several partitions is one batch (a log refuses a produce of several), and it
    /// decodes back to the same records.
    #[test]
    fn a_write_of_several_records_is_one_batch_that_loads_back() {
        let records: Vec<GroupRecord> = (0..3)
            .map(|p| GroupRecord::Offset {
                group_id: "g".to_string(),
                tp: TopicPartition::new("t", p),
                value: Some(OffsetValue {
                    offset: 10 + i64::from(p),
                    leader_epoch: 1,
                    metadata: String::new(),
                    commit_timestamp_ms: 5,
                }),
            })
            .collect();
        let mut bytes = encode_batch(&records, 5);
        let batch = crate::log::batch::parse_header(&bytes).expect("a valid batch header");
        assert_eq!(batch.size, bytes.len(), "one batch");
        crate::log::batch::validate_batch(&bytes, 1 << 20).expect("what a leader's log accepts");
        let mut decoded = Vec::new();
        decode_into(0, bytes.split_off(0), &mut decoded);
        assert_eq!(decoded, records);
    }

    /// A coordinator loading a compacted partition replays only each key's newest record, and
    /// moves past the empty batches the cleaner left to the log end.
    #[test]
    fn a_cleaned_offsets_partition_loads_the_newest_commit_of_each_partition() {
        use crate::log::{CleanupPolicy, LogConfig, PartitionLog};
        use crate::types::{LeaderEpoch, Offset};
        let disk = crate::storage::mem::MemDisk::new();
        let config = LogConfig {
            segment_bytes: 500,
            cleanup_policy: CleanupPolicy::COMPACT,
            min_cleanable_dirty_ratio: 0.0,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(Arc::new(disk), "/o-0".into(), config, 0).unwrap();
        let commit = |p: i32, offset: i64| GroupRecord::Offset {
            group_id: "g".to_string(),
            tp: TopicPartition::new("t", p),
            value: Some(OffsetValue { offset, leader_epoch: 1, metadata: String::new(), commit_timestamp_ms: 5 }),
        };
        for offset in 0..40 {
            log.append(encode_batch(&[commit((offset % 2) as i32, offset)], 5), LeaderEpoch(0), 5).unwrap();
        }
        let end = log.log_end_offset();
        log.clean(5, end).unwrap().expect("cleaned");
        let bytes = log.read(Offset(0), usize::MAX, end, true).unwrap().records;
        let mut decoded = Vec::new();
        assert_eq!(decode_into(0, bytes, &mut decoded), end);
        assert!(decoded.len() < 10, "{} of 40 commits replayed: the cleaner removed too little", decoded.len());
        let mut newest = BTreeMap::new();
        for record in decoded {
            if let GroupRecord::Offset { tp, value: Some(value), .. } = record {
                let previous = newest.insert(tp.partition, value.offset);
                assert!(previous.is_none_or(|p| p < value.offset), "replayed in offset order");
            }
        }
        assert_eq!(newest, BTreeMap::from([(0, 38), (1, 39)]));
    }
}
