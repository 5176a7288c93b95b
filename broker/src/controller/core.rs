//! The controller's decisions: placement, leadership, ISR changes, broker liveness and producer
//! id blocks. A plain synchronous struct: requests come in through `decide_*` methods with the
//! time passed in; each returns a [`Decision`] (the metadata records and the reply) and changes
//! nothing in the image. [`Controller::run`] commits a decision through the shared runtime
//! ([`crate::replay::Committed`]: append durably, then replay the same records) and returns
//! its reply. Only broker liveness (heartbeat times, log summaries) is soft state, kept in
//! memory as Kafka's controller keeps it.
//!
//! Election rule (Kafka's): the new leader is the first replica, in assignment order, that is in
//! the ISR and live. With `unclean.leader.election.enable=false` a partition whose ISR has no
//! live member stays leaderless (offline) — its ISR keeps the last member that was in sync, so
//! that member leads again when it comes back. With it true, any live replica may lead, and the
//! ISR restarts as that replica alone. Below `min.insync.replicas` the eligible leader replicas
//! (ELR, KIP-966) may lead too: see `Controller::choose_leader`.

use super::image::{MetadataImage, MetadataRecord, PartitionImage, TopicImage, NO_LEADER};
use super::log::MetadataLog;
use crate::log::topic_config::topic_log_config;
use crate::log::LogConfig;
use crate::replay::Committed;
pub use crate::types::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Producer ids handed to a broker per request.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// Records one user operation may write at most (Kafka's `QuorumController.MAX_RECORDS_PER_USER_OP`):
/// a CreateTopics request asking for more is refused with POLICY_VIOLATION before anything is
/// allocated or written.
pub const MAX_RECORDS_PER_USER_OP: usize = 10_000;

/// What the controller reads from its node's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerConfig {
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub session_timeout_ms: i64,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `unclean.leader.election.enable` (topics may override).
    pub unclean_leader_election: bool,
    /// `min.insync.replicas` (topics may override): below it, members leaving the ISR become
    /// eligible leader replicas.
    pub min_insync_replicas: i32,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            session_timeout_ms: 9_000,
            default_replication_factor: 1,
            num_partitions: 1,
            unclean_leader_election: false,
            min_insync_replicas: 1,
        }
    }
}

/// Where a broker's replica of a partition ends, as its heartbeats report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLog {
    pub topic_id: u128,
    pub partition: i32,
    /// The latest leader epoch in its log (-1: none).
    pub latest_epoch: i32,
    pub log_end: i64,
}

/// An ISR change a partition leader proposes (AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartition {
    pub node_id: i32,
    pub broker_epoch: i64,
    pub topic_id: u128,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
    /// The registration (broker epoch) of each member joining the ISR, as the leader saw it
    /// caught up: a member that restarted since is refused (KIP-903).
    pub joining: Vec<(i32, i64)>,
}

/// A topic to create, as CreateTopics (or auto-creation) asks for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// -1: `num.partitions`.
    pub partitions: i32,
    /// -1: `default.replication.factor`.
    pub replication_factor: i16,
    /// Explicit replica lists per partition (then partitions and factor are -1).
    pub assignments: Vec<Vec<i32>>,
    pub configs: BTreeMap<String, String>,
}

/// A created topic, as CreateTopics reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub topic_id: u128,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// A broker's replicas: (topic id, partition) → (latest leader epoch, log end offset).
type LogSummaries = BTreeMap<(u128, i32), (i32, i64)>;

/// The controller: the metadata log, the image replayed from it, and broker liveness.
#[derive(Debug)]
pub struct Controller {
    /// The metadata log, every committed record, and the image replayed from them.
    metadata: Committed<MetadataImage, MetadataLog>,
    pub cluster_id: String,
    config: ControllerConfig,
    /// When each registered broker last heartbeated (not persisted: a restarted controller
    /// gives every broker a full session timeout).
    last_heartbeat_ms: BTreeMap<i32, i64>,
    /// The latest log summary each broker sent (in memory; dropped when it re-registers).
    replica_logs: BTreeMap<i32, LogSummaries>,
}

/// A controller decision: metadata records, and the reply once they are committed.
pub type Decision<T> = crate::replay::Decision<MetadataRecord, T>;

/// Which brokers count as live for a decision whose own records fence or unfence one (so a
/// decision never clones the image to see its own effect).
#[derive(Clone, Copy)]
struct Liveness<'a> {
    image: &'a MetadataImage,
    fenced: Option<i32>,
    unfenced: Option<i32>,
}

impl<'a> Liveness<'a> {
    fn now(image: &'a MetadataImage) -> Self {
        Liveness { image, fenced: None, unfenced: None }
    }

    fn is_live(&self, node_id: i32) -> bool {
        if self.fenced == Some(node_id) {
            return false;
        }
        self.unfenced == Some(node_id) || self.image.is_live(node_id)
    }
}

impl Controller {
    /// Builds the controller from the records of its (already opened) metadata log. A record
    /// that passed its checksum but does not fit the image is an error naming the file and the
    /// record's offset: the controller does not start on a log it cannot replay.
    pub fn new(
        log: MetadataLog,
        records: Vec<MetadataRecord>,
        cluster_id: String,
        config: ControllerConfig,
        now_ms: i64,
    ) -> anyhow::Result<Controller> {
        let path = log.path().to_path_buf();
        let metadata = Committed::<MetadataImage, MetadataLog>::load(log, records).map_err(|(offset, e)| {
            anyhow::anyhow!("{}: metadata record at offset {offset} cannot be replayed: {e}", path.display())
        })?;
        let last_heartbeat_ms = metadata.state().brokers.keys().map(|&id| (id, now_ms)).collect();
        Ok(Controller { metadata, cluster_id, config, last_heartbeat_ms, replica_logs: BTreeMap::new() })
    }

    pub fn image(&self) -> &MetadataImage {
        self.metadata.state()
    }

    /// Committed records from `offset` on, at most `max` of them.
    pub fn records_from(&self, offset: i64, max: usize) -> &[MetadataRecord] {
        self.metadata.records_from(offset, max)
    }

    pub fn next_offset(&self) -> i64 {
        self.metadata.next_offset()
    }

    /// Set once an append to the metadata log failed: nothing more is committed, and the
    /// process must halt (see `server::halt`); the reason names the file.
    pub fn log_failed(&self) -> Option<String> {
        Some(format!("the metadata log failed: {}", self.metadata.failed()?))
    }

    /// Decides with `decide`, commits the records, and returns the reply.
    pub fn run<T>(&mut self, decide: impl FnOnce(&mut Self) -> Result<Decision<T>, ApiError>) -> Result<T, ApiError> {
        let decision = decide(self)?;
        self.commit(decision.records)?;
        Ok(decision.reply)
    }

    /// Appends durably, then replays (see [`crate::replay`]). At most
    /// [`MAX_RECORDS_PER_USER_OP`] records in one commit.
    pub fn commit(&mut self, records: Vec<MetadataRecord>) -> Result<(), ApiError> {
        if records.len() > MAX_RECORDS_PER_USER_OP {
            return Err(ApiError::new(
                ErrorCode::POLICY_VIOLATION,
                format!("{} records exceed the {MAX_RECORDS_PER_USER_OP} one operation may write", records.len()),
            ));
        }
        for record in &records {
            tracing::debug!(?record, "committing");
        }
        self.metadata.commit(records)
    }

    // ------------------------------------------------------------ brokers

    /// A broker (re)registers. The same incarnation registering again gets its epoch back; a new
    /// incarnation (a restart) fences the old registration first — the restarted broker may have
    /// lost unflushed data, so it leaves every ISR it does not hold alone.
    pub fn decide_register(
        &mut self,
        node_id: i32,
        incarnation: u128,
        host: String,
        port: i32,
        now_ms: i64,
    ) -> Result<Decision<i64>, ApiError> {
        self.last_heartbeat_ms.insert(node_id, now_ms);
        let image = self.image();
        let mut records = Vec::new();
        if let Some(old) = image.brokers.get(&node_id) {
            if old.incarnation == incarnation {
                return Ok(Decision::reply(old.broker_epoch));
            }
            if !old.fenced {
                records.push(MetadataRecord::FenceBroker { node_id, broker_epoch: old.broker_epoch });
            }
            let live = Liveness { fenced: Some(node_id), ..Liveness::now(image) };
            records.extend(self.leave_partitions(live, node_id, Departure::Restarted));
        }
        let broker_epoch = self.next_offset() + records.len() as i64;
        records.push(MetadataRecord::RegisterBroker { node_id, broker_epoch, incarnation, host, port });
        self.replica_logs.remove(&node_id);
        tracing::info!(node_id, broker_epoch, "broker registering");
        Ok(Decision::new(records, broker_epoch))
    }

    /// A heartbeat. `caught_up_offset` is how far the broker has replayed the metadata log; a
    /// fenced broker that has caught up with its own registration is unfenced, and leaderless
    /// partitions it can lead elect it. Returns whether the broker is (still) fenced.
    pub fn decide_heartbeat(
        &mut self,
        node_id: i32,
        broker_epoch: i64,
        caught_up_offset: i64,
        logs: &[ReplicaLog],
        now_ms: i64,
    ) -> Result<Decision<bool>, ApiError> {
        let broker = self.check_broker(node_id, broker_epoch)?.clone();
        self.last_heartbeat_ms.insert(node_id, now_ms);
        self.replica_logs
            .insert(node_id, logs.iter().map(|l| ((l.topic_id, l.partition), (l.latest_epoch, l.log_end))).collect());
        if broker.fenced && caught_up_offset > broker.broker_epoch {
            let mut records = vec![MetadataRecord::UnfenceBroker { node_id, broker_epoch }];
            records.extend(self.elect_leaderless(Liveness { unfenced: Some(node_id), ..Liveness::now(self.image()) }));
            tracing::info!(node_id, broker_epoch, "broker unfencing");
            return Ok(Decision::new(records, false));
        }
        Ok(Decision::reply(broker.fenced))
    }

    fn check_broker(&self, node_id: i32, broker_epoch: i64) -> Result<&super::image::BrokerImage, ApiError> {
        match self.image().brokers.get(&node_id) {
            Some(b) if b.broker_epoch == broker_epoch => Ok(b),
            _ => Err(ApiError::new(
                ErrorCode::STALE_BROKER_EPOCH,
                format!("broker {node_id} epoch {broker_epoch} is not its current registration"),
            )),
        }
    }

    /// Fences brokers whose session expired, one decision at a time. Call it often (every
    /// 100 ms or so).
    pub fn tick(&mut self, now_ms: i64) -> Result<(), ApiError> {
        // Each commit fences one broker (or elects); there are at most that many rounds.
        for _ in 0..=self.image().brokers.len() {
            match self.decide_tick(now_ms) {
                Some(decision) => self.commit(decision.records)?,
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// The next thing the passing of time requires: fencing the first broker whose session
    /// expired, else elections for leaderless partitions of unclean topics.
    pub fn decide_tick(&self, now_ms: i64) -> Option<Decision<()>> {
        let image = self.image();
        let never_fence = crate::planted::active(crate::planted::Bug::NeverFenceSilentBroker);
        let expired = image.live_brokers().find(|b| {
            let last = self.last_heartbeat_ms.get(&b.node_id).copied().unwrap_or(now_ms);
            now_ms - last > self.config.session_timeout_ms && !never_fence
        });
        if let Some(broker) = expired {
            let (node_id, broker_epoch) = (broker.node_id, broker.broker_epoch);
            tracing::warn!(node_id, broker_epoch, "broker missed its heartbeats: fencing");
            let mut records = vec![MetadataRecord::FenceBroker { node_id, broker_epoch }];
            let live = Liveness { fenced: Some(node_id), ..Liveness::now(image) };
            records.extend(self.leave_partitions(live, node_id, Departure::Fenced));
            return Some(Decision::new(records, ()));
        }
        // Unclean topics may elect out-of-sync replicas whenever one is live.
        let records = self.elect_leaderless(Liveness::now(image));
        (!records.is_empty()).then(|| Decision::new(records, ()))
    }

    /// The partition changes when `node_id` (not live in `live`) stops serving: it leaves
    /// every ISR it does not hold alone, and the partitions it led elect a new leader. After a
    /// restart it is also marked `restarted` where it stays in the ISR or ELR.
    fn leave_partitions(&self, live: Liveness, node_id: i32, departure: Departure) -> Vec<MetadataRecord> {
        let image = live.image;
        let mut records = Vec::new();
        for partition in image.partitions.values() {
            if !partition.replicas.contains(&node_id) {
                continue;
            }
            let mut isr = partition.isr.clone();
            // Members that stay never left the ISR (a restart takes a broker out of every ISR
            // it is not the last member of), so they hold everything committed.
            let stayed = isr.len() > 1;
            if stayed {
                isr.retain(|&r| r != node_id);
            }
            let mut restarted = partition.restarted.clone();
            if departure == Departure::Restarted && !restarted.contains(&node_id) {
                restarted.push(node_id);
            }
            let elr = self.next_elr(image, partition, &isr);
            let next = Leadership { leader: partition.leader, isr, elr, restarted };
            let elected = if partition.leader == node_id || partition.leader == NO_LEADER {
                self.choose_leader(live, partition, &next, stayed)
            } else {
                Some(next.clone())
            };
            let leaderless = Leadership { leader: NO_LEADER, ..next };
            if let Some((change, _)) = change_record(partition, elected.unwrap_or(leaderless)) {
                records.push(change);
            }
        }
        records
    }

    /// Elections for leaderless partitions (after a broker was unfenced, once recovery
    /// candidates have reported their logs, or for unclean topics).
    fn elect_leaderless(&self, live: Liveness) -> Vec<MetadataRecord> {
        live.image
            .partitions
            .values()
            .filter(|p| p.leader == NO_LEADER)
            .filter_map(|p| {
                let elected = self.choose_leader(live, p, &Leadership::of(p), false)?;
                change_record(p, elected).map(|(change, _)| change)
            })
            .collect()
    }

    /// The ELR after the ISR becomes `new_isr`: members leaving an ISR that is (now) below
    /// `min.insync.replicas` join it; members back in the ISR leave it; it empties once the
    /// ISR is at or above `min.insync.replicas` again.
    fn next_elr(&self, image: &MetadataImage, partition: &PartitionImage, new_isr: &[i32]) -> Vec<i32> {
        if new_isr.len() as i32 >= self.min_insync_replicas(image, partition.topic_id) {
            return Vec::new();
        }
        let mut elr: Vec<i32> = partition.elr.iter().copied().filter(|r| !new_isr.contains(r)).collect();
        for r in &partition.isr {
            if !new_isr.contains(r) && !elr.contains(r) {
                elr.push(*r);
            }
        }
        elr
    }

    fn min_insync_replicas(&self, image: &MetadataImage, topic_id: u128) -> i32 {
        let configured = image.topic_by_id(topic_id).and_then(|t| t.configs.get("min.insync.replicas"));
        configured.and_then(|v| v.parse().ok()).unwrap_or(self.config.min_insync_replicas)
    }

    /// The election rule (see the module docs), given the ISR and ELR the partition will have
    /// (`next`, whose leader is the one leaving or none). `None`: no replica may lead yet.
    ///
    /// With an empty ELR, or an ISR whose members never left it (`isr_stayed`: the leader just
    /// left an ISR of several), the first live ISR member leads (KIP-966: the ISR first; with
    /// strict min ISR every ISR member holds everything committed). With a non-empty ELR the
    /// high watermark has not moved since the first ELR member left the ISR, so every ISR and
    /// ELR member that has not restarted since it was in sync (not in `restarted`) holds
    /// everything committed: the first live one leads, ISR members first. Otherwise every
    /// candidate may have lost unflushed records in a restart: then, as KIP-966's recovery
    /// does, the replica with the longest log (latest epoch, then log end) among ISR and ELR
    /// leads, once every one of them is live and has reported its log. Each holds a prefix of
    /// the same history, so the longest holds every acknowledged record.
    fn choose_leader(
        &self,
        live: Liveness,
        partition: &PartitionImage,
        next: &Leadership,
        isr_stayed: bool,
    ) -> Option<Leadership> {
        let image = live.image;
        let Leadership { isr, elr, restarted, .. } = next;
        let out_of_sync = crate::planted::active(crate::planted::Bug::ElectOutOfSync);
        if elr.is_empty() || isr_stayed {
            let clean = partition.replicas.iter().find(|r| (out_of_sync || isr.contains(r)) && live.is_live(**r));
            if let Some(&leader) = clean {
                let mut isr = isr.clone();
                if !isr.contains(&leader) {
                    isr.push(leader); // only with the planted bug: the leader must be in the ISR
                }
                return Some(Leadership { leader, isr, ..next.clone() });
            }
        }
        if !elr.is_empty() {
            if let Some(elected) = self.elect_in_sync_member(live, partition, next) {
                return Some(elected);
            }
            let candidates: Vec<i32> =
                partition.replicas.iter().copied().filter(|r| isr.contains(r) || elr.contains(r)).collect();
            let key = (partition.topic_id, partition.partition);
            let logs: Option<Vec<(i32, (i32, i64))>> = candidates
                .iter()
                .map(|&r| {
                    let report = self.replica_logs.get(&r)?.get(&key)?;
                    live.is_live(r).then_some((r, *report))
                })
                .collect();
            if let Some(logs) = logs {
                // The longest log; among equals, the first in assignment order.
                let best = logs.iter().fold(None::<(i32, (i32, i64))>, |best, &(r, log)| match best {
                    Some((_, best_log)) if best_log >= log => best,
                    _ => Some((r, log)),
                });
                if let Some((leader, (epoch, log_end))) = best {
                    tracing::warn!(
                        topic_id = partition.topic_id,
                        partition = partition.partition,
                        leader,
                        epoch,
                        log_end,
                        ?candidates,
                        ?restarted,
                        "ISR below min.insync.replicas: electing the longest log among ISR and ELR"
                    );
                    return Some(Leadership::alone(leader));
                }
            }
        }
        if self.unclean_allowed(image, partition.topic_id) {
            if let Some(&leader) = partition.replicas.iter().find(|r| live.is_live(**r)) {
                tracing::warn!(
                    topic_id = partition.topic_id,
                    partition = partition.partition,
                    leader,
                    "unclean leader election: acknowledged data may be lost"
                );
                return Some(Leadership::alone(leader));
            }
        }
        None
    }

    /// With a non-empty ELR: the first live ISR member, else ELR member, in assignment order,
    /// that has not restarted since it was in sync. An ELR member elected becomes the ISR alone;
    /// the ISR members it replaces join the ELR (the ISR stays below min.insync.replicas).
    fn elect_in_sync_member(
        &self,
        live: Liveness,
        partition: &PartitionImage,
        next: &Leadership,
    ) -> Option<Leadership> {
        let Leadership { isr, elr, restarted, .. } = next;
        let in_sync = |r: &&i32| !restarted.contains(r) && live.is_live(**r);
        let ordered = |members: &[i32]| -> Option<i32> {
            partition.replicas.iter().filter(|r| members.contains(r)).find(in_sync).copied()
        };
        if let Some(leader) = ordered(isr) {
            return Some(Leadership { leader, ..next.clone() });
        }
        let leader = ordered(elr)?;
        // ISR and ELR are disjoint.
        let new_elr: Vec<i32> = elr.iter().chain(isr).copied().filter(|&r| r != leader).collect();
        tracing::info!(
            topic_id = partition.topic_id,
            partition = partition.partition,
            leader,
            ?isr,
            ?elr,
            "no ISR member can lead: electing an eligible leader replica that never restarted"
        );
        Some(Leadership { leader, isr: vec![leader], elr: new_elr, restarted: restarted.clone() })
    }

    fn unclean_allowed(&self, image: &MetadataImage, topic_id: u128) -> bool {
        let topic = image.topic_by_id(topic_id);
        match topic.and_then(|t| t.configs.get("unclean.leader.election.enable")) {
            Some(value) => value == "true",
            None => self.config.unclean_leader_election,
        }
    }

    // ------------------------------------------------------------ partitions

    /// AlterPartition: the leader proposes a new ISR (shrink or expand). It must be the current
    /// leader at `leader_epoch`, and `partition_epoch` must be current (no lost update).
    pub fn decide_alter_partition(&self, request: AlterPartition) -> Result<Decision<PartitionImage>, ApiError> {
        let AlterPartition {
            node_id,
            broker_epoch,
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            isr: new_isr,
            joining,
        } = request;
        self.check_broker(node_id, broker_epoch)?;
        let image = self.image();
        let current = image.partitions.get(&(topic_id, partition)).ok_or_else(|| {
            ApiError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, format!("partition {partition} of topic {topic_id:x}"))
        })?;
        if current.leader != node_id {
            return Err(ApiError::new(ErrorCode::NOT_LEADER_OR_FOLLOWER, format!("broker {node_id} does not lead it")));
        }
        if leader_epoch != current.leader_epoch {
            return Err(ApiError::new(
                ErrorCode::FENCED_LEADER_EPOCH,
                format!("leader epoch {leader_epoch}, current {}", current.leader_epoch),
            ));
        }
        if partition_epoch != current.partition_epoch {
            return Err(ApiError::new(
                ErrorCode::INVALID_UPDATE_VERSION,
                format!("partition epoch {partition_epoch}, current {}", current.partition_epoch),
            ));
        }
        let valid = new_isr.contains(&node_id)
            && new_isr.iter().all(|r| current.replicas.contains(r))
            && new_isr.iter().collect::<std::collections::BTreeSet<_>>().len() == new_isr.len();
        if !valid {
            return Err(ApiError::new(
                ErrorCode::INVALID_REQUEST,
                format!("ISR {new_isr:?} for replicas {:?}", current.replicas),
            ));
        }
        if let Some(r) = new_isr.iter().find(|r| !current.isr.contains(r) && !image.is_live(**r)) {
            return Err(ApiError::new(ErrorCode::INELIGIBLE_REPLICA, format!("replica {r} is fenced")));
        }
        for r in new_isr.iter().filter(|r| !current.isr.contains(r)) {
            let seen = joining.iter().find(|(j, _)| j == r).map(|&(_, e)| e);
            let registered = image.brokers.get(r).map(|b| b.broker_epoch);
            if seen.is_none() || seen != registered {
                return Err(ApiError::new(
                    ErrorCode::INELIGIBLE_REPLICA,
                    format!("replica {r} caught up as broker epoch {seen:?} but is registered as {registered:?}"),
                ));
            }
        }
        let elr = self.next_elr(image, current, &new_isr);
        // Every ISR member is in sync with the leader now: none counts as restarted.
        let restarted = current.restarted.iter().copied().filter(|r| !new_isr.contains(r)).collect();
        match change_record(current, Leadership { leader: node_id, isr: new_isr, elr, restarted }) {
            Some((change, changed)) => Ok(Decision::new(vec![change], changed)),
            None => Ok(Decision::reply(current.clone())),
        }
    }

    // ------------------------------------------------------------ topics

    /// Creates one topic. `records_budget` is what is left of the request's
    /// [`MAX_RECORDS_PER_USER_OP`]; the topic's records are taken from it.
    pub fn decide_create_topic(
        &self,
        topic: NewTopic,
        validate_only: bool,
        topic_id: u128,
        records_budget: &mut usize,
    ) -> Result<Decision<CreatedTopic>, ApiError> {
        validate_topic_name(&topic.name)?;
        let image = self.image();
        if image.topics.contains_key(&topic.name) {
            return Err(ApiError::new(
                ErrorCode::TOPIC_ALREADY_EXISTS,
                format!("topic `{}` already exists", topic.name),
            ));
        }
        topic_log_config(&LogConfig::default(), &topic.configs)
            .map_err(|(key, message)| ApiError::new(ErrorCode::INVALID_CONFIG, format!("config `{key}`: {message}")))?;
        let live: Vec<i32> = image.live_brokers().map(|b| b.node_id).collect();
        let assignments = if topic.assignments.is_empty() {
            let partitions = if topic.partitions == -1 { self.config.num_partitions } else { topic.partitions };
            if partitions <= 0 {
                return Err(ApiError::new(
                    ErrorCode::INVALID_PARTITIONS,
                    format!("number of partitions must be positive, got {partitions}"),
                ));
            }
            take_records(records_budget, 1 + partitions as usize)?;
            let factor = if topic.replication_factor == -1 {
                self.config.default_replication_factor
            } else {
                topic.replication_factor
            };
            if factor <= 0 || factor as usize > live.len() {
                return Err(ApiError::new(
                    ErrorCode::INVALID_REPLICATION_FACTOR,
                    format!("replication factor {factor} needs that many live brokers; {} are live", live.len()),
                ));
            }
            // Round-robin placement, starting one broker further for each topic.
            let start = image.topics.len() + image.removed_topic_ids.len();
            (0..partitions as usize)
                .map(|p| (0..factor as usize).map(|i| live[(start + p + i) % live.len()]).collect())
                .collect()
        } else {
            if topic.partitions != -1 || topic.replication_factor != -1 {
                return Err(ApiError::new(
                    ErrorCode::INVALID_REQUEST,
                    "give either assignments or num_partitions/replication_factor, not both",
                ));
            }
            take_records(records_budget, 1 + topic.assignments.len())?;
            let factor = topic.assignments[0].len();
            for replicas in &topic.assignments {
                let distinct: std::collections::BTreeSet<_> = replicas.iter().collect();
                if replicas.is_empty() || replicas.len() != factor || distinct.len() != factor {
                    return Err(ApiError::new(
                        ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                        "every partition needs the same number of distinct replicas",
                    ));
                }
                if let Some(r) = replicas.iter().find(|r| !image.brokers.contains_key(r)) {
                    return Err(ApiError::new(
                        ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                        format!("broker {r} is not registered"),
                    ));
                }
            }
            topic.assignments.clone()
        };
        let factor = assignments[0].len() as i16;
        if validate_only {
            return Ok(Decision::reply(CreatedTopic {
                topic_id: 0,
                partitions: assignments.len() as i32,
                replication_factor: factor,
                configs: topic.configs,
            }));
        }
        assert!(topic_id != 0 && image.topic_by_id(topic_id).is_none() && !image.removed_topic_ids.contains(&topic_id));
        let mut records = vec![MetadataRecord::Topic {
            name: topic.name.clone(),
            topic_id,
            partitions: assignments.len() as i32,
            configs: topic.configs.clone(),
        }];
        for (partition, replicas) in assignments.iter().enumerate() {
            let leader = replicas.iter().copied().find(|r| image.is_live(*r)).unwrap_or(NO_LEADER);
            records.push(MetadataRecord::Partition {
                topic_id,
                partition: partition as i32,
                replicas: replicas.clone(),
                isr: replicas.clone(),
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
            });
        }
        tracing::info!(topic = topic.name, partitions = assignments.len(), factor, "creating topic");
        let created = CreatedTopic {
            topic_id,
            partitions: assignments.len() as i32,
            replication_factor: factor,
            configs: topic.configs,
        };
        Ok(Decision::new(records, created))
    }

    pub fn decide_delete_topic(&self, name: &str) -> Result<Decision<TopicImage>, ApiError> {
        let Some(topic) = self.image().topics.get(name).cloned() else {
            return Err(ApiError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, format!("topic `{name}` does not exist")));
        };
        tracing::info!(topic = name, "deleting topic");
        let records = vec![MetadataRecord::RemoveTopic { name: name.to_string(), topic_id: topic.topic_id }];
        Ok(Decision::new(records, topic))
    }

    /// A block of producer ids for `node_id`.
    pub fn decide_allocate_producer_ids(
        &self,
        node_id: i32,
        broker_epoch: i64,
    ) -> Result<Decision<(i64, i64)>, ApiError> {
        self.check_broker(node_id, broker_epoch)?;
        let first = self.image().next_producer_id;
        let records = vec![MetadataRecord::ProducerIds { node_id, first, size: PRODUCER_ID_BLOCK_SIZE }];
        Ok(Decision::new(records, (first, PRODUCER_ID_BLOCK_SIZE)))
    }
}

/// Kafka's rule for topic names.
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    const TOPIC_NAME_BYTES_MAX: usize = 249;
    let legal = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
    if name.is_empty() || name == "." || name == ".." || name.len() > TOPIC_NAME_BYTES_MAX || !legal {
        return Err(ApiError::new(
            ErrorCode::INVALID_TOPIC_EXCEPTION,
            format!("invalid topic name `{name}`: use 1-249 of [a-zA-Z0-9._-], not `.` or `..`"),
        ));
    }
    Ok(())
}

/// Takes `needed` records from a request's budget, or refuses the operation.
fn take_records(budget: &mut usize, needed: usize) -> Result<(), ApiError> {
    if needed > *budget {
        return Err(ApiError::new(
            ErrorCode::POLICY_VIOLATION,
            format!(
                "{needed} metadata records would exceed what one request may write ({MAX_RECORDS_PER_USER_OP}; {} left)",
                *budget
            ),
        ));
    }
    *budget -= needed;
    Ok(())
}

/// Why a broker stops serving its partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Departure {
    /// It missed its heartbeats: its log is as it was.
    Fenced,
    /// It registered anew: it may have lost unflushed records.
    Restarted,
}

/// A partition's leadership as a decision leaves it.
#[derive(Clone, Debug, PartialEq)]
struct Leadership {
    leader: i32,
    isr: Vec<i32>,
    elr: Vec<i32>,
    /// See [`PartitionImage::restarted`].
    restarted: Vec<i32>,
}

impl Leadership {
    fn of(partition: &PartitionImage) -> Self {
        Leadership {
            leader: partition.leader,
            isr: partition.isr.clone(),
            elr: partition.elr.clone(),
            restarted: partition.restarted.clone(),
        }
    }

    /// `leader` alone in the ISR, with the history it holds as the one that counts.
    fn alone(leader: i32) -> Self {
        Leadership { leader, isr: vec![leader], elr: Vec::new(), restarted: Vec::new() }
    }
}

/// The record that moves `partition` to `next`, and the partition after it, if anything
/// changes. `restarted` keeps only ISR and ELR members other than the leader (its invariant).
fn change_record(partition: &PartitionImage, next: Leadership) -> Option<(MetadataRecord, PartitionImage)> {
    let Leadership { leader, isr, elr, mut restarted } = next;
    restarted.retain(|r| (isr.contains(r) || elr.contains(r)) && *r != leader);
    if leader == partition.leader && isr == partition.isr && elr == partition.elr && restarted == partition.restarted {
        return None;
    }
    let changed = PartitionImage {
        isr,
        elr,
        restarted,
        leader,
        leader_epoch: partition.leader_epoch + i32::from(leader != partition.leader),
        partition_epoch: partition.partition_epoch + 1,
        ..partition.clone()
    };
    let record = MetadataRecord::PartitionChange {
        topic_id: changed.topic_id,
        partition: changed.partition,
        isr: changed.isr.clone(),
        elr: changed.elr.clone(),
        restarted: changed.restarted.clone(),
        leader: changed.leader,
        leader_epoch: changed.leader_epoch,
        partition_epoch: changed.partition_epoch,
    };
    Some((record, changed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mem::MemDisk;
    use std::path::Path;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert_eq!(validate_topic_name(bad).unwrap_err().code, ErrorCode::INVALID_TOPIC_EXCEPTION, "{bad}");
        }
    }

    fn controller(unclean: bool) -> Controller {
        let disk = MemDisk::new();
        let (log, records) = MetadataLog::open(&disk, Path::new("/meta")).unwrap();
        let config =
            ControllerConfig { unclean_leader_election: unclean, session_timeout_ms: 1_000, ..Default::default() };
        let mut c = Controller::new(log, records, "cluster".to_string(), config, 0).unwrap();
        for node in 1..=3 {
            let epoch = c.run(|c| c.decide_register(node, node as u128, "h".to_string(), 9000 + node, 0)).unwrap();
            c.run(|c| c.decide_heartbeat(node, epoch, c.next_offset(), &[], 0)).unwrap();
        }
        c
    }

    #[test]
    fn a_decision_changes_nothing_until_it_is_committed_and_then_its_records_are_the_change() {
        let mut c = controller(false);
        let (image, end) = (c.image().clone(), c.next_offset());
        let topic = NewTopic {
            name: "t".to_string(),
            partitions: 2,
            replication_factor: 2,
            assignments: vec![],
            configs: BTreeMap::new(),
        };
        let decision = c.decide_create_topic(topic, false, 7, &mut { MAX_RECORDS_PER_USER_OP }).unwrap();
        assert_eq!((c.image(), c.next_offset()), (&image, end), "deciding wrote nothing");
        assert_eq!(decision.records.len(), 3, "the topic and its two partitions");
        let mut replayed = image.clone();
        decision.records.iter().for_each(|r| replayed.replay(r));
        c.commit(decision.records).unwrap();
        assert_eq!(c.image(), &replayed, "commit is exactly the replay of the decided records");
        assert_eq!(c.records_from(end, 10).len(), 3);
        // A fencing decision sees its own effect without cloning the image: the fenced leader's
        // partitions elect another leader in the same decision.
        let fencing = c.decide_tick(10_000).expect("every session expired");
        assert!(matches!(fencing.records[0], MetadataRecord::FenceBroker { .. }));
    }

    /// An AlterPartition request, positionally.
    #[allow(clippy::too_many_arguments)]
    fn alter(
        node_id: i32,
        broker_epoch: i64,
        topic_id: u128,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
        joining: &[(i32, i64)],
    ) -> AlterPartition {
        let joining = joining.to_vec();
        AlterPartition { node_id, broker_epoch, topic_id, partition, leader_epoch, partition_epoch, isr, joining }
    }

    /// Every broker's current registration, as a leader that saw them all catch up would send.
    fn joining(c: &Controller) -> Vec<(i32, i64)> {
        c.image().brokers.values().map(|b| (b.node_id, b.broker_epoch)).collect()
    }

    fn epoch(c: &Controller, node: i32) -> i64 {
        c.image().brokers[&node].broker_epoch
    }

    fn create(c: &mut Controller, unclean: Option<bool>) -> PartitionImage {
        let mut configs = BTreeMap::new();
        if let Some(u) = unclean {
            configs.insert("unclean.leader.election.enable".to_string(), u.to_string());
        }
        let topic =
            NewTopic { name: "t".to_string(), partitions: 1, replication_factor: 3, assignments: vec![], configs };
        let created = c.run(|c| c.decide_create_topic(topic, false, 7, &mut { MAX_RECORDS_PER_USER_OP })).unwrap();
        c.image().partitions[&(created.topic_id, 0)].clone()
    }

    #[test]
    fn a_topic_with_more_partitions_than_one_operation_may_write_is_refused_and_the_controller_goes_on() {
        let mut c = controller(false);
        let end = c.next_offset();
        let huge = NewTopic {
            name: "huge".to_string(),
            partitions: i32::MAX,
            replication_factor: 1,
            assignments: vec![],
            configs: BTreeMap::new(),
        };
        let mut budget = MAX_RECORDS_PER_USER_OP;
        let error = c.run(|c| c.decide_create_topic(huge, false, 9, &mut budget)).unwrap_err();
        assert_eq!(error.code, ErrorCode::POLICY_VIOLATION, "{error}");
        assert_eq!(c.next_offset(), end, "nothing was written");
        // Two topics that fit alone but not together in one request.
        let half = |name: &str| NewTopic {
            name: name.to_string(),
            partitions: 6_000,
            replication_factor: 1,
            assignments: vec![],
            configs: BTreeMap::new(),
        };
        c.run(|c| c.decide_create_topic(half("a"), false, 10, &mut budget)).unwrap();
        assert_eq!(
            c.run(|c| c.decide_create_topic(half("b"), false, 11, &mut budget)).unwrap_err().code,
            ErrorCode::POLICY_VIOLATION
        );
        // Not a dead disk: the next request is served.
        c.run(|c| c.decide_create_topic(half("b"), false, 11, &mut { MAX_RECORDS_PER_USER_OP })).unwrap();
    }

    #[test]
    fn records_too_large_for_one_metadata_frame_are_a_request_error_not_a_failed_disk() {
        let mut c = controller(false);
        let end = c.next_offset();
        let wide = |partition| MetadataRecord::Partition {
            topic_id: 1,
            partition,
            replicas: vec![1_000_000; 1_000],
            isr: vec![1_000_000; 1_000],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        };
        let error = c.commit((0..2_000).map(wide).collect()).unwrap_err();
        assert_eq!(error.code, ErrorCode::POLICY_VIOLATION, "{error}");
        assert!(error.message.contains("more than one metadata frame holds"), "{error}");
        assert_eq!(c.next_offset(), end);
        create(&mut c, None);
    }

    /// Heartbeats from every broker but `silent` until `until_ms`.
    fn heartbeat_all_but(c: &mut Controller, silent: &[i32], until_ms: i64) {
        heartbeat_all_but_between(c, silent, 0, until_ms);
    }

    fn heartbeat_all_but_between(c: &mut Controller, silent: &[i32], from_ms: i64, until_ms: i64) {
        let mut now = from_ms;
        while now <= until_ms {
            for node in 1..=3 {
                if !silent.contains(&node) {
                    let e = epoch(c, node);
                    c.run(|c| c.decide_heartbeat(node, e, c.next_offset(), &[], now)).unwrap();
                }
            }
            c.tick(now).unwrap();
            now += 100;
        }
    }

    #[test]
    fn a_silent_leader_is_fenced_and_an_isr_member_takes_over_at_the_next_epoch() {
        let mut c = controller(false);
        let p = create(&mut c, None);
        assert_eq!((p.leader, p.leader_epoch), (p.replicas[0], 0));
        heartbeat_all_but(&mut c, &[p.leader], 2_000);
        let after = &c.image().partitions[&(7, 0)];
        assert!(c.image().brokers[&p.leader].fenced);
        assert_eq!(after.leader, p.replicas[1]);
        assert_eq!(after.leader_epoch, 1);
        assert!(!after.isr.contains(&p.leader));
    }

    #[test]
    fn with_no_live_isr_member_the_partition_stays_offline_until_the_last_one_returns() {
        let mut c = controller(false);
        let p = create(&mut c, None);
        let mut isr = p.isr.clone();
        isr.retain(|&r| r == p.leader);
        c.run(|c| c.decide_alter_partition(alter(p.leader, epoch(c, p.leader), 7, 0, 0, 0, isr, &joining(c)))).unwrap();
        heartbeat_all_but(&mut c, &[p.leader], 2_000);
        let offline = c.image().partitions[&(7, 0)].clone();
        assert_eq!(offline.leader, NO_LEADER, "an out-of-sync replica must not be elected");
        assert_eq!(offline.isr, vec![p.leader], "the last in-sync member stays in the ISR");
        // The last ISR member comes back (same incarnation: a pause, not a restart).
        let e = epoch(&c, p.leader);
        c.run(|c| c.decide_heartbeat(p.leader, e, c.next_offset(), &[], 2_100)).unwrap();
        c.run(|c| c.decide_heartbeat(p.leader, e, c.next_offset(), &[], 2_100)).unwrap();
        let back = &c.image().partitions[&(7, 0)];
        assert_eq!(back.leader, p.leader);
        assert_eq!(back.leader_epoch, offline.leader_epoch + 1);
    }

    #[test]
    fn unclean_election_elects_an_out_of_sync_replica_when_enabled() {
        let mut c = controller(false);
        let p = create(&mut c, Some(true));
        c.run(|c| {
            c.decide_alter_partition(alter(p.leader, epoch(c, p.leader), 7, 0, 0, 0, vec![p.leader], &joining(c)))
        })
        .unwrap();
        heartbeat_all_but(&mut c, &[p.leader], 2_000);
        let after = &c.image().partitions[&(7, 0)];
        assert_eq!(after.leader, p.replicas[1]);
        assert_eq!(after.isr, vec![p.replicas[1]]);
    }

    #[test]
    fn alter_partition_refuses_stale_epochs_and_fenced_joiners() {
        let mut c = controller(false);
        let p = create(&mut c, None);
        let leader_epoch = epoch(&c, p.leader);
        let shrunk = vec![p.replicas[0], p.replicas[1]];
        let changed = c
            .run(|c| c.decide_alter_partition(alter(p.leader, leader_epoch, 7, 0, 0, 0, shrunk, &joining(c))))
            .unwrap();
        assert_eq!(changed.partition_epoch, 1);
        // The same proposal again: its partition epoch is stale.
        let err = c
            .run(|c| {
                c.decide_alter_partition(alter(p.leader, leader_epoch, 7, 0, 0, 0, p.replicas.clone(), &joining(c)))
            })
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::INVALID_UPDATE_VERSION);
        let err = c
            .run(|c| {
                c.decide_alter_partition(alter(
                    p.replicas[1],
                    epoch(c, p.replicas[1]),
                    7,
                    0,
                    0,
                    1,
                    p.replicas.clone(),
                    &joining(c),
                ))
            })
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::NOT_LEADER_OR_FOLLOWER);
        heartbeat_all_but(&mut c, &[p.replicas[2]], 2_000);
        let err = c
            .run(|c| {
                c.decide_alter_partition(alter(p.leader, leader_epoch, 7, 0, 0, 1, p.replicas.clone(), &joining(c)))
            })
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::INELIGIBLE_REPLICA);
    }

    /// A controller with one topic (id 7): one partition, three replicas, min ISR 2.
    fn controller_with_min_isr_2() -> (Controller, PartitionImage) {
        let mut c = controller(false);
        let configs = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
        let topic =
            NewTopic { name: "t".to_string(), partitions: 1, replication_factor: 3, assignments: vec![], configs };
        c.run(|c| c.decide_create_topic(topic, false, 7, &mut { MAX_RECORDS_PER_USER_OP })).unwrap();
        let p = c.image().partitions[&(7, 0)].clone();
        (c, p)
    }

    /// Found by the simulator's leader-takeover check (swarm-replicated, 16 seeds in 100): the
    /// leader of ISR [a, b] died, min ISR 2; the controller waited for `a` to come back and
    /// report its log before electing anyone. `b` never left the ISR and (strict min ISR) holds
    /// everything committed: it takes over at once, and `a` waits in the ELR.
    #[test]
    fn below_min_isr_a_member_that_stayed_in_the_isr_takes_over_at_once() {
        let (mut c, p) = controller_with_min_isr_2();
        let (a, b) = (p.replicas[0], p.replicas[1]);
        c.run(|c| c.decide_alter_partition(alter(a, epoch(c, a), 7, 0, 0, 0, vec![a, b], &joining(c)))).unwrap();
        heartbeat_all_but(&mut c, &[a], 2_000);
        let taken_over = c.image().partitions[&(7, 0)].clone();
        assert_eq!((taken_over.leader, taken_over.isr.clone(), taken_over.elr.clone()), (b, vec![b], vec![a]));
    }

    fn leadership(c: &Controller) -> (i32, Vec<i32>, Vec<i32>, Vec<i32>) {
        let p = &c.image().partitions[&(7, 0)];
        (p.leader, p.isr.clone(), p.elr.clone(), p.restarted.clone())
    }

    fn report(c: &mut Controller, node: i32, latest_epoch: i32, log_end: i64, now_ms: i64) {
        let log = ReplicaLog { topic_id: 7, partition: 0, latest_epoch, log_end };
        let e = epoch(c, node);
        c.run(|c| c.decide_heartbeat(node, e, c.next_offset(), &[log], now_ms)).unwrap();
        c.tick(now_ms).unwrap();
    }

    /// `a` leads ISR [a, b] (min ISR 2) and `third` lags outside; then `b` goes silent for
    /// 2 s: the ISR falls to [a] and `b` becomes an eligible leader replica.
    fn controller_with_b_eligible() -> (Controller, [i32; 3]) {
        let (mut c, p) = controller_with_min_isr_2();
        let (a, b, third) = (p.replicas[0], p.replicas[1], p.replicas[2]);
        c.run(|c| c.decide_alter_partition(alter(a, epoch(c, a), 7, 0, 0, 0, vec![a, b], &joining(c)))).unwrap();
        heartbeat_all_but(&mut c, &[b], 2_000);
        assert_eq!(leadership(&c), (a, vec![a], vec![b], vec![]));
        (c, [a, b, third])
    }

    /// Found by the deep sweep (swarm-replicated seeds 27964, 28886, 29984): `b` was fenced for
    /// missed heartbeats and came back without restarting, still in the ELR; then the last
    /// ISR member died, and the controller waited for it to return before electing anyone.
    /// `b` holds everything committed (the high watermark has not moved since it left the
    /// ISR) and lost nothing: it takes over at once, and `a` waits in the ELR.
    #[test]
    fn below_min_isr_an_eligible_replica_that_never_restarted_takes_over_from_a_dead_last_member() {
        let (mut c, [a, b, _]) = controller_with_b_eligible();
        heartbeat_all_but_between(&mut c, &[a], 2_100, 4_000);
        assert!(c.image().brokers[&a].fenced);
        assert_eq!(leadership(&c), (b, vec![b], vec![a], vec![]));
    }

    #[test]
    fn below_min_isr_a_restarted_eligible_replica_waits_for_the_last_member() {
        let (mut c, [a, b, third]) = controller_with_b_eligible();
        c.run(|c| c.decide_register(b, 99, "h".to_string(), 1, 2_100)).unwrap();
        assert_eq!(leadership(&c), (a, vec![a], vec![b], vec![b]), "b restarted: it may have lost records");
        heartbeat_all_but_between(&mut c, &[a], 2_100, 4_000);
        assert_eq!(leadership(&c).0, NO_LEADER, "b is live but may lack acknowledged records");
        // `a` comes back without restarting: it never left the ISR, so it leads again.
        heartbeat_all_but_between(&mut c, &[third], 4_100, 4_500);
        assert_eq!(leadership(&c), (a, vec![a], vec![b], vec![b]));
    }

    #[test]
    fn below_min_isr_a_restarted_last_member_waits_for_an_eligible_replica_that_never_restarted() {
        let (mut c, [a, b, third]) = controller_with_b_eligible();
        // `a`, the last ISR member, restarts with an empty disk; `b` is still silent.
        c.run(|c| c.decide_register(a, 1234, "h".to_string(), 1, 2_100)).unwrap();
        report(&mut c, a, -1, 0, 2_200);
        report(&mut c, third, 0, 40, 2_200);
        assert_eq!(leadership(&c), (NO_LEADER, vec![a], vec![b], vec![a]), "waits for b");
        report(&mut c, b, 0, 100, 2_300);
        assert_eq!(leadership(&c), (b, vec![b], vec![a], vec![a]));
    }

    #[test]
    fn below_min_isr_when_every_candidate_restarted_the_longest_log_leads_once_all_have_reported() {
        let (mut c, [a, b, _]) = controller_with_b_eligible();
        c.run(|c| c.decide_register(a, 1234, "h".to_string(), 1, 2_100)).unwrap();
        c.run(|c| c.decide_register(b, 5678, "h".to_string(), 1, 2_100)).unwrap();
        assert_eq!(leadership(&c), (NO_LEADER, vec![a], vec![b], vec![a, b]));
        report(&mut c, b, 0, 100, 2_200);
        assert_eq!(leadership(&c).0, NO_LEADER, "waits for every ISR and ELR member");
        report(&mut c, a, 0, 60, 2_300);
        assert_eq!(leadership(&c), (b, vec![b], vec![], vec![]));
    }

    #[test]
    fn a_follower_that_restarted_since_it_caught_up_may_not_join_the_isr() {
        let mut c = controller(false);
        let p = create(&mut c, None);
        let (leader, follower) = (p.replicas[0], p.replicas[1]);
        let shrunk: Vec<i32> = p.isr.iter().copied().filter(|&r| r != follower).collect();
        c.run(|c| c.decide_alter_partition(alter(leader, epoch(c, leader), 7, 0, 0, 0, shrunk, &[]))).unwrap();
        let seen_before_restart = joining(&c);
        c.run(|c| c.decide_register(follower, 4242, "h".to_string(), 1, 10)).unwrap();
        let e = epoch(&c, follower);
        c.run(|c| c.decide_heartbeat(follower, e, c.next_offset(), &[], 10)).unwrap();
        let current = c.image().partitions[&(7, 0)].clone();
        let err = c
            .run(|c| {
                c.decide_alter_partition(alter(
                    leader,
                    epoch(c, leader),
                    7,
                    0,
                    0,
                    current.partition_epoch,
                    p.isr.clone(),
                    &seen_before_restart,
                ))
            })
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::INELIGIBLE_REPLICA);
        let ok = c.run(|c| {
            c.decide_alter_partition(alter(
                leader,
                epoch(c, leader),
                7,
                0,
                0,
                current.partition_epoch,
                p.isr.clone(),
                &joining(c),
            ))
        });
        assert_eq!(ok.unwrap().isr.len(), 3);
    }

    #[test]
    fn a_restarted_broker_leaves_the_isr_and_loses_leadership() {
        let mut c = controller(false);
        let p = create(&mut c, None);
        let new_epoch = c.run(|c| c.decide_register(p.leader, 99, "h".to_string(), 1, 10)).unwrap();
        let after = &c.image().partitions[&(7, 0)];
        assert_ne!(after.leader, p.leader);
        assert!(!after.isr.contains(&p.leader));
        assert!(c.image().brokers[&p.leader].fenced);
        assert!(new_epoch > 0);
    }

    #[test]
    fn the_image_replays_to_the_same_state_after_reopen() {
        let disk = MemDisk::new();
        let (log, records) = MetadataLog::open(&disk, Path::new("/meta")).unwrap();
        let mut c = Controller::new(log, records, "c".to_string(), ControllerConfig::default(), 0).unwrap();
        let e = c.run(|c| c.decide_register(1, 1, "h".to_string(), 1, 0)).unwrap();
        c.run(|c| c.decide_heartbeat(1, e, c.next_offset(), &[], 0)).unwrap();
        let topic = NewTopic {
            name: "t".to_string(),
            partitions: 2,
            replication_factor: 1,
            assignments: vec![],
            configs: BTreeMap::new(),
        };
        c.run(|c| c.decide_create_topic(topic, false, 5, &mut { MAX_RECORDS_PER_USER_OP })).unwrap();
        c.run(|c| c.decide_allocate_producer_ids(1, e)).unwrap();
        let (log, records) = MetadataLog::open(&disk, Path::new("/meta")).unwrap();
        let reopened = Controller::new(log, records, "c".to_string(), ControllerConfig::default(), 0).unwrap();
        assert_eq!(reopened.image(), c.image());
        assert_eq!(reopened.image().next_producer_id, PRODUCER_ID_BLOCK_SIZE);
    }

    #[test]
    fn a_metadata_log_whose_record_passes_its_crc_but_does_not_replay_is_an_error_naming_file_and_offset() {
        let disk = MemDisk::new();
        let (mut log, _) = MetadataLog::open(&disk, Path::new("/meta")).unwrap();
        log.append(&[MetadataRecord::ProducerIds { node_id: 1, first: 0, size: 10 }]).unwrap();
        log.append(&[MetadataRecord::RemoveTopic { name: "never-created".to_string(), topic_id: 3 }]).unwrap();
        let (log, records) = MetadataLog::open(&disk, Path::new("/meta")).unwrap();
        let error = Controller::new(log, records, "c".to_string(), ControllerConfig::default(), 0).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("/meta/metadata.log") && message.contains("offset 1"), "{message}");
        assert!(message.contains("removing unknown topic never-created"), "{message}");
    }

    #[test]
    fn a_record_that_does_not_fit_changes_nothing_in_the_image() {
        let mut image = MetadataImage::default();
        image.try_replay(&MetadataRecord::ProducerIds { node_id: 1, first: 0, size: 10 }).unwrap();
        let before = image.clone();
        let bad = [
            MetadataRecord::ProducerIds { node_id: 1, first: 10, size: i64::MAX },
            MetadataRecord::FenceBroker { node_id: 4, broker_epoch: 1 },
            MetadataRecord::PartitionChange {
                topic_id: 1,
                partition: 0,
                isr: vec![],
                elr: vec![],
                restarted: vec![],
                leader: 1,
                leader_epoch: i32::MAX,
                partition_epoch: i32::MAX,
            },
            MetadataRecord::Topic { name: "t".to_string(), topic_id: 1, partitions: -5, configs: BTreeMap::new() },
        ];
        for record in &bad {
            assert!(image.try_replay(record).is_err(), "{record:?}");
            assert_eq!(image, before, "{record:?}");
        }
    }
}
