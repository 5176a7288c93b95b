//! replica-prefix: below the leader's HW, every ISR member holds byte-identical batches. Fed
//! by copies the simulator read from each replica after the heal phase.

use super::Violation;
use crate::observation::NodeRef;

/// One replica's batches in `[log start, leader's HW)`, as read from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaCopy {
    pub node: NodeRef,
    pub log_start_offset: i64,
    pub bytes: Vec<u8>,
}

/// Compares each ISR member's copy with the leader's (`leader`), below `high_watermark`.
pub fn check_replica_prefix(
    partition: i32,
    high_watermark: i64,
    leader: &ReplicaCopy,
    members: &[ReplicaCopy],
) -> Vec<Violation> {
    members
        .iter()
        .filter(|member| member.node != leader.node && member.bytes != leader.bytes)
        .map(|member| Violation {
            invariant: "replica-prefix",
            partition,
            offsets: vec![high_watermark],
            values: vec![],
            operations: vec![],
            detail: format!(
                "partition {partition}: below HW {high_watermark} {} (log start {}, {} bytes) differs from leader {} (log start {}, {} bytes)",
                member.node,
                member.log_start_offset,
                member.bytes.len(),
                leader.node,
                leader.log_start_offset,
                leader.bytes.len()
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(broker: i32, bytes: &[u8]) -> ReplicaCopy {
        ReplicaCopy { node: NodeRef::Broker(broker), log_start_offset: 0, bytes: bytes.to_vec() }
    }

    #[test]
    fn a_member_whose_bytes_differ_below_the_hw_breaks_replica_prefix() {
        let leader = copy(1, b"abc");
        assert!(check_replica_prefix(0, 3, &leader, &[copy(2, b"abc"), copy(3, b"abc")]).is_empty());
        let found = check_replica_prefix(0, 3, &leader, &[copy(2, b"abc"), copy(3, b"abd")]);
        assert_eq!(found.len(), 1);
        assert!(found[0].detail.contains("broker-3"), "{}", found[0].detail);
    }
}
