//! The fault schedule: scripted in the scenario (at T do X to N for D) or drawn per seed (swarm:
//! each seed also draws which fault kinds are on and how often). Process, network and disk
//! faults each draw from their own stream, so removing one kind does not reshuffle the others.

#[cfg(madsim)]
pub mod apply;
pub mod budget;

pub use budget::{budget, Budget};

use crate::scenario::{FaultKind, Scenario};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Duration;

/// Whom a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Target {
    /// Index into the brokers (0 = broker-1).
    Broker(usize),
    Controller,
    /// The leader of partition 0 when the fault starts.
    Leader,
    /// A follower of partition 0 when the fault starts.
    Follower,
    /// Every broker.
    All,
    /// A group member's node (index 0 = member-1): kill, crash, pause and isolate only.
    Member(usize),
    /// The group's coordinator when the fault starts: the leader of the workload group's
    /// `__consumer_offsets` partition.
    Coordinator,
}

impl Target {
    /// Whether the fault hits a broker (a client's fault never costs a replica its data).
    pub fn is_broker(self) -> bool {
        !matches!(self, Target::Controller | Target::Member(_))
    }
}

impl Target {
    fn parse(name: &str) -> Target {
        match name {
            "controller" => Target::Controller,
            "leader" => Target::Leader,
            "follower" => Target::Follower,
            "all" => Target::All,
            "coordinator" => Target::Coordinator,
            member if member.starts_with("member-") => {
                Target::Member(member["member-".len()..].parse::<usize>().expect("validated") - 1)
            }
            broker => Target::Broker(
                broker.strip_prefix("broker-").and_then(|n| n.parse::<usize>().ok()).expect("validated") - 1,
            ),
        }
    }
}

/// A fault the nemesis will inject.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedFault {
    pub at: Duration,
    pub kind: FaultKind,
    pub target: Target,
    pub duration: Duration,
    /// Scripted faults run at their time even while others are on (a story may need two at
    /// once); swarm faults come one after another.
    pub scripted: bool,
    /// A disk fault's chance per operation (the nemesis's default when `None`).
    pub probability: Option<f64>,
}

/// Something the nemesis did, for the report's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultEvent {
    pub at_ns: u64,
    pub target: String,
    pub what: String,
}

/// The independent random streams of a run, derived from its seed.
pub fn stream_seed(seed: u64, stream: &str) -> u64 {
    // FNV-1a over the stream name, mixed with the seed: stable across versions and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for byte in stream.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Which random stream a fault kind draws from.
fn category(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Crash | FaultKind::Kill | FaultKind::Pause | FaultKind::CrashAll => "process-faults",
        FaultKind::Isolate
        | FaultKind::IsolateOutbound
        | FaultKind::ClogLink
        | FaultKind::SlowNetwork
        | FaultKind::IsolateFromBrokers
        | FaultKind::IsolateFromCluster => "network-faults",
        FaultKind::DiskCorruption | FaultKind::DiskError | FaultKind::DiskSlow | FaultKind::DiskLoss => "disk-faults",
    }
}

/// Data-losing faults on different brokers closer than this may hit every copy of a record
/// (the first victim has not caught up again yet): beyond the budget of a replicated topic.
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(20);

/// Whether a fault destroys data a replica had acknowledged: power loss without an fsync per
/// message, or a disk swapped for an empty one.
pub fn loses_data(scenario: &Scenario, fault: &PlannedFault) -> bool {
    if matches!(fault.target, Target::Member(_)) {
        return false;
    }
    match fault.kind {
        FaultKind::Crash | FaultKind::CrashAll => scenario.topic.flush_messages != Some(1),
        FaultKind::DiskLoss => true,
        _ => false,
    }
}

/// When each fault will start: scripted ones at their time, swarm ones at their time or when
/// the swarm fault before them ends, whichever is later.
pub fn start_times(faults: &[PlannedFault]) -> Vec<Duration> {
    let mut busy_until = Duration::ZERO;
    faults
        .iter()
        .map(|f| {
            if f.scripted {
                return f.at;
            }
            let starts = f.at.max(busy_until);
            busy_until = starts + f.duration;
            starts
        })
        .collect()
}

/// The faults of one run, sorted by time.
pub fn plan(scenario: &Scenario, seed: u64) -> Vec<PlannedFault> {
    let mut faults: Vec<PlannedFault> = scenario
        .faults
        .scripted
        .iter()
        .map(|f| PlannedFault {
            at: Duration::from_secs_f64(f.at_s),
            kind: f.kind,
            target: Target::parse(&f.target),
            duration: Duration::from_secs_f64(f.duration_s),
            scripted: true,
            probability: f.probability,
        })
        .collect();
    if let Some(swarm) = &scenario.faults.swarm {
        let mut kinds_rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, "swarm-kinds"));
        let mut on: Vec<FaultKind> = swarm.kinds.iter().copied().filter(|_| kinds_rng.gen_bool(0.5)).collect();
        if on.is_empty() {
            on.push(*swarm.kinds.choose(&mut kinds_rng).expect("validated non-empty"));
        }
        let minutes = scenario.workload.duration_s as f64 / 60.0;
        for kind in on {
            let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, category(kind)) ^ kind as u64);
            // Each kind that is on gets its own rate: between a tenth and all of the budget.
            let rate = swarm.faults_per_minute * rng.gen_range(0.1..=1.0);
            let count = (rate * minutes).round() as usize;
            for _ in 0..count {
                let at = Duration::from_secs_f64(rng.gen_range(0.0..scenario.workload.duration_s as f64));
                // Half the faults hit whoever leads partition 0 then: failover is the story.
                let target = if kind == FaultKind::CrashAll {
                    Target::All
                } else if rng.gen_bool(0.5) {
                    Target::Leader
                } else {
                    Target::Broker(rng.gen_range(0..scenario.cluster.brokers as usize))
                };
                let duration = Duration::from_secs_f64(rng.gen_range(0.5..5.0));
                faults.push(PlannedFault { at, kind, target, duration, scripted: false, probability: None });
            }
        }
    }
    faults.sort_by(|a, b| a.at.cmp(&b.at).then(a.target.cmp(&b.target)));
    // Swarm runs stay within the budget: a data-losing fault comes only once the last one's
    // victim has had time to catch up (swarm faults run one after another, so it starts no
    // earlier than it was planned).
    let mut last_loss_end: Option<Duration> = None;
    let mut busy_until = Duration::ZERO;
    faults.retain(|f| {
        if f.scripted {
            return true;
        }
        let starts = f.at.max(busy_until);
        busy_until = starts + f.duration;
        if !loses_data(scenario, f) {
            return true;
        }
        if last_loss_end.is_some_and(|end| starts < end + RECOVERY_WINDOW) {
            busy_until = starts; // dropped: it takes no time
            return false;
        }
        last_loss_end = Some(starts + f.duration);
        true
    });
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swarm(kinds: &str) -> Scenario {
        let text = format!(
            "name = \"s\"\n[cluster]\nbrokers = 1\n[workload]\nproducers = 1\nconsumers = 1\nacks = \"all\"\nduration_s = 60\n\
             [faults.swarm]\nkinds = [{kinds}]\nfaults_per_minute = 6.0\n[expect]\noutcome = \"pass\"\n"
        );
        Scenario::parse(&text, "swarm.toml").unwrap()
    }

    #[test]
    fn the_same_seed_plans_the_same_faults_and_seeds_differ() {
        let scenario = swarm("\"crash\", \"pause\", \"isolate\", \"disk-corruption\"");
        assert_eq!(plan(&scenario, 5), plan(&scenario, 5));
        let distinct: std::collections::BTreeSet<String> =
            (0..20).map(|s| format!("{:?}", plan(&scenario, s))).collect();
        assert!(distinct.len() > 15);
    }

    #[test]
    fn switching_a_kind_off_does_not_reshuffle_the_others() {
        // Find a seed where both kinds are on in the two-kind swarm, then compare crash faults.
        let both = swarm("\"crash\", \"isolate\"");
        let only_crash = swarm("\"crash\"");
        let seed = (0..100).find(|&s| {
            let kinds: std::collections::BTreeSet<_> = plan(&both, s).iter().map(|f| f.kind).collect();
            kinds.len() == 2
        });
        let seed = seed.expect("some seed turns both kinds on");
        let crashes =
            |s: &Scenario| plan(s, seed).into_iter().filter(|f| f.kind == FaultKind::Crash).collect::<Vec<_>>();
        assert_eq!(crashes(&both), crashes(&only_crash));
    }
}
