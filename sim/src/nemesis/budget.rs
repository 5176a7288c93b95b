//! Which faults the configuration promises to survive without losing acknowledged writes: a
//! run whose faults go beyond it may lose data and still pass (its losses are expected).

use super::{loses_data, start_times, PlannedFault, RECOVERY_WINDOW};
use crate::scenario::{Acks, FaultKind, Scenario};
use serde::Serialize;
use std::time::Duration;

/// Whether the faults of a run stayed within what the configuration promises to survive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub within: bool,
    pub reason: String,
}

/// Which faults the configuration promises to survive without losing acknowledged writes.
pub fn budget(scenario: &Scenario, faults: &[PlannedFault]) -> Budget {
    let beyond = |reason: &str| Budget { within: false, reason: reason.to_string() };
    let topic = &scenario.topic;
    let loses_data = |f: &PlannedFault| loses_data(scenario, f);
    let moves_leadership = |f: &PlannedFault| !matches!(f.kind, FaultKind::SlowNetwork | FaultKind::DiskSlow);
    let hits_broker = |f: &PlannedFault| f.target.is_broker();
    if topic.replication_factor == 1 {
        if faults.iter().any(|f| loses_data(f) && hits_broker(f)) {
            return beyond(
                "power loss (or disk loss) of the only replica without an fsync per message: acknowledged records may be lost",
            );
        }
        if faults.iter().any(|f| f.kind == FaultKind::Crash) && scenario.workload.acks != Acks::All {
            return beyond("power loss with acks below all");
        }
        return Budget { within: true, reason: "every fault is one the configuration survives".to_string() };
    }
    if topic.unclean_leader_election && faults.iter().any(|f| moves_leadership(f) && hits_broker(f)) {
        return beyond("unclean leader election may elect a replica that misses acknowledged writes");
    }
    if scenario.workload.acks != Acks::All && faults.iter().any(|f| moves_leadership(f) && hits_broker(f)) {
        return beyond("acks below all: a write is acknowledged before the followers have it");
    }
    if faults.iter().any(|f| f.kind == FaultKind::CrashAll && loses_data(f)) {
        return beyond("every replica lost power without an fsync per message");
    }
    let starts = start_times(faults);
    let losses: Vec<(Duration, &PlannedFault)> =
        starts.into_iter().zip(faults).filter(|(_, f)| loses_data(f) && hits_broker(f)).collect();
    if !losses.is_empty() && topic.min_insync_replicas < 2 {
        return beyond(
            "min.insync.replicas below 2: an acknowledged record may live on one replica that then loses it",
        );
    }
    for pair in losses.windows(2) {
        let ((first_start, first), (second_start, _)) = (pair[0], pair[1]);
        if second_start < first_start + first.duration + RECOVERY_WINDOW {
            return beyond("two replicas lost data before the first had caught up again");
        }
    }
    Budget { within: true, reason: "every fault is one the configuration survives".to_string() }
}
