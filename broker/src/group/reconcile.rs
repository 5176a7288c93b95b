//! Reconciliation of one consumer-group member with its target assignment (KIP-848; Kafka's
//! `CurrentAssignmentBuilder`). A member gives up partitions before anyone else gets them:
//! it first moves to `UnrevokedPartitions` (keeping only what stays, the rest pending
//! revocation) and stays there until a heartbeat shows it no longer owns any of them; a
//! partition of its target still owned (or being revoked) by another member is withheld
//! (`UnreleasedPartitions`) until it is free. The member's epoch moves to the target's epoch
//! only when nothing is left to revoke.

use super::consumer_records::{Assignment, CurrentAssignment, MemberState};
use crate::types::ErrorCode;

/// The member's next assignment. `owned` is the request's `TopicPartitions` (`None`: not
/// sent); `owner_epoch(topic, partition)` is the epoch of the member that owns the partition or
/// is revoking it, if any member does.
pub fn reconcile(
    member: &CurrentAssignment,
    target_epoch: i32,
    target: &Assignment,
    owned: Option<&Assignment>,
    owner_epoch: &dyn Fn(u128, i32) -> Option<i32>,
) -> Result<CurrentAssignment, ErrorCode> {
    let next = |epoch: i32| next_assignment(member, epoch, target_epoch, target, owned, owner_epoch);
    Ok(match member.state {
        MemberState::Stable if member.member_epoch != target_epoch => next(member.member_epoch),
        MemberState::Stable => member.clone(),
        MemberState::UnrevokedPartitions if owns_any(owned, &member.pending_revocation) => member.clone(),
        MemberState::UnrevokedPartitions => next(member.member_epoch + 1),
        MemberState::UnreleasedPartitions => next(member.member_epoch),
        MemberState::Unknown => match owned {
            Some(owned) if owned.values().all(|p| p.is_empty()) => next(target_epoch),
            _ => return Err(ErrorCode::FENCED_MEMBER_EPOCH),
        },
    })
}

/// Whether the member (as its request says) still owns any of `revoking`; a request that did
/// not say counts as owning them.
fn owns_any(owned: Option<&Assignment>, revoking: &Assignment) -> bool {
    let Some(owned) = owned else { return true };
    owned
        .iter()
        .any(|(topic, partitions)| revoking.get(topic).is_some_and(|r| partitions.iter().any(|p| r.contains(p))))
}

fn next_assignment(
    member: &CurrentAssignment,
    member_epoch: i32,
    target_epoch: i32,
    target: &Assignment,
    owned: Option<&Assignment>,
    owner_epoch: &dyn Fn(u128, i32) -> Option<i32>,
) -> CurrentAssignment {
    let mut kept = Assignment::new();
    let mut revoking = Assignment::new();
    let mut adding = Assignment::new();
    let mut unreleased = false;
    let topics: std::collections::BTreeSet<u128> = target.keys().chain(member.assigned.keys()).copied().collect();
    let empty = Default::default();
    for topic in topics {
        let wanted = target.get(&topic).unwrap_or(&empty);
        let current = member.assigned.get(&topic).unwrap_or(&empty);
        let keep: std::collections::BTreeSet<i32> = current.intersection(wanted).copied().collect();
        let revoke: std::collections::BTreeSet<i32> = current.difference(&keep).copied().collect();
        let mut add: std::collections::BTreeSet<i32> = wanted.difference(&keep).copied().collect();
        let before = add.len();
        let unchecked = crate::planted::active(crate::planted::Bug::AssignUnreleasedPartitions);
        add.retain(|&p| unchecked || owner_epoch(topic, p).is_none());
        unreleased |= add.len() < before;
        for (into, set) in [(&mut kept, keep), (&mut revoking, revoke), (&mut adding, add)] {
            if !set.is_empty() {
                into.insert(topic, set);
            }
        }
    }
    let moved = |state: MemberState, epoch: i32, assigned: Assignment, pending: Assignment| CurrentAssignment {
        member_epoch: epoch,
        previous_member_epoch: member.member_epoch,
        state,
        assigned,
        pending_revocation: pending,
    };
    if !revoking.is_empty() && owns_any(owned, &revoking) {
        return moved(MemberState::UnrevokedPartitions, member_epoch, kept, revoking);
    }
    for (topic, partitions) in adding {
        kept.entry(topic).or_default().extend(partitions);
    }
    let state = if unreleased { MemberState::UnreleasedPartitions } else { MemberState::Stable };
    moved(state, target_epoch, kept, Assignment::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(parts: &[(u128, &[i32])]) -> Assignment {
        parts.iter().map(|(t, ps)| (*t, ps.iter().copied().collect())).collect()
    }

    fn stable(epoch: i32, assigned: Assignment) -> CurrentAssignment {
        CurrentAssignment { member_epoch: epoch, previous_member_epoch: epoch - 1, assigned, ..Default::default() }
    }

    const FREE: &dyn Fn(u128, i32) -> Option<i32> = &|_, _| None;

    #[test]
    fn a_member_with_nothing_to_give_up_moves_to_the_target_epoch_with_its_new_partitions() {
        let member = stable(10, a(&[(1, &[0, 1])]));
        let next = reconcile(&member, 11, &a(&[(1, &[0, 1, 2])]), Some(&a(&[(1, &[0, 1])])), FREE).unwrap();
        assert_eq!((next.member_epoch, next.previous_member_epoch, next.state), (11, 10, MemberState::Stable));
        assert_eq!(next.assigned, a(&[(1, &[0, 1, 2])]));
    }

    #[test]
    fn a_member_keeps_its_epoch_until_it_acknowledges_the_revocation_and_only_then_gets_new_partitions() {
        let member = stable(10, a(&[(1, &[0, 1])]));
        let target = a(&[(1, &[0]), (2, &[0])]);
        let owned = a(&[(1, &[0, 1])]);
        let revoking = reconcile(&member, 11, &target, Some(&owned), FREE).unwrap();
        assert_eq!((revoking.member_epoch, revoking.state), (10, MemberState::UnrevokedPartitions));
        assert_eq!(
            (revoking.assigned.clone(), revoking.pending_revocation.clone()),
            (a(&[(1, &[0])]), a(&[(1, &[1])]))
        );
        // A heartbeat that still owns partition 1, or says nothing, changes nothing.
        assert_eq!(reconcile(&revoking, 11, &target, Some(&owned), FREE).unwrap(), revoking);
        assert_eq!(reconcile(&revoking, 11, &target, None, FREE).unwrap(), revoking);
        let done = reconcile(&revoking, 11, &target, Some(&a(&[(1, &[0])])), FREE).unwrap();
        assert_eq!((done.member_epoch, done.state), (11, MemberState::Stable));
        assert_eq!(done.assigned, target);
        assert!(done.pending_revocation.is_empty());
    }

    #[test]
    fn a_partition_another_member_still_owns_is_withheld_until_it_is_free() {
        let member = stable(10, a(&[(1, &[0])]));
        let target = a(&[(1, &[0, 1])]);
        let taken: &dyn Fn(u128, i32) -> Option<i32> = &|t, p| (t == 1 && p == 1).then_some(10);
        let waiting = reconcile(&member, 11, &target, Some(&a(&[(1, &[0])])), taken).unwrap();
        assert_eq!((waiting.member_epoch, waiting.state), (11, MemberState::UnreleasedPartitions));
        assert_eq!(waiting.assigned, a(&[(1, &[0])]));
        let freed = reconcile(&waiting, 11, &target, None, FREE).unwrap();
        assert_eq!((freed.state, freed.assigned.clone()), (MemberState::Stable, target));
    }

    #[test]
    fn a_member_in_an_unknown_state_must_give_up_everything() {
        let member = CurrentAssignment { state: MemberState::Unknown, ..stable(3, a(&[(1, &[0])])) };
        let err = reconcile(&member, 4, &a(&[(1, &[0])]), Some(&a(&[(1, &[0])])), FREE).unwrap_err();
        assert_eq!(err, ErrorCode::FENCED_MEMBER_EPOCH);
        assert_eq!(reconcile(&member, 4, &a(&[(1, &[0])]), Some(&Assignment::new()), FREE).unwrap().member_epoch, 4);
    }
}
