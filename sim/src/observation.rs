//! What the state checkers see of the nodes: replica states as each change happened (from the
//! broker's observation tap, taken at the moment the partition lock is released), and the
//! simulator's own knowledge of when a node went down and which incarnation it runs. Nothing
//! here is a verdict a broker reports about itself.

use broker::replication::ReplicaState;
use serde::Serialize;
use std::fmt;

/// A simulated node, typed (never parsed from a name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum NodeRef {
    /// A broker by its `node.id` (1-based).
    Broker(i32),
    /// The controller node of a multi-broker cluster.
    Controller,
}

impl NodeRef {
    /// The broker's `node.id`, as ISRs name it.
    pub fn broker_id(self) -> Option<i32> {
        match self {
            NodeRef::Broker(id) => Some(id),
            NodeRef::Controller => None,
        }
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRef::Broker(id) => write!(f, "broker-{id}"),
            NodeRef::Controller => write!(f, "controller"),
        }
    }
}

/// One thing the state checkers learn, in simulated time order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEvent {
    /// A replica's state right after it changed. `incarnation` counts the node's process
    /// starts (the simulator's count: it starts them).
    Replica { at_ns: u64, node: NodeRef, incarnation: u32, state: ReplicaState },
    /// The node's process died (killed, crashed or lost its disk): its replicas stop claiming
    /// anything until it starts again.
    Down { at_ns: u64, node: NodeRef },
}

impl StateEvent {
    pub fn at_ns(&self) -> u64 {
        match self {
            StateEvent::Replica { at_ns, .. } | StateEvent::Down { at_ns, .. } => *at_ns,
        }
    }

    pub fn node(&self) -> NodeRef {
        match self {
            StateEvent::Replica { node, .. } | StateEvent::Down { node, .. } => *node,
        }
    }
}

/// A node's process ended by itself, as its supervisor saw it: a fail-stop halt on a disk error,
/// or a start that failed (with the error it printed). Kills by the nemesis are not exits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeExit {
    pub at_ns: u64,
    pub node: NodeRef,
    /// The process start that ended (the simulator's count).
    pub incarnation: u32,
    /// When that process started.
    pub started_at_ns: u64,
    /// The start itself failed (the node never served).
    pub while_starting: bool,
    /// What the process said as it exited.
    pub reason: String,
}

/// What kept a node (or the network) from doing its part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ImpairmentKind {
    /// Killed, lost power or its disk, or halted until its supervisor started it again.
    Down,
    Paused,
    /// Its links to the controller (and maybe more) were cut, or the controller's to it.
    CutOffFromController,
    /// Its links to the other brokers were cut; it still reached the controller.
    CutOffFromBrokers,
    /// Its link to the first producer was cut one way (its answers are lost).
    LinkToProducerCut,
    /// Its disk failed or corrupted operations (it may halt at any moment).
    DiskFaulty,
    /// Every link lost packets and gained latency (`node` is `None`).
    SlowNetwork,
}

impl ImpairmentKind {
    /// Whether the node could not heartbeat to the controller (or lead) meanwhile.
    pub fn keeps_from_controller(self) -> bool {
        matches!(self, ImpairmentKind::Down | ImpairmentKind::Paused | ImpairmentKind::CutOffFromController)
    }
}

impl fmt::Display for ImpairmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImpairmentKind::Down => "down",
            ImpairmentKind::Paused => "paused",
            ImpairmentKind::CutOffFromController => "cut off from the controller",
            ImpairmentKind::CutOffFromBrokers => "cut off from the brokers",
            ImpairmentKind::LinkToProducerCut => "cut off from a producer",
            ImpairmentKind::DiskFaulty => "on a failing disk",
            ImpairmentKind::SlowNetwork => "on a slow, lossy network",
        })
    }
}

/// A span of simulated time during which a node (or, with `node: None`, the whole network) was
/// impaired by a fault. Recorded by the nemesis and the supervisor as they act (the simulator's
/// own knowledge, never a node's report); the availability checkers reason from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Impairment {
    pub node: Option<NodeRef>,
    pub kind: ImpairmentKind,
    pub from_ns: u64,
    /// `None`: still impaired when the run's record of it ended.
    pub to_ns: Option<u64>,
}

impl Impairment {
    /// Whether the impairment covers any part of `[from_ns, to_ns)`.
    pub fn overlaps(&self, from_ns: u64, to_ns: u64) -> bool {
        self.from_ns < to_ns && self.to_ns.is_none_or(|end| end > from_ns)
    }

    /// Whether it began or ended within `(from_ns, to_ns]`.
    pub fn changes_within(&self, from_ns: u64, to_ns: u64) -> bool {
        let within = |t: u64| from_ns < t && t <= to_ns;
        within(self.from_ns) || self.to_ns.is_some_and(within)
    }
}
