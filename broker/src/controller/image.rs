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
    pub fn replay(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::Topic { name, topic_id, partitions, configs } => {
                assert!(*partitions > 0, "topic {name} with {partitions} partitions");
                let previous = self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: *partitions,
                        configs: configs.clone(),
                    },
                );
                assert!(previous.is_none(), "topic {name} created twice");
            }
            MetadataRecord::RemoveTopic { name, topic_id } => {
                let removed = self.topics.remove(name).expect("removing an unknown topic");
                assert_eq!(removed.topic_id, *topic_id, "topic {name} removed with the wrong id");
                self.partitions.retain(|(id, _), _| id != topic_id);
                self.removed_topic_ids.insert(*topic_id);
            }
            MetadataRecord::RegisterBroker { node_id, broker_epoch, incarnation, host, port } => {
                if let Some(old) = self.brokers.get(node_id) {
                    assert!(old.broker_epoch < *broker_epoch, "broker {node_id} epoch went back");
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
                let broker = self.brokers.get_mut(node_id).expect("fencing an unknown broker");
                assert_eq!(broker.broker_epoch, *broker_epoch, "fencing a stale registration of {node_id}");
                broker.fenced = matches!(record, MetadataRecord::FenceBroker { .. });
            }
            MetadataRecord::Partition { topic_id, partition, replicas, isr, leader, leader_epoch, partition_epoch } => {
                assert!(self.topic_by_id(*topic_id).is_some(), "partition of an unknown topic");
                let image = PartitionImage {
                    topic_id: *topic_id,
                    partition: *partition,
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    elr: Vec::new(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                };
                image.check();
                assert!(self.partitions.insert((*topic_id, *partition), image).is_none(), "partition created twice");
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                isr,
                elr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let image = self.partitions.get_mut(&(*topic_id, *partition)).expect("change of an unknown partition");
                assert_eq!(*partition_epoch, image.partition_epoch + 1, "partition epoch must grow by one");
                let leader_changed = *leader != image.leader;
                assert_eq!(
                    *leader_epoch,
                    image.leader_epoch + i32::from(leader_changed),
                    "leader epoch vs leader change"
                );
                image.isr = isr.clone();
                image.elr = elr.clone();
                image.leader = *leader;
                image.leader_epoch = *leader_epoch;
                image.partition_epoch = *partition_epoch;
                image.check();
            }
            MetadataRecord::ProducerIds { first, size, .. } => {
                assert_eq!(*first, self.next_producer_id, "producer id blocks must be contiguous");
                assert!(*size > 0);
                self.next_producer_id = first + size;
            }
        }
        self.next_offset += 1;
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
    /// The invariants of the doc comments, asserted after every replay.
    fn check(&self) {
        assert!(!self.isr.is_empty(), "empty ISR for {}-{}", self.topic_id, self.partition);
        assert!(self.isr.iter().all(|r| self.replicas.contains(r)), "ISR member outside the replicas");
        assert!(self.leader == NO_LEADER || self.isr.contains(&self.leader), "leader outside the ISR");
        assert!(self.elr.iter().all(|r| self.replicas.contains(r) && !self.isr.contains(r)), "ELR member in the ISR");
        let distinct: BTreeSet<_> = self.replicas.iter().collect();
        assert_eq!(distinct.len(), self.replicas.len(), "a replica listed twice");
    }
}
