//! Checks on the controller's committed metadata records:
//! - leader-from-isr: every leader the controller elected was in the ISR or the ELR (members
//!   that left an ISR below min.insync.replicas, KIP-966) just before, unless its topic allows
//!   unclean election. Judged by replaying the records into a model of its own (only leaders,
//!   ISRs, ELRs and the unclean flag), never the broker's `MetadataImage`.
//! - metadata-durable: what a controller process showed as committed (and may have sent to
//!   brokers) is still there, as a prefix, after it restarts; within one process the committed
//!   records only grow.

use super::Violation;
use broker::controller::{MetadataRecord, NO_LEADER};
use std::collections::{BTreeMap, BTreeSet};

/// A partition as elections see it: (leader, ISR, ELR).
type Electorate = (i32, Vec<i32>, Vec<i32>);

/// The model: what an election may pick from.
#[derive(Debug, Default)]
struct ElectionModel {
    /// (topic id, partition) → its electorate.
    partitions: BTreeMap<(u128, i32), Electorate>,
    /// Topics whose config allows unclean election.
    unclean_topics: BTreeSet<u128>,
}

pub fn check_leader_from_isr(records: &[MetadataRecord]) -> Vec<Violation> {
    let mut model = ElectionModel::default();
    let mut found = Vec::new();
    for record in records {
        match record {
            MetadataRecord::Topic { topic_id, configs, .. } => {
                if configs.get("unclean.leader.election.enable").is_some_and(|v| v == "true") {
                    model.unclean_topics.insert(*topic_id);
                }
            }
            MetadataRecord::RemoveTopic { topic_id, .. } => {
                model.partitions.retain(|(id, _), _| id != topic_id);
                model.unclean_topics.remove(topic_id);
            }
            MetadataRecord::Partition { topic_id, partition, isr, leader, .. } => {
                model.partitions.insert((*topic_id, *partition), (*leader, isr.clone(), Vec::new()));
            }
            MetadataRecord::PartitionChange { topic_id, partition, isr, elr, leader, leader_epoch, .. } => {
                let key = (*topic_id, *partition);
                if let Some((before_leader, before_isr, before_elr)) = model.partitions.get(&key) {
                    let eligible = before_isr.contains(leader) || before_elr.contains(leader);
                    let elected = *leader != NO_LEADER && leader != before_leader;
                    if elected && !eligible && !model.unclean_topics.contains(topic_id) {
                        found.push(Violation {
                            invariant: "leader-from-isr",
                            partition: *partition,
                            offsets: vec![],
                            values: vec![],
                            operations: vec![],
                            detail: format!(
                                "partition {partition}: broker {leader} elected at epoch {leader_epoch} from outside the ISR {before_isr:?} and ELR {before_elr:?}"
                            ),
                        });
                    }
                }
                model.partitions.insert(key, (*leader, isr.clone(), elr.clone()));
            }
            MetadataRecord::RegisterBroker { .. }
            | MetadataRecord::FenceBroker { .. }
            | MetadataRecord::UnfenceBroker { .. }
            | MetadataRecord::ProducerIds { .. } => {}
        }
    }
    found
}

/// metadata-durable: the committed records seen so far, and from which controller process.
#[derive(Debug, Default)]
pub struct MetadataDurability {
    seen: Vec<MetadataRecord>,
    incarnation: Option<u32>,
    /// Reported once.
    broken: bool,
}

impl MetadataDurability {
    /// The controller process `incarnation` holds `held` as its committed records.
    pub fn observe(&mut self, incarnation: u32, held: &[MetadataRecord]) -> Vec<Violation> {
        let restarted = self.incarnation.is_some_and(|i| i != incarnation);
        self.incarnation = Some(incarnation);
        let lost = if held.len() < self.seen.len() {
            Some(format!("holds {} committed records; {} were committed before", held.len(), self.seen.len()))
        } else if restarted {
            let first_difference = held.iter().zip(&self.seen).position(|(a, b)| a != b);
            first_difference.map(|offset| format!("holds another record at offset {offset} than was committed before"))
        } else {
            None
        };
        let Some(why) = lost else {
            self.seen.extend_from_slice(&held[self.seen.len()..]);
            return Vec::new();
        };
        if std::mem::replace(&mut self.broken, true) {
            return Vec::new();
        }
        vec![Violation {
            invariant: "metadata-durable",
            partition: -1,
            offsets: vec![held.len() as i64, self.seen.len() as i64],
            values: vec![],
            operations: vec![],
            detail: format!("controller process {incarnation} {why}: committed metadata was lost"),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(unclean: bool) -> MetadataRecord {
        let configs = if unclean {
            [("unclean.leader.election.enable".to_string(), "true".to_string())].into()
        } else {
            Default::default()
        };
        MetadataRecord::Topic { name: "t".to_string(), topic_id: 7, partitions: 1, configs }
    }

    fn partition() -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id: 7,
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    fn change(leader: i32, isr: Vec<i32>, elr: Vec<i32>, epoch: i32) -> MetadataRecord {
        MetadataRecord::PartitionChange {
            topic_id: 7,
            partition: 0,
            isr,
            elr,
            restarted: vec![],
            leader,
            leader_epoch: epoch,
            partition_epoch: epoch,
        }
    }

    fn invariants(records: &[MetadataRecord]) -> Vec<&'static str> {
        check_leader_from_isr(records).iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn electing_a_leader_outside_isr_and_elr_breaks_leader_from_isr() {
        assert!(invariants(&[topic(false), partition(), change(2, vec![2], vec![], 1)]).is_empty());
        assert_eq!(invariants(&[topic(false), partition(), change(3, vec![3], vec![], 1)]), vec!["leader-from-isr"]);
    }

    #[test]
    fn an_elr_member_or_an_unclean_topic_may_lead() {
        let shrink = change(1, vec![1], vec![2], 1);
        let elr_leads = change(2, vec![2], vec![], 2);
        assert!(invariants(&[topic(false), partition(), shrink, elr_leads]).is_empty());
        assert!(invariants(&[topic(true), partition(), change(3, vec![3], vec![], 1)]).is_empty());
    }

    #[test]
    fn a_restarted_controller_missing_committed_records_breaks_metadata_durable() {
        let records = [topic(false), partition(), change(2, vec![2], vec![], 1)];
        let mut check = MetadataDurability::default();
        assert!(check.observe(0, &records[..2]).is_empty());
        assert!(check.observe(0, &records).is_empty());
        assert!(check.observe(1, &records).is_empty(), "the same records after a restart: durable");
        let found = check.observe(2, &records[..2]);
        assert_eq!(found.iter().map(|v| v.invariant).collect::<Vec<_>>(), vec!["metadata-durable"]);
        let mut other = MetadataDurability::default();
        other.observe(0, &records);
        let changed = [topic(false), partition(), change(3, vec![3], vec![], 1)];
        assert_eq!(other.observe(1, &changed).len(), 1, "another decision at the same offset");
    }
}
