//! The broker's state: topics (from the metadata log), their partition logs, the producer-id
//! allocator, and whether the log directory is still online.
//!
//! Locking: [`Broker::topics`] is held only to look up or change the topic map; each partition
//! log has its own mutex. Never hold a lock across an `.await`.

use super::config::{topic_log_config, BrokerConfig};
use crate::controller::{MetadataImage, MetadataLog, MetadataRecord, TopicImage};
use crate::log::{LogConfig, LogError, PartitionLog};
use crate::storage::{self, Disk};
use crate::types::TopicPartition;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Milliseconds since the Unix epoch. Under madsim the clock is simulated.
pub fn now_ms() -> i64 {
    // Intercepted by madsim in simulator builds, so this is the simulated wall clock there.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// 128 random bits for ids. `madsim::rand` is seeded by the simulator in simulator builds and
/// is `rand`'s OS-seeded generator otherwise; this is the only place the broker draws randomness.
#[allow(clippy::disallowed_methods)] // the seeded source, not the banned OS-seeded one, under madsim
pub fn random_u128() -> u128 {
    madsim::rand::random()
}

/// A partition log shared between request handlers.
pub type SharedLog = Arc<Mutex<PartitionLog>>;

/// A topic: its metadata and one log per partition (index = partition id).
#[derive(Debug)]
pub struct Topic {
    pub image: TopicImage,
    pub log_config: LogConfig,
    /// `min.insync.replicas` for this topic.
    pub min_insync_replicas: i32,
    pub partitions: Vec<SharedLog>,
}

/// Producer ids are handed out from blocks whose end is persisted before the first id of the
/// block is used, so no id is ever given out twice, even across crashes.
#[derive(Debug)]
struct ProducerIdAllocator {
    path: PathBuf,
    next: i64,
    /// Invariant: `next <= block_end`, and `block_end` is durable on disk.
    block_end: i64,
}

const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

impl ProducerIdAllocator {
    fn open(disk: &dyn Disk, log_dir: &Path) -> anyhow::Result<Self> {
        let path = log_dir.join("producer-id-block");
        let block_end = if disk.exists(&path) {
            let text = String::from_utf8(storage::read_all(disk, &path)?)?;
            text.trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("{}: bad producer id block `{text}`: {e}", path.display()))?
        } else {
            0
        };
        Ok(ProducerIdAllocator { path, next: block_end, block_end })
    }

    fn allocate(&mut self, disk: &dyn Disk) -> std::io::Result<i64> {
        if self.next == self.block_end {
            let block_end = self.block_end + PRODUCER_ID_BLOCK_SIZE;
            storage::write_atomic(disk, &self.path, block_end.to_string().as_bytes())?;
            self.block_end = block_end;
        }
        let id = self.next;
        self.next += 1;
        assert!(self.next <= self.block_end);
        Ok(id)
    }
}

/// Everything under the topics lock.
#[derive(Debug)]
pub struct Topics {
    metadata_log: MetadataLog,
    image: MetadataImage,
    pub by_name: BTreeMap<String, Topic>,
}

impl Topics {
    pub fn get(&self, name: &str) -> Option<&Topic> {
        self.by_name.get(name)
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<SharedLog> {
        let topic = self.by_name.get(&tp.topic)?;
        usize::try_from(tp.partition).ok().and_then(|p| topic.partitions.get(p)).cloned()
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }
}

/// A broker: configuration, storage and state shared by all connections.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub disk: Arc<dyn Disk>,
    pub cluster_id: String,
    /// Host and port Metadata advertises.
    pub advertised: (String, i32),
    topics: Mutex<Topics>,
    producer_ids: Mutex<ProducerIdAllocator>,
    /// Set when a write or fsync failed: the log directory is offline and nothing on it is
    /// served again until restart (Kafka's behaviour: never acknowledge what may be lost).
    offline: Mutex<Option<String>>,
    /// Woken after every append, for fetches waiting on `min_bytes`.
    pub data_appended: Notify,
}

/// What the simulator's state checks may see of one partition (never private fields).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionObservation {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_end_offset: i64,
}

/// Why a topic operation failed, as Kafka error codes with a message.
#[derive(Debug)]
pub struct TopicError {
    pub code: i16,
    pub message: String,
}

impl TopicError {
    pub fn new(code: i16, message: impl Into<String>) -> Self {
        TopicError { code, message: message.into() }
    }
}

/// Kafka's rule for topic names.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    const TOPIC_NAME_BYTES_MAX: usize = 249;
    let legal = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
    if name.is_empty() || name == "." || name == ".." || name.len() > TOPIC_NAME_BYTES_MAX || !legal {
        return Err(TopicError::new(
            17,
            format!("invalid topic name `{name}`: use 1-249 of [a-zA-Z0-9._-], not `.` or `..`"),
        ));
    }
    Ok(())
}

impl Broker {
    /// Opens the data directory: checks `meta.properties`, replays the metadata log, removes
    /// directories of deleted topics, and opens (recovering) every partition log.
    pub fn open(config: BrokerConfig, disk: Arc<dyn Disk>, advertised: (String, i32)) -> anyhow::Result<Broker> {
        let log_dir = config.log_dir.clone();
        disk.create_dir_all(&log_dir)?;
        sync_parent(&*disk, &log_dir)?;
        let cluster_id = load_or_create_meta_properties(&*disk, &log_dir, config.node_id)?;
        let metadata_dir = log_dir.join("__cluster_metadata-0");
        let (metadata_log, records) = MetadataLog::open(&*disk, &metadata_dir)?;
        let mut image = MetadataImage::default();
        for record in &records {
            image.replay(record);
        }
        remove_deleted_partition_dirs(&*disk, &log_dir, &image)?;
        let now = now_ms();
        let mut by_name = BTreeMap::new();
        for topic in image.topics.values() {
            by_name.insert(topic.name.clone(), open_topic(&*disk, &disk, &config, topic, now)?);
        }
        let producer_ids = ProducerIdAllocator::open(&*disk, &log_dir)?;
        tracing::info!(topics = by_name.len(), cluster_id, dir = %log_dir.display(), "opened data directory");
        Ok(Broker {
            config,
            disk,
            cluster_id,
            advertised,
            topics: Mutex::new(Topics { metadata_log, image, by_name }),
            producer_ids: Mutex::new(producer_ids),
            offline: Mutex::new(None),
            data_appended: Notify::new(),
        })
    }

    pub fn topics(&self) -> MutexGuard<'_, Topics> {
        self.topics.lock().expect("topics lock poisoned")
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<SharedLog> {
        self.topics().partition(tp)
    }

    /// `Some(reason)` once the log directory went offline.
    pub fn offline_reason(&self) -> Option<String> {
        self.offline.lock().expect("offline lock poisoned").clone()
    }

    /// Records a storage failure: from now on the log directory is offline.
    pub fn note_log_error(&self, error: &LogError) {
        if matches!(error, LogError::Storage { .. } | LogError::Corruption { .. }) {
            let mut offline = self.offline.lock().expect("offline lock poisoned");
            if offline.is_none() {
                tracing::error!(%error, dir = %self.config.log_dir.display(), "log directory is offline: no partition on it is served until restart");
                *offline = Some(error.to_string());
            }
        }
    }

    /// Creates a topic: validates, appends the record durably, replays it, opens the logs.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicImage, TopicError> {
        validate_topic_name(name)?;
        if partitions <= 0 {
            return Err(TopicError::new(37, format!("number of partitions must be positive, got {partitions}")));
        }
        let log_config = topic_log_config(&self.config.log, &configs)
            .map_err(|(key, message)| TopicError::new(40, format!("config `{key}`: {message}")))?;
        let mut topics = self.topics();
        if topics.by_name.contains_key(name) {
            return Err(TopicError::new(36, format!("topic `{name}` already exists")));
        }
        let mut topic_id = random_u128();
        while topic_id == 0 || topics.image.topic_by_id(topic_id).is_some() {
            topic_id = random_u128();
        }
        let image = TopicImage { name: name.to_string(), topic_id, partitions, configs: configs.clone() };
        if validate_only {
            return Ok(image);
        }
        self.check_online().map_err(|reason| TopicError::new(56, reason))?;
        let record = MetadataRecord::Topic { name: name.to_string(), topic_id, partitions, configs };
        topics.metadata_log.append(std::slice::from_ref(&record)).map_err(|e| self.storage_failure(e))?;
        topics.image.replay(&record);
        let topic = open_topic(&*self.disk, &self.disk, &self.config, &image, now_ms()).map_err(|e| {
            let reason = format!("creating the logs of topic `{name}`: {e:#}");
            self.note_log_error(&LogError::Storage {
                path: self.config.log_dir.clone(),
                source: std::io::Error::other(reason.clone()),
            });
            TopicError::new(56, reason)
        })?;
        assert_eq!(topic.log_config, log_config);
        topics.by_name.insert(name.to_string(), topic);
        tracing::info!(topic = name, partitions, "created topic");
        Ok(image)
    }

    /// Deletes a topic: appends the record durably, replays it, removes the logs.
    pub fn delete_topic(&self, name: &str) -> Result<TopicImage, TopicError> {
        self.check_online().map_err(|reason| TopicError::new(56, reason))?;
        let mut topics = self.topics();
        let Some(image) = topics.image.topics.get(name).cloned() else {
            return Err(TopicError::new(3, format!("topic `{name}` does not exist")));
        };
        let record = MetadataRecord::RemoveTopic { name: name.to_string(), topic_id: image.topic_id };
        topics.metadata_log.append(std::slice::from_ref(&record)).map_err(|e| self.storage_failure(e))?;
        topics.image.replay(&record);
        let topic = topics.by_name.remove(name).expect("image and logs agree");
        drop(topics);
        for log in topic.partitions {
            let log = Arc::try_unwrap(log).map(|m| m.into_inner().expect("log lock poisoned"));
            match log {
                Ok(log) => {
                    if let Err(e) = log.delete() {
                        // The record is durable: the directory is removed at the next start.
                        tracing::warn!(topic = name, error = %e, "could not remove a deleted topic's directory now; it is removed at the next start");
                    }
                }
                Err(_) => tracing::info!(
                    topic = name,
                    "a request still holds a deleted partition; its directory is removed at the next start"
                ),
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(image)
    }

    /// A new producer id for InitProducerId.
    pub fn allocate_producer_id(&self) -> Result<i64, TopicError> {
        self.check_online().map_err(|reason| TopicError::new(56, reason))?;
        let mut allocator = self.producer_ids.lock().expect("producer id lock poisoned");
        allocator.allocate(&*self.disk).map_err(|e| self.storage_failure(e))
    }

    fn check_online(&self) -> Result<(), String> {
        match self.offline_reason() {
            Some(reason) => Err(format!("log directory is offline: {reason}")),
            None => Ok(()),
        }
    }

    fn storage_failure(&self, error: std::io::Error) -> TopicError {
        let error = LogError::Storage { path: self.config.log_dir.clone(), source: error };
        self.note_log_error(&error);
        TopicError::new(56, error.to_string())
    }

    /// Time-based log work (flush.ms, segment.ms) and, when due, retention.
    pub fn housekeeping(&self, now: i64, retention_due: bool) {
        if self.offline_reason().is_some() {
            return;
        }
        let logs: Vec<SharedLog> = self.topics().by_name.values().flat_map(|t| t.partitions.iter().cloned()).collect();
        for log in logs {
            let mut log = log.lock().expect("log lock poisoned");
            let result =
                log.tick(now).and_then(|()| if retention_due { log.apply_retention(now).map(|_| ()) } else { Ok(()) });
            if let Err(error) = result {
                self.note_log_error(&error);
                return;
            }
        }
    }

    /// The observation hook: per partition, the offsets the invariants bound. One replica, so
    /// the high watermark and the last stable offset are the log end offset.
    pub fn observe(&self) -> Vec<PartitionObservation> {
        let topics = self.topics();
        let mut observed = Vec::new();
        for (name, topic) in &topics.by_name {
            for (index, log) in topic.partitions.iter().enumerate() {
                let log = log.lock().expect("log lock poisoned");
                let log_end_offset = log.log_end_offset().0;
                observed.push(PartitionObservation {
                    topic: name.clone(),
                    partition: index as i32,
                    log_start_offset: log.log_start_offset().0,
                    high_watermark: log_end_offset,
                    last_stable_offset: log_end_offset,
                    log_end_offset,
                });
            }
        }
        observed
    }

    /// The shortest `flush.ms` of any topic, for the housekeeping cadence.
    pub fn shortest_flush_interval_ms(&self) -> Option<i64> {
        self.topics().by_name.values().filter_map(|t| t.log_config.flush_interval_ms).min()
    }

    /// Clean shutdown: flush and close every log.
    pub fn close(&self) -> anyhow::Result<()> {
        let mut topics = self.topics();
        let by_name = std::mem::take(&mut topics.by_name);
        let mut first_error = None;
        for (name, topic) in by_name {
            for (index, log) in topic.partitions.into_iter().enumerate() {
                if let Err(e) = log.lock().expect("log lock poisoned").close() {
                    tracing::error!(topic = name, partition = index, error = %e, "close failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

fn open_topic(
    disk: &dyn Disk,
    shared: &Arc<dyn Disk>,
    config: &BrokerConfig,
    image: &TopicImage,
    now: i64,
) -> anyhow::Result<Topic> {
    let log_config = topic_log_config(&config.log, &image.configs).map_err(|(key, message)| {
        anyhow::anyhow!("topic `{}` has a bad stored config `{key}`: {message}", image.name)
    })?;
    let min_insync_replicas = match image.configs.get("min.insync.replicas") {
        Some(value) => value.parse()?,
        None => config.min_insync_replicas,
    };
    let mut partitions = Vec::new();
    for partition in 0..image.partitions {
        let dir = config.log_dir.join(TopicPartition::new(image.name.clone(), partition).dir_name());
        disk.create_dir_all(&dir)?;
        write_partition_metadata(disk, &dir, image.topic_id)?;
        let mut log = PartitionLog::open(shared.clone(), dir, log_config.clone(), now)?;
        // This broker leads every partition, at epoch 0, until replication arrives.
        log.assign_epoch_start(crate::types::LeaderEpoch(0))?;
        partitions.push(Arc::new(Mutex::new(log)));
    }
    disk.sync_dir(&config.log_dir)?;
    Ok(Topic { image: image.clone(), log_config, min_insync_replicas, partitions })
}

/// Makes a directory's own entry durable in its parent.
pub fn sync_parent(disk: &dyn Disk, dir: &Path) -> std::io::Result<()> {
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => disk.sync_dir(parent),
        _ => Ok(()),
    }
}

/// Reads `meta.properties` (refusing a directory that belongs to another node) or writes it.
fn load_or_create_meta_properties(disk: &dyn Disk, log_dir: &Path, node_id: i32) -> anyhow::Result<String> {
    let path = log_dir.join("meta.properties");
    if disk.exists(&path) {
        let text = String::from_utf8(storage::read_all(disk, &path)?)?;
        let mut stored_node = None;
        let mut cluster_id = None;
        for line in text.lines() {
            if let Some(value) = line.strip_prefix("node.id=") {
                stored_node = value.trim().parse::<i32>().ok();
            }
            if let Some(value) = line.strip_prefix("cluster.id=") {
                cluster_id = Some(value.trim().to_string());
            }
        }
        let (Some(stored_node), Some(cluster_id)) = (stored_node, cluster_id) else {
            anyhow::bail!("{}: missing node.id or cluster.id", path.display());
        };
        if stored_node != node_id {
            anyhow::bail!(
                "{} belongs to node.id={stored_node}, but this broker is node.id={node_id}; use another log.dirs",
                path.display()
            );
        }
        return Ok(cluster_id);
    }
    let cluster_id = encode_cluster_id(random_u128());
    let text = format!("#Written by Gregor. Do not edit.\nversion=1\nnode.id={node_id}\ncluster.id={cluster_id}\n");
    storage::write_atomic(disk, &path, text.as_bytes())?;
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

/// The topic id recorded in a partition directory, if the file is there and readable.
fn read_partition_topic_id(disk: &dyn Disk, dir: &Path) -> Option<u128> {
    let text = String::from_utf8(storage::read_all(disk, &dir.join(PARTITION_METADATA_FILE)).ok()?).ok()?;
    let id = text.lines().find_map(|l| l.strip_prefix("topic_id: "))?;
    u128::from_str_radix(id.trim(), 16).ok()
}

/// Records the topic id in a partition directory (durably) if it is not there yet.
fn write_partition_metadata(disk: &dyn Disk, dir: &Path, topic_id: u128) -> anyhow::Result<()> {
    match read_partition_topic_id(disk, dir) {
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
/// metadata log records them. A partition directory the metadata log knows nothing about is
/// never deleted: it may hold the only copy of acknowledged data (say the metadata log was
/// damaged), so the broker refuses to start and says which directory to look at.
fn remove_deleted_partition_dirs(disk: &dyn Disk, log_dir: &Path, image: &MetadataImage) -> anyhow::Result<()> {
    let mut removed = false;
    for name in disk.list_dir(log_dir)? {
        let path = log_dir.join(&name);
        let Some((topic, partition)) = name.rsplit_once('-') else { continue };
        let Ok(partition) = partition.parse::<i32>() else { continue };
        if topic == "__cluster_metadata" {
            continue;
        }
        let recorded_id = read_partition_topic_id(disk, &path);
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
            _ => anyhow::bail!(
                "{} is a partition directory the metadata log does not know (topic id {}); refusing to start rather than \
                 delete data that may be the only copy. Move it out of log.dirs if it is not needed.",
                path.display(),
                recorded_id.map_or("missing".to_string(), topic_id_text)
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
    fn cluster_id_is_22_url_safe_characters() {
        let id = encode_cluster_id(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(id.len(), 22);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(encode_cluster_id(0), "AAAAAAAAAAAAAAAAAAAAAA");
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert_eq!(validate_topic_name(bad).unwrap_err().code, 17, "{bad}");
        }
    }
}
