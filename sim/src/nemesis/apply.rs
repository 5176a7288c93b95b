//! Applying the fault plan to a running world: swarm faults one after another, scripted ones
//! each at its time; `leader` / `follower` targets resolved from the controller's committed
//! metadata; data-losing swarm faults gated on a full ISR; and the heal phase.

use super::{loses_data, FaultEvent, PlannedFault, Target};
use crate::client::Recorder;
use crate::cluster::{SimNode, World};
use crate::disk::DiskFaults;
use crate::observation::{ImpairmentKind, NodeRef};
use crate::scenario::{FaultKind, Scenario};
use broker::controller::NO_LEADER;
use madsim::runtime::Handle;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Probability per disk operation while a disk fault is on.
const DISK_FAULT_PROBABILITY: f64 = 0.02;
/// Latency per disk operation (at most) while the slow-disk fault is on.
const DISK_SLOW_MS_MAX: u64 = 20;

pub fn note(faults: &Mutex<Vec<FaultEvent>>, recorder: &Recorder, target: &str, what: impl Into<String>) {
    faults.lock().expect("faults").push(FaultEvent {
        at_ns: recorder.now_ns(),
        target: target.to_string(),
        what: what.into(),
    });
}

/// The fault injector of one run.
pub struct Nemesis<'a> {
    pub handle: &'a Handle,
    pub world: &'a World,
    /// The group members' nodes (index 0 = member-1).
    pub members: &'a [madsim::task::NodeId],
    pub scenario: &'a Scenario,
    pub topic: &'a str,
    pub faults: &'a Mutex<Vec<FaultEvent>>,
    pub recorder: &'a Recorder,
}

impl Nemesis<'_> {
    fn note(&self, target: &str, what: impl Into<String>) {
        note(self.faults, self.recorder, target, what);
    }

    /// The nodes a target names now (`leader` / `follower`: of partition 0, from the
    /// controller's committed metadata).
    fn resolve(&self, target: Target) -> Vec<&SimNode> {
        let partition_zero = || {
            let image = self.world.metadata()?;
            image.partition(self.topic, 0).cloned()
        };
        match target {
            Target::Broker(index) => self.world.brokers.get(index).into_iter().collect(),
            Target::Controller => vec![self.world.controller_node()],
            Target::All => self.world.brokers.iter().collect(),
            Target::Leader => match partition_zero() {
                Some(p) if p.leader != NO_LEADER => self.world.broker_node(p.leader).into_iter().collect(),
                _ => vec![],
            },
            Target::Coordinator => {
                let image = self.world.metadata();
                let partition =
                    broker::group::partition_for(crate::group_client::GROUP, crate::cluster::OFFSETS_PARTITIONS);
                match image.as_ref().and_then(|i| i.partition("__consumer_offsets", partition)) {
                    Some(p) if p.leader != NO_LEADER => self.world.broker_node(p.leader).into_iter().collect(),
                    _ => vec![],
                }
            }
            Target::Member(_) => unreachable!("members are not brokers: see apply_to_member"),
            Target::Follower => match partition_zero() {
                Some(p) => p
                    .replicas
                    .iter()
                    .find(|&&r| r != p.leader)
                    .map(|&r| self.world.broker_node(r).into_iter().collect())
                    .unwrap_or_default(),
                None => vec![],
            },
        }
    }

    /// A fault of a group member's node: its process killed (crash and kill alike: a client
    /// has no disk) and started again after `duration` (a new member, or the same static
    /// instance), paused, or cut off from everyone.
    async fn apply_to_member(&self, kind: FaultKind, index: usize, duration: Duration) {
        let name = format!("member-{}", index + 1);
        let Some(&id) = self.members.get(index) else {
            self.note(&name, format!("{kind:?} skipped: no such member"));
            return;
        };
        let net = madsim::net::NetSim::current();
        let (on, off) = match kind {
            FaultKind::Crash | FaultKind::Kill => {
                self.handle.kill(id);
                ("kill", "restart")
            }
            FaultKind::Pause => {
                self.handle.pause(id);
                ("pause", "resume")
            }
            FaultKind::Isolate => {
                net.clog_node(id);
                ("isolate", "heal network")
            }
            other => unreachable!("scenario validation allows no {other:?} of a member"),
        };
        self.note(&name, on);
        tokio::time::sleep(duration).await;
        match kind {
            FaultKind::Crash | FaultKind::Kill => self.handle.restart(id),
            FaultKind::Pause => self.handle.resume(id),
            _ => net.unclog_node(id),
        }
        self.note(&name, off);
    }

    /// A swarm fault that destroys a replica's data stays within the budget only while every
    /// replica of every partition is in the ISR: then each acknowledged record has a copy
    /// elsewhere. (A fixed delay between such faults is not enough: a victim kept away by other
    /// faults may not have caught up; the simulator showed that.)
    fn losing_data_now_breaks_budget(&self, fault: &PlannedFault) -> bool {
        if !loses_data(self.scenario, fault) || self.scenario.topic.replication_factor < 2 {
            return false;
        }
        let Some(image) = self.world.metadata() else { return true };
        let Some(topic) = image.topics.get(self.topic) else { return true };
        (0..topic.partitions).any(|p| {
            image
                .partitions
                .get(&(topic.topic_id, p))
                .is_none_or(|p| p.isr.len() < p.replicas.len() || p.leader == NO_LEADER)
        })
    }

    /// Every node but `node`, brokers and controller.
    fn others(&self, node: &SimNode, with_controller: bool) -> Vec<&SimNode> {
        let controller = self.world.controller.iter().filter(|_| with_controller);
        self.world.brokers.iter().chain(controller).filter(|n| n.id != node.id).collect()
    }

    /// Applies the planned faults within the fault phase: swarm faults one after another,
    /// scripted ones each at its time.
    pub async fn inject(
        &self,
        link_peer: Option<madsim::task::NodeId>,
        planned: &[PlannedFault],
        started: Instant,
        fault_phase: Duration,
    ) {
        let scripted = planned.iter().filter(|f| f.scripted).map(|f| self.apply(f, link_peer, started, fault_phase));
        let swarm = async {
            for fault in planned.iter().filter(|f| !f.scripted) {
                self.apply(fault, link_peer, started, fault_phase).await;
            }
        };
        futures::future::join(futures::future::join_all(scripted), swarm).await;
    }

    async fn apply(
        &self,
        fault: &PlannedFault,
        link_peer: Option<madsim::task::NodeId>,
        started: Instant,
        fault_phase: Duration,
    ) {
        let net = madsim::net::NetSim::current();
        let elapsed = started.elapsed();
        if elapsed >= fault_phase {
            return;
        }
        tokio::time::sleep(fault.at.saturating_sub(elapsed)).await;
        let duration = fault.duration.min(fault_phase.saturating_sub(started.elapsed()));
        if let Target::Member(index) = fault.target {
            return self.apply_to_member(fault.kind, index, duration).await;
        }
        let targets = self.resolve(fault.target);
        let Some(first) = targets.first() else {
            self.note(&format!("{:?}", fault.target), format!("{:?} skipped: no such node now", fault.kind));
            // The schedule stays as planned (the budget reasons about it).
            tokio::time::sleep(duration).await;
            return;
        };
        if !fault.scripted && self.losing_data_now_breaks_budget(fault) {
            self.note(
                &first.name(),
                format!("{:?} skipped: an earlier victim is not back in every ISR yet", fault.kind),
            );
            tokio::time::sleep(duration).await;
            return;
        }
        match fault.kind {
            FaultKind::Crash | FaultKind::Kill | FaultKind::CrashAll | FaultKind::DiskLoss => {
                let mut impaired = Vec::new();
                for node in &targets {
                    self.world.kill(node);
                    impaired.push(self.world.impair(Some(node.id), ImpairmentKind::Down));
                    let what = match fault.kind {
                        FaultKind::Kill => "kill (process crash)",
                        FaultKind::DiskLoss => {
                            node.disk.wipe();
                            "kill, and the disk is replaced by an empty one"
                        }
                        _ => {
                            node.disk.power_loss(true);
                            "crash (power loss)"
                        }
                    };
                    self.note(&node.name(), what);
                }
                tokio::time::sleep(duration).await;
                for node in &targets {
                    self.world.restart(node);
                    self.note(&node.name(), "restart");
                }
                impaired.into_iter().for_each(|i| self.world.restore(i));
            }
            FaultKind::Pause => {
                self.handle.pause(first.node.id());
                let impaired = self.world.impair(Some(first.id), ImpairmentKind::Paused);
                self.note(&first.name(), "pause");
                tokio::time::sleep(duration).await;
                self.handle.resume(first.node.id());
                self.world.restore(impaired);
                self.note(&first.name(), "resume");
            }
            FaultKind::Isolate | FaultKind::IsolateOutbound => {
                let id = first.node.id();
                let outbound_only = fault.kind == FaultKind::IsolateOutbound;
                if outbound_only {
                    net.clog_node_out(id);
                } else {
                    net.clog_node(id);
                }
                self.note(&first.name(), if outbound_only { "isolate outbound" } else { "isolate" });
                let impaired = self.world.impair(Some(first.id), ImpairmentKind::CutOffFromController);
                tokio::time::sleep(duration).await;
                self.world.restore(impaired);
                if outbound_only {
                    net.unclog_node_out(id);
                } else {
                    net.unclog_node(id);
                }
                self.note(&first.name(), "heal network");
            }
            FaultKind::IsolateFromBrokers | FaultKind::IsolateFromCluster => {
                let with_controller = fault.kind == FaultKind::IsolateFromCluster;
                let others = self.others(first, with_controller);
                for other in &others {
                    net.clog_link(first.node.id(), other.node.id());
                    net.clog_link(other.node.id(), first.node.id());
                }
                let what = if with_controller {
                    "cut off from the brokers and the controller"
                } else {
                    "cut off from the brokers"
                };
                self.note(&first.name(), what);
                // Cut off from the controller (the controller cut off from the brokers is too).
                let kind = if with_controller || first.id == NodeRef::Controller {
                    ImpairmentKind::CutOffFromController
                } else {
                    ImpairmentKind::CutOffFromBrokers
                };
                let impaired = self.world.impair(Some(first.id), kind);
                tokio::time::sleep(duration).await;
                for other in &others {
                    net.unclog_link(first.node.id(), other.node.id());
                    net.unclog_link(other.node.id(), first.node.id());
                }
                self.world.restore(impaired);
                self.note(&first.name(), "links restored");
            }
            FaultKind::ClogLink => {
                let Some(peer) = link_peer else { return };
                let id = first.node.id();
                net.clog_link(id, peer);
                let impaired = self.world.impair(Some(first.id), ImpairmentKind::LinkToProducerCut);
                self.note(&first.name(), "clog link to producer-1 (one way)");
                tokio::time::sleep(duration).await;
                net.unclog_link(id, peer);
                self.world.restore(impaired);
                self.note(&first.name(), "unclog link");
            }
            FaultKind::SlowNetwork => {
                net.update_config(|c| {
                    c.packet_loss_rate = 0.05;
                    c.send_latency = Duration::from_millis(5)..Duration::from_millis(50);
                });
                self.note("network", "slow: 5-50 ms latency, 5% loss");
                let impaired = self.world.impair(None, ImpairmentKind::SlowNetwork);
                tokio::time::sleep(duration).await;
                self.world.restore(impaired);
                net.update_config(|c| *c = madsim::net::Config::default());
                self.note("network", "normal");
            }
            FaultKind::DiskCorruption | FaultKind::DiskError | FaultKind::DiskSlow => {
                let probability = fault.probability.unwrap_or(DISK_FAULT_PROBABILITY);
                let faults_on = match fault.kind {
                    FaultKind::DiskCorruption => DiskFaults { corrupt_read: probability, ..DiskFaults::default() },
                    FaultKind::DiskSlow => DiskFaults { slow_ms_max: DISK_SLOW_MS_MAX, ..DiskFaults::default() },
                    _ => DiskFaults { io_error: probability, no_space: probability / 4.0, ..DiskFaults::default() },
                };
                first.disk.set_faults(faults_on);
                self.note(&first.name(), format!("{:?} on", fault.kind));
                // A slow disk only slows; a failing one may halt the node at any moment.
                let impaired = (fault.kind != FaultKind::DiskSlow)
                    .then(|| self.world.impair(Some(first.id), ImpairmentKind::DiskFaulty));
                tokio::time::sleep(duration).await;
                first.disk.set_faults(DiskFaults::default());
                impaired.into_iter().for_each(|i| self.world.restore(i));
                self.note(&first.name(), format!("{:?} off", fault.kind));
            }
        }
    }

    /// Ends every fault: links heal, disks behave, and nodes that died, refused to start or
    /// took their log directory offline restart (a process restart: the disk keeps its data).
    pub fn heal(&self) {
        let net = madsim::net::NetSim::current();
        net.update_config(|c| *c = madsim::net::Config::default());
        let nodes: Vec<&SimNode> = self.world.brokers.iter().chain(self.world.controller.iter()).collect();
        for node in &nodes {
            let id = node.node.id();
            net.unclog_node(id);
            for other in &nodes {
                net.unclog_link(id, other.node.id());
            }
            node.disk.set_faults(DiskFaults::default());
            if !node.healthy() {
                self.world.kill(node);
                self.world.restart(node);
                self.note(&node.name(), "heal: restart");
            }
        }
    }
}
