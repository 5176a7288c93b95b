//! The broker's state: the metadata image (replayed from records the controller sends), the
//! partition replicas this broker holds, its producer-id block, and whether its log directory
//! is still online.
//!
//! Locking: [`Broker::meta`] is held only to look up or change the image and the partition map;
//! each partition has its own mutex, taken after (never before) the meta lock. Never hold a lock
//! across an `.await`.

use super::config::BrokerConfig;
use super::controller_rpc;
use super::halt::Halt;
use crate::controller::rpc::{ControllerReply, ControllerRequest, RequestEnvelope};
use crate::controller::{MetadataImage, MetadataRecord, PartitionImage};
use crate::env::{now_ms, random_u128};
use crate::log::topic_config::topic_log_config;
use crate::log::{LogError, PartitionLog};
use crate::replication::{Due, Partition, ReplicaState, Transition};
use crate::storage::{self, Disk};
use crate::types::TopicPartition;
use crate::types::{ApiError, ErrorCode};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// A partition replica shared between handlers, the fetcher and the metadata applier.
/// [`SharedPartition::lock`] returns a guard that, when released after a mutator ran, hands
/// the replica's state to the broker's [`ObservationTap`] (off unless a simulator turned it on).
#[derive(Clone, Debug)]
pub struct SharedPartition(Arc<PartitionCell>);

#[derive(Debug)]
struct PartitionCell {
    partition: Mutex<Partition>,
    tap: Arc<ObservationTap>,
}

impl SharedPartition {
    fn new(partition: Partition, tap: Arc<ObservationTap>) -> Self {
        SharedPartition(Arc::new(PartitionCell { partition: Mutex::new(partition), tap }))
    }

    pub fn lock(&self) -> PartitionGuard<'_> {
        let guard = self.0.partition.lock().expect("partition lock poisoned");
        let changes_at_lock = guard.changes();
        PartitionGuard { guard, changes_at_lock, tap: &self.0.tap }
    }

    /// The partition, if nothing else holds it (to delete its log).
    fn try_unwrap(self) -> Result<Partition, SharedPartition> {
        Arc::try_unwrap(self.0)
            .map(|cell| cell.partition.into_inner().expect("partition lock poisoned"))
            .map_err(SharedPartition)
    }
}

/// A locked replica; see [`SharedPartition`].
pub struct PartitionGuard<'a> {
    guard: MutexGuard<'a, Partition>,
    changes_at_lock: u64,
    tap: &'a ObservationTap,
}

impl std::ops::Deref for PartitionGuard<'_> {
    type Target = Partition;
    fn deref(&self) -> &Partition {
        &self.guard
    }
}

impl std::ops::DerefMut for PartitionGuard<'_> {
    fn deref_mut(&mut self) -> &mut Partition {
        &mut self.guard
    }
}

impl Drop for PartitionGuard<'_> {
    fn drop(&mut self) {
        if self.guard.changes() != self.changes_at_lock {
            self.tap.record(&self.guard);
        }
    }
}

/// Replica states in the order they changed, for the simulator's state checks: every change a
/// mutator made, taken when the partition lock is released. On only in simulator builds.
#[derive(Debug, Default)]
pub struct ObservationTap {
    enabled: std::sync::atomic::AtomicBool,
    events: Mutex<TapEvents>,
}

#[derive(Debug, Default)]
struct TapEvents {
    events: Vec<TapEvent>,
    /// Events dropped because nobody drained them ([`OBSERVATION_TAP_EVENTS_MAX`]).
    dropped: u64,
}

/// Events kept until drained; more are counted and dropped.
pub const OBSERVATION_TAP_EVENTS_MAX: usize = 100_000;

/// One replica's state right after a change.
#[derive(Clone, Debug)]
pub struct TapEvent {
    pub at: tokio::time::Instant,
    pub state: ReplicaState,
}

impl ObservationTap {
    pub fn new(enabled: bool) -> Self {
        ObservationTap { enabled: enabled.into(), events: Mutex::default() }
    }

    fn record(&self, partition: &Partition) {
        if !self.enabled.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut tap = self.events.lock().expect("tap lock poisoned");
        if tap.events.len() >= OBSERVATION_TAP_EVENTS_MAX {
            tap.dropped += 1;
            return;
        }
        tap.events.push(TapEvent { at: tokio::time::Instant::now(), state: partition.state() });
    }

    /// Takes the events recorded so far, and how many were dropped.
    pub fn drain(&self) -> (Vec<TapEvent>, u64) {
        let mut tap = self.events.lock().expect("tap lock poisoned");
        (std::mem::take(&mut tap.events), std::mem::take(&mut tap.dropped))
    }
}

/// How long one call to the controller may take.
pub const CONTROLLER_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything under the meta lock.
#[derive(Debug, Default)]
pub struct MetaState {
    pub image: MetadataImage,
    /// This broker's current registration; `None` until registered (or after a restart of the
    /// controller forgot it).
    pub broker_epoch: Option<i64>,
    /// The cluster id, as the controller told it at registration (empty before).
    pub cluster_id: String,
    /// The replicas this broker holds, opened as the metadata assigns them.
    pub partitions: BTreeMap<TopicPartition, SharedPartition>,
    /// Replicas whose stored state could not be used (a bad stored topic config, say): each is
    /// that partition's problem alone, answered KAFKA_STORAGE_ERROR, while the log directory and
    /// every other partition stay online. Opening is tried again every
    /// [`FAILED_OPEN_RETRY_MS`] (a read that a flaky disk corrupted once opens the next time).
    pub failed_partitions: BTreeMap<TopicPartition, FailedOpen>,
    /// Whether leftover directories of deleted topics were looked for since start.
    scanned_dirs: bool,
}

/// How long a replica that failed to open waits before it is tried again.
pub const FAILED_OPEN_RETRY_MS: i64 = 5_000;

/// A replica that could not be opened: why, and when to try again.
#[derive(Clone, Debug)]
pub struct FailedOpen {
    pub reason: String,
    pub retry_at_ms: i64,
}

impl MetaState {
    fn failed_open_due(&self, now_ms: i64) -> bool {
        self.failed_partitions.values().any(|f| now_ms >= f.retry_at_ms)
    }
}

/// Where a partition stands on this broker.
pub enum Lookup {
    UnknownTopic,
    /// The topic exists but this broker holds no replica of the partition (or the partition
    /// does not exist: `UnknownPartition`).
    NotReplica,
    UnknownPartition,
    Replica(SharedPartition),
    /// This broker holds a replica it could not open.
    Failed(String),
}

/// Producer ids `[next, end)` this broker may hand out.
#[derive(Debug, Default)]
struct ProducerIdBlock {
    next: i64,
    end: i64,
}

/// A broker: configuration, storage and state shared by all connections.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub disk: Arc<dyn Disk>,
    pub node_id: i32,
    /// Random per process start: tells the controller a restart from a retried registration.
    pub incarnation: u128,
    /// Host and port Metadata advertises.
    pub advertised: (String, i32),
    /// `host:port` of the controller listener.
    pub controller_address: String,
    meta: Mutex<MetaState>,
    producer_ids: Mutex<ProducerIdBlock>,
    /// Set when a write or fsync failed: the log directory is offline and nothing on it is
    /// served or written again by this process (Kafka's behaviour: never acknowledge what may be
    /// lost). It is the only log directory, so the process then halts, as Kafka does when its
    /// last log directory fails.
    offline: Mutex<Option<String>>,
    /// The process's fail-stop switch (see `server::halt`).
    pub halt: Halt,
    /// Woken after every append, for fetches waiting on `min_bytes`.
    pub data_appended: Notify,
    /// Woken when a high watermark moves or leadership changes, for acks=all produces.
    pub hw_changed: Notify,
    /// Replica states as they change, for the simulator (off by default).
    pub observation_tap: Arc<ObservationTap>,
    /// The group coordinator (for the `__consumer_offsets` partitions this broker leads).
    pub groups: super::groups::Groups,
    /// Until when (ms) this broker's view of leadership is known to be current: the send time
    /// of its last heartbeat that the controller answered, plus `broker.session.timeout.ms`.
    /// The controller cannot have fenced it (and moved its leaderships) before then; after it,
    /// the broker may be a zombie, and its group coordinator stops answering.
    controller_lease_until_ms: Mutex<i64>,
}

/// What the simulator's state checks may see of one replica (never private fields).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionObservation {
    pub topic: String,
    pub state: ReplicaState,
}

/// Whether a partition failed to open because the disk failed (the log directory goes offline)
/// rather than because of what one partition stores (that partition alone stays closed).
fn is_disk_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some()
            || matches!(cause.downcast_ref::<LogError>(), Some(LogError::Storage { .. } | LogError::Corruption { .. }))
    })
}

impl Broker {
    /// Prepares the data directory (`meta.properties`). Partition logs are opened (and
    /// recovered) as the metadata from the controller assigns them.
    pub fn open(
        config: BrokerConfig,
        disk: Arc<dyn Disk>,
        advertised: (String, i32),
        controller_address: String,
        halt: Halt,
    ) -> anyhow::Result<Broker> {
        let log_dir = config.log_dir.clone();
        disk.create_dir_all(&log_dir)?;
        sync_parent(&*disk, &log_dir)?;
        check_meta_properties(&*disk, &log_dir, config.node_id)?;
        let groups = super::groups::Groups::new(config.group.clone());
        Ok(Broker {
            node_id: config.node_id,
            incarnation: random_u128(),
            config,
            disk,
            advertised,
            controller_address,
            meta: Mutex::new(MetaState::default()),
            producer_ids: Mutex::new(ProducerIdBlock::default()),
            offline: Mutex::new(None),
            halt,
            data_appended: Notify::new(),
            hw_changed: Notify::new(),
            // On in simulator builds: the simulator's state checks read every change.
            observation_tap: Arc::new(ObservationTap::new(cfg!(madsim))),
            groups,
            controller_lease_until_ms: Mutex::new(i64::MIN),
        })
    }

    /// The controller answered a heartbeat sent at `sent_at_ms`, unfenced.
    pub fn renew_controller_lease(&self, sent_at_ms: i64) {
        let mut until = self.controller_lease_until_ms.lock().expect("not poisoned");
        *until = (*until).max(sent_at_ms + self.config.session_timeout_ms);
    }

    /// Whether the controller may have fenced this broker by `now_ms` (see the field).
    pub fn controller_lease_expired(&self, now_ms: i64) -> bool {
        now_ms >= *self.controller_lease_until_ms.lock().expect("not poisoned")
    }

    pub fn meta(&self) -> MutexGuard<'_, MetaState> {
        self.meta.lock().expect("meta lock poisoned")
    }

    /// The replica of `tp` on this broker, if it holds one.
    pub fn partition(&self, tp: &TopicPartition) -> Option<SharedPartition> {
        self.meta().partitions.get(tp).cloned()
    }

    pub fn lookup(&self, tp: &TopicPartition) -> Lookup {
        let meta = self.meta();
        let Some(topic) = meta.image.topics.get(&tp.topic) else { return Lookup::UnknownTopic };
        if tp.partition < 0 || tp.partition >= topic.partitions {
            return Lookup::UnknownPartition;
        }
        match (meta.partitions.get(tp), meta.failed_partitions.get(tp)) {
            (Some(p), _) => Lookup::Replica(p.clone()),
            (None, Some(failed)) => Lookup::Failed(failed.reason.clone()),
            (None, None) => Lookup::NotReplica,
        }
    }

    /// `Some(reason)` once the log directory went offline.
    pub fn offline_reason(&self) -> Option<String> {
        self.offline.lock().expect("offline lock poisoned").clone()
    }

    /// Records a storage failure: from now on the log directory is offline (nothing on it is
    /// served or written, and the broker stops heartbeating), and, since it is the broker's only
    /// log directory, the process halts. The controller fences the broker and moves its
    /// leaderships; the restarted process recovers its logs.
    pub fn note_log_error(&self, error: &LogError) {
        if matches!(error, LogError::Storage { .. } | LogError::Corruption { .. }) {
            let newly_offline = {
                let mut offline = self.offline.lock().expect("offline lock poisoned");
                let newly = offline.is_none();
                if newly {
                    tracing::error!(%error, dir = %self.config.log_dir.display(), "log directory is offline: no partition on it is served or written again by this process");
                    *offline = Some(error.to_string());
                }
                newly
            };
            if newly_offline {
                self.halt.halt(format!(
                    "log directory {} is offline ({error}) and it is the only one",
                    self.config.log_dir.display()
                ));
            }
        }
    }

    pub fn check_online(&self) -> Result<(), ApiError> {
        match self.offline_reason() {
            Some(reason) => {
                Err(ApiError::new(ErrorCode::KAFKA_STORAGE_ERROR, format!("log directory is offline: {reason}")))
            }
            None => Ok(()),
        }
    }

    // ------------------------------------------------------------ the controller

    /// One call to the controller. The records in the answer are applied before it returns.
    pub async fn controller_call(self: &Arc<Self>, request: ControllerRequest) -> Result<ControllerReply, ApiError> {
        let envelope = RequestEnvelope { metadata_offset: self.meta().image.next_offset, request };
        let response = controller_rpc::call(&self.controller_address, &envelope, CONTROLLER_CALL_TIMEOUT)
            .await
            .map_err(|e| ApiError::new(ErrorCode::REQUEST_TIMED_OUT, e.to_string()))?;
        self.apply_records(response.records_from, &response.records);
        response.result
    }

    /// Replays records from the controller (those not seen yet) and brings the replicas in line:
    /// opens logs for new assignments, moves leadership, starts fetchers, removes deleted topics.
    pub fn apply_records(self: &Arc<Self>, from: i64, records: &[MetadataRecord]) {
        let mut meta = self.meta();
        let next = meta.image.next_offset;
        if from > next {
            tracing::warn!(from, next, "metadata records with a gap ignored");
            return;
        }
        let skip = usize::try_from(next - from).unwrap_or(usize::MAX);
        if skip >= records.len() && meta.scanned_dirs && !meta.failed_open_due(now_ms()) {
            return;
        }
        for (i, record) in records.iter().enumerate().skip(skip) {
            // The controller is a peer: a record that does not fit is an error for this
            // exchange (the next call asks again from the same offset), never a panic.
            if let Err(e) = meta.image.try_replay(record) {
                tracing::error!(offset = from + i as i64, error = %e, ?record, "refusing a metadata record from the controller");
                break;
            }
        }
        let now = now_ms();
        let mut fetchers = Vec::new();
        // Any change may move a high watermark (an ISR shrink does) or end a leadership.
        let mut changed = skip < records.len();
        // Deleted topics: close and remove their replicas.
        let gone: Vec<TopicPartition> = meta
            .partitions
            .keys()
            .filter(|tp| meta.image.partition(&tp.topic, tp.partition).is_none())
            .cloned()
            .collect();
        for tp in gone {
            let partition = meta.partitions.remove(&tp).expect("listed");
            changed = true;
            match partition.try_unwrap() {
                Ok(partition) => {
                    if let Err(e) = partition.into_log().delete() {
                        tracing::warn!(%tp, error = %e, "could not remove a deleted topic's directory now; it is removed at the next start");
                    }
                }
                Err(_) => {
                    tracing::info!(%tp, "a request still holds a deleted partition; its directory is removed at the next start")
                }
            }
        }
        if self.offline_reason().is_none() {
            let broker_epochs: BTreeMap<i32, i64> =
                meta.image.brokers.values().map(|b| (b.node_id, b.broker_epoch)).collect();
            let assigned: Vec<(TopicPartition, PartitionImage)> = meta
                .image
                .partitions
                .values()
                .filter(|p| p.replicas.contains(&self.node_id))
                .filter_map(|p| {
                    let topic = meta.image.topic_by_id(p.topic_id)?;
                    Some((TopicPartition::new(topic.name.clone(), p.partition), p.clone()))
                })
                .collect();
            for (tp, image) in assigned {
                if meta.failed_partitions.get(&tp).is_some_and(|f| now < f.retry_at_ms) {
                    continue;
                }
                let partition = match meta.partitions.get(&tp) {
                    Some(p) => p.clone(),
                    None => match self.open_partition(&meta.image, &tp, &image, now) {
                        Ok(p) => {
                            if meta.failed_partitions.remove(&tp).is_some() {
                                tracing::info!(%tp, "a partition replica that failed to open has opened");
                            }
                            let p = SharedPartition::new(p, self.observation_tap.clone());
                            meta.partitions.insert(tp.clone(), p.clone());
                            p
                        }
                        Err(e) if is_disk_error(&e) => {
                            tracing::error!(%tp, error = %e, "cannot open a partition replica");
                            self.note_log_error(&LogError::Storage {
                                path: self.config.log_dir.clone(),
                                source: std::io::Error::other(format!("{e:#}")),
                            });
                            break;
                        }
                        Err(e) => {
                            let reason = format!("{e:#}");
                            if meta.failed_partitions.get(&tp).is_none_or(|f| f.reason != reason) {
                                tracing::error!(%tp, error = reason, "cannot open a partition replica: it is tried again every {FAILED_OPEN_RETRY_MS} ms; other partitions are served");
                            }
                            let retry_at_ms = now + FAILED_OPEN_RETRY_MS;
                            meta.failed_partitions.insert(tp, FailedOpen { reason, retry_at_ms });
                            continue;
                        }
                    },
                };
                let mut partition = partition.lock();
                let result = partition.apply_image(image.clone(), now);
                partition.track_registrations(&broker_epochs);
                match result {
                    Ok(Transition::None) => {}
                    Ok(Transition::BecameLeader) => changed = true,
                    Ok(Transition::BecameFollower) => {
                        changed = true;
                        fetchers.push((tp.clone(), image.leader_epoch));
                    }
                    Err(e) => self.note_log_error(&e),
                }
            }
        }
        if !meta.scanned_dirs {
            meta.scanned_dirs = true;
            if let Err(e) = remove_deleted_partition_dirs(&*self.disk, &self.config.log_dir, &meta.image) {
                tracing::warn!(error = %e, "looking for directories of deleted topics failed");
            }
        }
        drop(meta);
        if changed {
            self.hw_changed.notify_waiters();
            self.data_appended.notify_waiters();
        }
        for (tp, leader_epoch) in fetchers {
            super::replication::spawn_fetcher(self.clone(), tp, leader_epoch);
        }
    }

    fn open_partition(
        &self,
        image: &MetadataImage,
        tp: &TopicPartition,
        partition: &PartitionImage,
        now: i64,
    ) -> anyhow::Result<Partition> {
        let topic = image.topic_by_id(partition.topic_id).expect("partition of a known topic");
        let log_config = topic_log_config(&self.config.log, &topic.configs).map_err(|(key, message)| {
            anyhow::anyhow!("topic `{}` has a bad stored config `{key}`: {message}", topic.name)
        })?;
        let min_insync_replicas = match topic.configs.get("min.insync.replicas") {
            Some(value) => value.parse()?,
            None => self.config.min_insync_replicas,
        };
        let dir = self.config.log_dir.join(tp.dir_name());
        let created = !self.disk.exists(&dir);
        self.disk.create_dir_all(&dir)?;
        write_partition_metadata(&*self.disk, &dir, topic.topic_id)?;
        if created {
            self.disk.sync_dir(&self.config.log_dir)?;
        }
        let log = PartitionLog::open(self.disk.clone(), dir, log_config, now)?;
        tracing::info!(%tp, log_start = log.log_start_offset().0, log_end = log.log_end_offset().0, created, "opened replica");
        Ok(Partition::new(tp.clone(), log, self.node_id, partition.clone(), min_insync_replicas))
    }

    // ------------------------------------------------------------ producer ids

    /// A new producer id for InitProducerId, from this broker's block (a new block comes from
    /// the controller when it runs out).
    pub async fn allocate_producer_id(self: &Arc<Self>) -> Result<i64, ApiError> {
        self.check_online()?;
        {
            let mut block = self.producer_ids.lock().expect("producer id lock poisoned");
            if block.next < block.end {
                block.next += 1;
                return Ok(block.next - 1);
            }
        }
        let broker_epoch = self.meta().broker_epoch.ok_or_else(|| {
            ApiError::new(ErrorCode::COORDINATOR_NOT_AVAILABLE, "not registered with the controller yet")
        })?;
        let reply =
            self.controller_call(ControllerRequest::AllocateProducerIds { node_id: self.node_id, broker_epoch }).await;
        let (first, size) = match reply {
            Ok(ControllerReply::ProducerIds { first, size }) => (first, size),
            Ok(other) => {
                return Err(ApiError::new(
                    ErrorCode::UNKNOWN_SERVER_ERROR,
                    format!("unexpected controller reply {other:?}"),
                ))
            }
            Err(e) => {
                return Err(ApiError::new(
                    ErrorCode::COORDINATOR_NOT_AVAILABLE,
                    format!("no producer id block: {}", e.message),
                ))
            }
        };
        let mut block = self.producer_ids.lock().expect("producer id lock poisoned");
        if block.next >= block.end {
            *block = ProducerIdBlock { next: first, end: first + size };
        }
        block.next += 1;
        Ok(block.next - 1)
    }

    // ------------------------------------------------------------ upkeep

    fn all_partitions(&self) -> Vec<SharedPartition> {
        self.meta().partitions.values().cloned().collect()
    }

    /// Time-based log work (flush.ms, segment.ms) and, when due, retention.
    pub fn housekeeping(&self, now: i64, due: Due) {
        if self.offline_reason().is_some() {
            return;
        }
        for partition in self.all_partitions() {
            let result = partition.lock().housekeeping(now, due);
            if let Err(error) = result {
                self.note_log_error(&error);
                return;
            }
        }
    }

    /// Where each replica's log ends, for the controller's recovery elections.
    pub fn replica_logs(&self) -> Vec<crate::controller::ReplicaLog> {
        let meta = self.meta();
        meta.partitions
            .values()
            .map(|p| {
                let p = p.lock();
                crate::controller::ReplicaLog {
                    topic_id: p.image().topic_id,
                    partition: p.image().partition,
                    latest_epoch: p.log().latest_epoch().map_or(-1, |e| e.0),
                    log_end: p.log().log_end_offset().0,
                }
            })
            .collect()
    }

    /// The observation hook: per replica, the offsets and roles the invariants bound.
    pub fn observe(&self) -> Vec<PartitionObservation> {
        let meta = self.meta();
        meta.partitions
            .iter()
            .map(|(tp, partition)| PartitionObservation { topic: tp.topic.clone(), state: partition.lock().state() })
            .collect()
    }

    /// The bytes of a replica's batches in `[log start, upto)` (for replica-prefix checks).
    pub fn replica_bytes(&self, tp: &TopicPartition, upto: i64) -> Option<(i64, Vec<u8>)> {
        let partition = self.partition(tp)?;
        let partition = partition.lock();
        let start = partition.log().log_start_offset();
        let mut out = Vec::new();
        let mut offset = start;
        while offset.0 < upto {
            let read = partition.log().read(offset, 1 << 20, crate::types::Offset(upto), true).ok()?;
            if read.records.is_empty() {
                break;
            }
            let mut position = 0;
            while position + crate::log::batch::BATCH_HEADER_BYTES <= read.records.len() {
                let header = crate::log::batch::parse_header(&read.records[position..]).ok()?;
                offset = crate::types::Offset(header.last_offset() + 1);
                position += header.size;
            }
            out.extend_from_slice(&read.records);
        }
        Some((start.0, out))
    }

    /// The shortest `flush.ms` of any replica, for the housekeeping cadence.
    pub fn shortest_flush_interval_ms(&self) -> Option<i64> {
        self.all_partitions().iter().filter_map(|p| p.lock().log().config().flush_interval_ms).min()
    }

    /// Clean shutdown: flush and close every log.
    pub fn close(&self) -> anyhow::Result<()> {
        let partitions = std::mem::take(&mut self.meta().partitions);
        let mut first_error = None;
        for (tp, partition) in partitions {
            if let Err(e) = partition.lock().close() {
                tracing::error!(%tp, error = %e, "close failed");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// Makes a directory's own entry durable in its parent.
pub fn sync_parent(disk: &dyn Disk, dir: &Path) -> std::io::Result<()> {
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => disk.sync_dir(parent),
        _ => Ok(()),
    }
}

/// Checks `meta.properties` (refusing a directory that belongs to another node) or writes it.
fn check_meta_properties(disk: &dyn Disk, log_dir: &Path, node_id: i32) -> anyhow::Result<()> {
    let path = log_dir.join("meta.properties");
    if disk.exists(&path) {
        let text = String::from_utf8(storage::read_all_stable(disk, &path)?)?;
        let stored_node =
            text.lines().find_map(|l| l.strip_prefix("node.id=")).and_then(|v| v.trim().parse::<i32>().ok());
        let Some(stored_node) = stored_node else {
            anyhow::bail!("{}: missing node.id", path.display());
        };
        if stored_node != node_id {
            anyhow::bail!(
                "{} belongs to node.id={stored_node}, but this node is node.id={node_id}; use another log.dirs",
                path.display()
            );
        }
        return Ok(());
    }
    let text = format!("#Written by Gregor. Do not edit.\nversion=1\nnode.id={node_id}\n");
    storage::write_atomic(disk, &path, text.as_bytes())?;
    Ok(())
}

/// The cluster id a controller stores next to its metadata log (created on first start).
pub fn load_or_create_cluster_id(disk: &dyn Disk, metadata_dir: &Path) -> anyhow::Result<String> {
    let path = metadata_dir.join("cluster.id");
    if disk.exists(&path) {
        let text = String::from_utf8(storage::read_all_stable(disk, &path)?)?;
        return Ok(text.trim().to_string());
    }
    let cluster_id = encode_cluster_id(random_u128());
    storage::write_atomic(disk, &path, cluster_id.as_bytes())?;
    Ok(cluster_id)
}

/// Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 characters).
fn encode_cluster_id(id: u128) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.to_be_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// `partition.metadata` (Kafka's name): which topic incarnation a partition directory holds.
const PARTITION_METADATA_FILE: &str = "partition.metadata";

fn topic_id_text(topic_id: u128) -> String {
    format!("{topic_id:032x}")
}

/// The topic id recorded in a partition directory: `None` if there is no file. A file that is
/// there but does not parse is an error naming it (never overwritten: the directory may hold
/// another topic incarnation's data); a read that fails is a disk error.
fn read_partition_topic_id(disk: &dyn Disk, dir: &Path) -> anyhow::Result<Option<u128>> {
    let path = dir.join(PARTITION_METADATA_FILE);
    if !disk.exists(&path) {
        return Ok(None);
    }
    let bytes = storage::read_all_stable(disk, &path)?;
    let parsed = std::str::from_utf8(&bytes).ok().and_then(|text| {
        let id = text.lines().find_map(|l| l.strip_prefix("topic_id: "))?;
        u128::from_str_radix(id.trim(), 16).ok()
    });
    match parsed {
        Some(id) => Ok(Some(id)),
        None => anyhow::bail!("{}: no `topic_id: <32 hex digits>` line", path.display()),
    }
}

/// Records the topic id in a partition directory (durably) if it is not there yet.
fn write_partition_metadata(disk: &dyn Disk, dir: &Path, topic_id: u128) -> anyhow::Result<()> {
    match read_partition_topic_id(disk, dir)? {
        Some(id) if id == topic_id => Ok(()),
        Some(id) => anyhow::bail!(
            "{} holds topic id {} but the metadata log says {}",
            dir.display(),
            topic_id_text(id),
            topic_id_text(topic_id)
        ),
        None => {
            let text = format!("version: 0\ntopic_id: {}\n", topic_id_text(topic_id));
            storage::write_atomic(disk, &dir.join(PARTITION_METADATA_FILE), text.as_bytes())?;
            Ok(())
        }
    }
}

/// Removes the directories of *deleted* topics (a delete interrupted by a crash), as the
/// metadata records them. A partition directory the metadata knows nothing about is never
/// deleted: it may hold the only copy of acknowledged data (say the metadata log was damaged);
/// the broker says which directory to look at.
fn remove_deleted_partition_dirs(disk: &dyn Disk, log_dir: &Path, image: &MetadataImage) -> anyhow::Result<()> {
    let mut removed = false;
    for name in disk.list_dir(log_dir)? {
        let path = log_dir.join(&name);
        let Some((topic, partition)) = name.rsplit_once('-') else { continue };
        let Ok(partition) = partition.parse::<i32>() else { continue };
        if topic == "__cluster_metadata" {
            continue;
        }
        let recorded_id = match read_partition_topic_id(disk, &path) {
            Ok(id) => id,
            Err(e) => {
                // Unreadable: never delete what cannot be identified; opening it reports it.
                tracing::error!(dir = %path.display(), error = %format!("{e:#}"), "a partition directory whose topic id cannot be read: left alone");
                continue;
            }
        };
        let live = image.topics.get(topic).filter(|t| partition < t.partitions);
        let deleted = recorded_id.is_some_and(|id| image.removed_topic_ids.contains(&id));
        match (live, recorded_id) {
            (Some(t), Some(id)) if id == t.topic_id => continue,
            (Some(_), None) => continue, // created just before a crash; its id is written on open
            _ if deleted => {
                tracing::info!(dir = %path.display(), "removing the directory of a deleted topic");
                disk.remove_dir_all(&path)?;
                removed = true;
            }
            _ => tracing::error!(
                dir = %path.display(),
                topic_id = recorded_id.map_or("missing".to_string(), topic_id_text),
                "a partition directory the metadata does not know: left alone (it may hold the only copy of \
                 acknowledged data). Move it out of log.dirs if it is not needed."
            ),
        }
    }
    if removed {
        disk.sync_dir(log_dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_disk_failures_take_the_directory_offline_when_a_partition_will_not_open() {
        let io = anyhow::Error::new(std::io::Error::other("EIO")).context("opening t-0");
        assert!(is_disk_error(&io));
        let storage = anyhow::Error::new(LogError::Storage { path: "/d".into(), source: std::io::Error::other("x") });
        assert!(is_disk_error(&storage));
        let parse = anyhow::Error::new("x".parse::<i32>().unwrap_err()).context("min.insync.replicas");
        assert!(!is_disk_error(&parse), "a bad stored value is that partition's problem");
        assert!(!is_disk_error(&anyhow::anyhow!("topic `t` has a bad stored config `retention.ms`")));
    }

    #[test]
    fn cluster_id_is_22_url_safe_characters() {
        let id = encode_cluster_id(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(id.len(), 22);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(encode_cluster_id(0), "AAAAAAAAAAAAAAAAAAAAAA");
    }
}
