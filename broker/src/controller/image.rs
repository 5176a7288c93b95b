//! Metadata records and the image built by replaying them.
//!
//! Every decision the controller makes is one or more [`MetadataRecord`]s; a record's offset is
//! its index in the metadata log. [`MetadataImage::replay`] is the only way to change an image,
//! on the controller (after the records are durable) and on every broker (as the records reach
//! it), so all of them agree on the state at a given offset.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// "No leader" in partition records and on the wire.
pub const NO_LEADER: i32 = -1;

/// One metadata change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A topic was created with this many partitions and these config overrides. Its
    /// `Partition` records follow in the same append.
    Topic { name: String, topic_id: u128, partitions: i32, configs: BTreeMap<String, String> },
    /// A topic (and all its partitions) was deleted.
    RemoveTopic { name: String, topic_id: u128 },
    /// A broker (re)registered. `broker_epoch` is this record's offset; the broker starts
    /// fenced and is unfenced once it has caught up with the metadata log.
    RegisterBroker { node_id: i32, broker_epoch: i64, incarnation: u128, host: String, port: i32 },
    /// The broker missed heartbeats or re-registered: it leads nothing and is in no ISR it can
    /// leave.
    FenceBroker { node_id: i32, broker_epoch: i64 },
    /// The broker heartbeats and has caught up: it may lead and join ISRs.
    UnfenceBroker { node_id: i32, broker_epoch: i64 },
    /// A partition's initial assignment.
    Partition {
        topic_id: u128,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// A new leader and/or ISR. `partition_epoch` is one more than before; `leader_epoch` is one
    /// more than before exactly when the leader changed.
    PartitionChange {
        topic_id: u128,
        partition: i32,
        isr: Vec<i32>,
        #[serde(default)]
        elr: Vec<i32>,
        #[serde(default)]
        restarted: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// Producer ids `[first, first + size)` belong to `node_id`.
    ProducerIds { node_id: i32, first: i64, size: i64 },
}

/// A topic as the metadata log describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: u128,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

/// A partition's replicas, ISR and leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub topic_id: u128,
    pub partition: i32,
    /// Assigned replicas, preferred leader first. Never changes in this version.
    pub replicas: Vec<i32>,
    /// In-sync replicas. Invariant: a non-empty subset of `replicas`; contains `leader` when
    /// there is one.
    pub isr: Vec<i32>,
    /// Eligible leader replicas (KIP-966): members that left the ISR while it was below
    /// `min.insync.replicas`. No acks=all write succeeded without them, so each holds every
    /// acknowledged record. Invariant: disjoint from `isr`; empty while the ISR is at or above
    /// `min.insync.replicas`.
    #[serde(default)]
    pub elr: Vec<i32>,
    /// ISR and ELR members that restarted (registered anew) since they were last in sync with
    /// the leader: they may have lost unflushed records, so an election does not count on them
    /// holding everything acknowledged. A member leaves the list when it rejoins the ISR or is
    /// elected. Invariant: a subset of `isr` and `elr`, without `leader`.
    #[serde(default)]
    pub restarted: Vec<i32>,
    /// [`NO_LEADER`] while no eligible replica is alive.
    pub leader: i32,
    /// Bumped on every leader change (including to and from no leader).
    pub leader_epoch: i32,
    /// Bumped on every change of this partition.
    pub partition_epoch: i32,
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerImage {
    pub node_id: i32,
    pub broker_epoch: i64,
    pub incarnation: u128,
    pub host: String,
    pub port: i32,
    pub fenced: bool,
}

/// The state obtained by replaying every record in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// Topics by name. Invariant: names and ids are unique.
    pub topics: BTreeMap<String, TopicImage>,
    /// Partitions by (topic id, partition index).
    pub partitions: BTreeMap<(u128, i32), PartitionImage>,
    /// Registered brokers by node id.
    pub brokers: BTreeMap<i32, BrokerImage>,
    /// Ids of deleted topics: their leftover directories may be removed.
    pub removed_topic_ids: BTreeSet<u128>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
    /// Number of records replayed: the offset of the next record.
    pub next_offset: i64,
}

impl MetadataImage {
    /// Applies one record. Records were validated before they were written, so a record that
    /// does not fit the image is a bug or corruption and panics.
    /// Replays a record this node's own controller committed: one that does not fit the image
    /// is a bug in the controller, and the process stops (fail-stop).
    pub fn replay(&mut self, record: &MetadataRecord) {
        if let Err(e) = self.try_replay(record) {
            panic!("metadata record {} does not fit the image: {e}: {record:?}", self.next_offset);
        }
    }

    /// Replays a record if it fits the image; otherwise changes nothing and says why. Records
    /// from a peer or a file go through here: a bad one is an error for that exchange or that
    /// file, never a panic.
    pub fn try_replay(&mut self, record: &MetadataRecord) -> Result<(), String> {
        match record {
            MetadataRecord::Topic { name, topic_id, partitions, configs } => {
                ensure(*partitions > 0, || format!("topic {name} with {partitions} partitions"))?;
                ensure(!self.topics.contains_key(name), || format!("topic {name} created twice"))?;
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: *partitions,
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::RemoveTopic { name, topic_id } => {
                let known = self.topics.get(name).ok_or_else(|| format!("removing unknown topic {name}"))?;
                ensure(known.topic_id == *topic_id, || format!("topic {name} removed with the wrong id"))?;
                self.topics.remove(name);
                self.partitions.retain(|(id, _), _| id != topic_id);
                self.removed_topic_ids.insert(*topic_id);
            }
            MetadataRecord::RegisterBroker { node_id, broker_epoch, incarnation, host, port } => {
                if let Some(old) = self.brokers.get(node_id) {
                    ensure(old.broker_epoch < *broker_epoch, || format!("broker {node_id} epoch went back"))?;
                }
                self.brokers.insert(
                    *node_id,
                    BrokerImage {
                        node_id: *node_id,
                        broker_epoch: *broker_epoch,
                        incarnation: *incarnation,
                        host: host.clone(),
                        port: *port,
                        fenced: true,
                    },
                );
            }
            MetadataRecord::FenceBroker { node_id, broker_epoch }
            | MetadataRecord::UnfenceBroker { node_id, broker_epoch } => {
                let broker =
                    self.brokers.get_mut(node_id).ok_or_else(|| format!("fencing unknown broker {node_id}"))?;
                ensure(broker.broker_epoch == *broker_epoch, || format!("fencing a stale registration of {node_id}"))?;
                broker.fenced = matches!(record, MetadataRecord::FenceBroker { .. });
            }
            MetadataRecord::Partition { topic_id, partition, replicas, isr, leader, leader_epoch, partition_epoch } => {
                let topic = self.topic_by_id(*topic_id).ok_or_else(|| "partition of an unknown topic".to_string())?;
                ensure((0..topic.partitions).contains(partition), || {
                    format!("partition {partition} outside its topic")
                })?;
                ensure(!self.partitions.contains_key(&(*topic_id, *partition)), || {
                    "partition created twice".to_string()
                })?;
                let image = PartitionImage {
                    topic_id: *topic_id,
                    partition: *partition,
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    elr: Vec::new(),
                    restarted: Vec::new(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                };
                image.check()?;
                self.partitions.insert((*topic_id, *partition), image);
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                isr,
                elr,
                restarted,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let image = self
                    .partitions
                    .get(&(*topic_id, *partition))
                    .ok_or_else(|| "change of an unknown partition".to_string())?;
                ensure(image.partition_epoch.checked_add(1) == Some(*partition_epoch), || {
                    "partition epoch must grow by one".to_string()
                })?;
                let leader_changed = *leader != image.leader;
                ensure(image.leader_epoch.checked_add(i32::from(leader_changed)) == Some(*leader_epoch), || {
                    "leader epoch vs leader change".to_string()
                })?;
                let mut changed = image.clone();
                changed.isr = isr.clone();
                changed.elr = elr.clone();
                changed.restarted = restarted.clone();
                changed.leader = *leader;
                changed.leader_epoch = *leader_epoch;
                changed.partition_epoch = *partition_epoch;
                changed.check()?;
                self.partitions.insert((*topic_id, *partition), changed);
            }
            MetadataRecord::ProducerIds { first, size, .. } => {
                ensure(*first == self.next_producer_id, || "producer id blocks must be contiguous".to_string())?;
                let next = first.checked_add(*size).filter(|_| *size > 0);
                self.next_producer_id = next.ok_or_else(|| format!("producer id block of size {size}"))?;
            }
        }
        self.next_offset += 1;
        Ok(())
    }

    pub fn topic_by_id(&self, topic_id: u128) -> Option<&TopicImage> {
        self.topics.values().find(|t| t.topic_id == topic_id)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionImage> {
        let topic_id = self.topics.get(topic)?.topic_id;
        self.partitions.get(&(topic_id, partition))
    }

    /// Brokers that are registered and not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn is_live(&self, node_id: i32) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| !b.fenced)
    }
}

impl PartitionImage {
    /// The invariants of the doc comments, checked on every replay.
    fn check(&self) -> Result<(), String> {
        let at = || format!("{}-{}", self.topic_id, self.partition);
        ensure(!self.isr.is_empty(), || format!("empty ISR for {}", at()))?;
        ensure(self.isr.iter().all(|r| self.replicas.contains(r)), || {
            format!("ISR member outside the replicas of {}", at())
        })?;
        ensure(self.leader == NO_LEADER || self.isr.contains(&self.leader), || {
            format!("leader outside the ISR of {}", at())
        })?;
        ensure(self.elr.iter().all(|r| self.replicas.contains(r) && !self.isr.contains(r)), || {
            format!("ELR member in the ISR of {}", at())
        })?;
        let members = |r: &i32| self.isr.contains(r) || self.elr.contains(r);
        ensure(self.restarted.iter().all(|r| members(r) && *r != self.leader), || {
            format!("a restarted member outside the ISR and ELR, or leading, in {}", at())
        })?;
        let distinct: BTreeSet<_> = self.replicas.iter().collect();
        ensure(distinct.len() == self.replicas.len(), || format!("a replica listed twice in {}", at()))
    }
}

fn ensure(condition: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(why())
    }
}

impl crate::replay::Replay for MetadataImage {
    type Record = MetadataRecord;

    fn try_replay(&mut self, record: &MetadataRecord) -> Result<(), String> {
        MetadataImage::try_replay(self, record)
    }
}
