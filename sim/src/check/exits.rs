//! Exit checks, on what the supervisor saw of each node's process: once the faults end (the
//! heal phase), a process started after that point has a healthy disk under it, so
//!
//! | check | must hold |
//! | --- | --- |
//! | `node-cannot-start` | it starts: a start that fails means the node's stored state is unusable (a hole in a log, corruption it refuses); the detail is what the node said, naming the file and the byte |
//! | `halt-without-fault` | it never halts: a fail-stop with no disk fault on is a bug that only looks like one |
//!
//! A process started before the heal phase may fail either way (its disk was failing): that is
//! what the supervisor is for.

use super::Violation;
use crate::observation::{NodeExit, NodeRef};
use std::collections::BTreeSet;

/// Judges every exit of a run; `healed_at_ns` is when the heal phase turned the faults off.
/// At most one violation per node and kind.
pub fn check_exits(exits: &[NodeExit], healed_at_ns: u64) -> Vec<Violation> {
    let mut seen: BTreeSet<(NodeRef, bool)> = BTreeSet::new();
    let mut violations = Vec::new();
    for exit in exits.iter().filter(|e| e.started_at_ns >= healed_at_ns) {
        if !seen.insert((exit.node, exit.while_starting)) {
            continue;
        }
        let (invariant, what) = if exit.while_starting {
            ("node-cannot-start", "cannot start again after the faults ended")
        } else {
            ("halt-without-fault", "halted with no disk fault on")
        };
        violations.push(Violation {
            invariant,
            partition: -1,
            offsets: vec![],
            values: vec![],
            operations: vec![],
            detail: format!("{} {what} (process start {}): {}", exit.node, exit.incarnation, exit.reason),
        });
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(node: NodeRef, started_at_ns: u64, while_starting: bool) -> NodeExit {
        NodeExit {
            at_ns: started_at_ns + 1,
            node,
            incarnation: 3,
            started_at_ns,
            while_starting,
            reason: "/data/__cluster_metadata-0/metadata.log: corrupt metadata frame at byte 3368".to_string(),
        }
    }

    #[test]
    fn a_node_that_cannot_start_after_the_heal_is_a_violation_naming_the_file_and_byte() {
        let exits = [exit(NodeRef::Controller, 70, true), exit(NodeRef::Controller, 80, true)];
        let found = check_exits(&exits, 60);
        assert_eq!(found.len(), 1, "one per node and kind: {found:?}");
        assert_eq!(found[0].invariant, "node-cannot-start");
        assert!(found[0].detail.contains("metadata.log") && found[0].detail.contains("byte 3368"), "{found:?}");
    }

    #[test]
    fn a_halt_after_the_heal_is_a_violation_of_its_own_kind() {
        let found = check_exits(&[exit(NodeRef::Broker(2), 70, false)], 60);
        assert_eq!(found.iter().map(|v| v.invariant).collect::<Vec<_>>(), vec!["halt-without-fault"]);
    }

    #[test]
    fn exits_of_processes_started_while_the_disk_was_failing_are_what_the_supervisor_is_for() {
        let exits = [exit(NodeRef::Broker(1), 10, true), exit(NodeRef::Broker(1), 59, false)];
        assert!(check_exits(&exits, 60).is_empty());
    }
}
