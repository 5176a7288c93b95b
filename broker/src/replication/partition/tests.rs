//! The replica core without IO: ISR shrink and expand, HW advance, the acks=all purgatory,
//! min-ISR refusal, follower truncation and election, each from hand-built metadata on an
//! in-memory disk.

use super::*;
use crate::log::LogConfig;
use crate::protocol::client::{encode_batch, BatchRecord};
use crate::storage::mem::MemDisk;
use crate::storage::Disk;
use kafka_protocol::records::Compression;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const ME: i32 = 1;
const LAG_MS: i64 = 1_000;

fn image(leader: i32, leader_epoch: i32, partition_epoch: i32, isr: &[i32]) -> PartitionImage {
    PartitionImage {
        topic_id: 7,
        partition: 0,
        replicas: vec![1, 2, 3],
        isr: isr.to_vec(),
        elr: vec![],
        restarted: vec![],
        leader,
        leader_epoch,
        partition_epoch,
    }
}

fn replica(min_insync_replicas: i32) -> Partition {
    let disk = MemDisk::new();
    disk.create_dir_all(Path::new("/data")).unwrap();
    let log = PartitionLog::open(Arc::new(disk), PathBuf::from("/data/t-0"), LogConfig::default(), 0).unwrap();
    Partition::new(TopicPartition::new("t", 0), log, ME, image(NO_LEADER, -1, -1, &[1, 2, 3]), min_insync_replicas)
}

fn batch(records: usize) -> Bytes {
    let records: Vec<BatchRecord> = (0..records)
        .map(|i| BatchRecord { key: None, value: Some(Bytes::from(vec![i as u8])), timestamp: 0 })
        .collect();
    encode_batch(&records, None, Compression::None)
}

/// A batch as a leader at `leader_epoch` stored it at `base_offset` (both are outside the CRC).
fn replicated(records: usize, leader_epoch: i32, base_offset: i64) -> Bytes {
    let mut bytes = batch(records).to_vec();
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
    bytes[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    Bytes::from(bytes)
}

/// A leader at epoch 1 with ISR `isr` and `records` records appended with acks=1.
fn leader(isr: &[i32], min_insync_replicas: i32, records: usize) -> Partition {
    let mut p = replica(min_insync_replicas);
    assert_eq!(p.apply_image(image(ME, 1, 1, isr), 0).unwrap(), Transition::BecameLeader);
    if records > 0 {
        p.append_as_leader(batch(records), 1, 0).unwrap();
    }
    p
}

#[test]
fn the_high_watermark_is_the_smallest_log_end_in_the_isr() {
    // (story, ISR, follower fetches (replica, offset), expected HW)
    type Row<'a> = (&'a str, &'a [i32], &'a [(i32, i64)], i64);
    let table: [Row; 5] = [
        ("a leader alone: its own log end", &[1], &[], 10),
        ("a member that has not fetched holds the HW back", &[1, 2, 3], &[(2, 10)], 0),
        ("the slowest member sets it", &[1, 2, 3], &[(2, 10), (3, 4)], 4),
        ("a replica outside the ISR does not count", &[1, 2], &[(2, 7), (3, 1)], 7),
        ("a fetch past the leader's end proves nothing", &[1, 2], &[(2, 12)], 0),
    ];
    for (story, isr, fetches, expected) in table {
        let mut p = leader(isr, 1, 10);
        for &(r, offset) in fetches {
            p.record_follower_fetch(r, Offset(offset), 0);
        }
        assert_eq!(p.high_watermark(), Offset(expected), "{story}");
    }
}

#[test]
fn the_high_watermark_never_goes_back_while_leading() {
    let mut p = leader(&[1, 2], 1, 10);
    p.record_follower_fetch(2, Offset(8), 0);
    assert_eq!(p.high_watermark(), Offset(8));
    // A follower that fetches from an older position (a retried fetch) moves nothing back.
    assert!(!p.record_follower_fetch(2, Offset(3), 0));
    assert_eq!(p.high_watermark(), Offset(8));
}

#[test]
fn a_lagging_member_leaves_the_isr_only_once_the_controller_commits_it() {
    let mut p = leader(&[1, 2, 3], 1, 10);
    p.record_follower_fetch(2, Offset(10), LAG_MS);
    p.record_follower_fetch(3, Offset(2), LAG_MS);
    let proposal = p.propose_isr(LAG_MS + 1, LAG_MS).expect("3 has not caught up for too long");
    assert_eq!(proposal.isr, vec![1, 2]);
    assert!(p.propose_isr(LAG_MS + 1, LAG_MS).is_none(), "one proposal at a time");
    // Pending: the HW still waits for 3 (the maximal ISR).
    assert_eq!(p.high_watermark(), Offset(2));
    assert_eq!(p.apply_image(image(ME, 1, 2, &[1, 2]), LAG_MS + 1).unwrap(), Transition::None);
    assert_eq!(p.high_watermark(), Offset(10), "committed: 3 no longer holds it back");
}

#[test]
fn a_follower_caught_up_to_the_high_watermark_and_epoch_joins_the_isr() {
    let mut p = leader(&[1, 2], 1, 10);
    p.track_registrations(&BTreeMap::from([(2, 20), (3, 30)]));
    p.record_follower_fetch(2, Offset(10), 0);
    p.record_follower_fetch(3, Offset(9), 0);
    assert!(p.propose_isr(0, LAG_MS).is_none(), "3 is below the HW");
    p.record_follower_fetch(3, Offset(10), 0);
    let proposal = p.propose_isr(0, LAG_MS).expect("3 caught up");
    assert_eq!(proposal.isr, vec![1, 2, 3]);
    assert_eq!(proposal.joining, vec![(2, 20), (3, 30)], "each joiner's registration goes with it (KIP-903)");
    assert!(!p.isr_answered(), "answered: nothing moved");
}

#[test]
fn a_follower_that_registered_anew_starts_its_progress_over() {
    let mut p = leader(&[1, 2], 1, 10);
    p.track_registrations(&BTreeMap::from([(2, 20)]));
    p.record_follower_fetch(2, Offset(10), 0);
    p.track_registrations(&BTreeMap::from([(2, 25)]));
    p.append_as_leader(batch(1), 1, 0).unwrap();
    assert_eq!(p.high_watermark(), Offset(10), "the restarted follower's old progress no longer counts");
}

#[test]
fn acks_all_is_refused_below_min_isr_and_answered_once_the_hw_passes() {
    let mut small = leader(&[1], 2, 0);
    let refused = small.append_as_leader(batch(1), -1, 0).unwrap_err();
    assert_eq!(refused.error_code(), ErrorCode::NOT_ENOUGH_REPLICAS);
    assert!(small.append_as_leader(batch(1), 1, 0).is_ok(), "acks=1 does not need min ISR");

    let mut p = leader(&[1, 2], 2, 0);
    let (_, wait) = p.append_as_leader(batch(3), -1, 0).unwrap();
    let wait = wait.expect("acks=all waits");
    assert_eq!(p.acks_all_outcome(&wait), None, "the follower has not fetched it");
    p.record_follower_fetch(2, Offset(2), 0);
    assert_eq!(p.acks_all_outcome(&wait), None, "HW 2 does not pass offset 2");
    p.record_follower_fetch(2, Offset(3), 0);
    assert_eq!(p.acks_all_outcome(&wait), Some(ErrorCode::NONE));
}

#[test]
fn acks_all_fails_when_the_isr_shrinks_or_leadership_moves_while_it_waits() {
    let mut p = leader(&[1, 2, 3], 2, 0);
    let (_, wait) = p.append_as_leader(batch(1), -1, 0).unwrap();
    let wait = wait.unwrap();
    p.record_follower_fetch(2, Offset(1), 0);
    p.record_follower_fetch(3, Offset(1), 0);
    // The HW passed the batch, but the ISR shrank below min ISR before the answer went out.
    p.apply_image(image(ME, 1, 2, &[1]), 0).unwrap();
    assert_eq!(p.acks_all_outcome(&wait), Some(ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND));

    let mut q = leader(&[1, 2], 2, 0);
    let (_, wait) = q.append_as_leader(batch(1), -1, 0).unwrap();
    q.apply_image(image(2, 2, 2, &[1, 2]), 0).unwrap();
    assert_eq!(q.acks_all_outcome(&wait.unwrap()), Some(ErrorCode::NOT_LEADER_OR_FOLLOWER));
}

/// Strict min ISR (KIP-966): a lone leader below min ISR keeps acks=1 writes invisible, and an
/// acks=all batch waits (Kafka answers it when the HW passes it, or times it out), until the
/// ISR is back at min ISR.
#[test]
fn below_min_isr_the_high_watermark_stays_until_the_isr_recovers() {
    let mut p = leader(&[1, 2], 2, 0);
    let (_, wait) = p.append_as_leader(batch(1), -1, 0).unwrap();
    let wait = wait.unwrap();
    p.apply_image(image(ME, 1, 2, &[1]), 0).unwrap();
    p.append_as_leader(batch(2), 1, 0).unwrap();
    assert_eq!(p.high_watermark(), Offset(0), "nothing becomes visible on a lone leader below min ISR");
    assert_eq!(p.acks_all_outcome(&wait), None, "acks=all waits");
    p.record_follower_fetch(2, Offset(3), 0);
    assert_eq!(p.high_watermark(), Offset(0), "a follower outside the ISR does not move it either");
    p.apply_image(image(ME, 1, 3, &[1, 2]), 0).unwrap();
    p.isr_answered();
    assert_eq!(p.high_watermark(), Offset(3), "back at min ISR: everything the ISR holds is visible");
    assert_eq!(p.acks_all_outcome(&wait), Some(ErrorCode::NONE));
}

#[test]
fn a_new_leader_serves_clients_only_once_its_hw_reaches_its_epoch_start() {
    let mut p = replica(1);
    assert_eq!(p.apply_image(image(2, 1, 1, &[1, 2]), 0).unwrap(), Transition::BecameFollower);
    p.append_as_follower(&replicated(5, 1, 0), 0, LeaderEpoch(1)).unwrap();
    p.update_follower_high_watermark(Offset(3));
    assert_eq!(p.high_watermark(), Offset(3));
    assert!(p.append_as_leader(batch(1), 1, 0).is_err(), "a follower takes no client writes");
    assert_eq!(p.apply_image(image(ME, 2, 2, &[1, 2]), 0).unwrap(), Transition::BecameLeader);
    assert!(!p.high_watermark_established(), "HW 3 is below the epoch start 5");
    p.record_follower_fetch(2, Offset(5), 0);
    assert!(p.high_watermark_established());
    assert_eq!(p.log().end_offset_for_epoch(LeaderEpoch(2)).1, Offset(5), "the epoch starts in the log at once");
}

#[test]
fn a_follower_truncation_takes_the_high_watermark_down_with_the_log() {
    let mut p = replica(1);
    p.apply_image(image(2, 1, 1, &[1, 2]), 0).unwrap();
    for offset in 0..8 {
        p.append_as_follower(&replicated(1, 1, offset), 0, LeaderEpoch(1)).unwrap();
    }
    p.update_follower_high_watermark(Offset(20));
    assert_eq!(p.high_watermark(), Offset(8), "capped by the local log end");
    p.truncate_as_follower(Offset(5)).unwrap();
    assert_eq!((p.log().log_end_offset(), p.high_watermark()), (Offset(5), Offset(5)));
    p.truncate_as_follower(Offset(9)).unwrap();
    assert_eq!(p.log().log_end_offset(), Offset(5), "a target past the end changes nothing");
}

/// The deep sweep's story (swarm-replicated seeds 2396, 6669): a leader elected at epoch 2
/// with log end 8 appends nothing and is deposed; told that epoch 1 ends at its own log end,
/// it has nothing to cut, yet it must forget "epoch 2 starts at 8" before it takes the new
/// leader's epoch-1 tail, or it tells followers that epoch 1 ends at 8.
#[test]
fn a_deposed_leader_that_appended_nothing_forgets_its_epoch_when_it_follows() {
    let mut p = leader(&[1, 2], 1, 8);
    p.apply_image(image(ME, 2, 2, &[1]), 0).unwrap(); // re-elected at epoch 2, which starts at 8
    p.apply_image(image(2, 3, 3, &[2]), 0).unwrap();
    assert_eq!(p.log().end_offset_for_epoch(LeaderEpoch(1)).1, Offset(8));
    p.truncate_as_follower(Offset(8)).unwrap();
    p.append_as_follower(&replicated(2, 1, 8), 0, LeaderEpoch(3)).unwrap();
    assert_eq!(p.log().end_offset_for_epoch(LeaderEpoch(1)), (LeaderEpoch(1), Offset(10)));
}

#[test]
fn older_metadata_is_ignored() {
    let mut p = leader(&[1, 2], 1, 0);
    assert_eq!(p.apply_image(image(2, 0, 1, &[1, 2]), 0).unwrap(), Transition::None);
    assert!(p.is_leader());
}

#[test]
#[should_panic(expected = "leader epoch went back")]
fn a_leader_epoch_going_back_stops_the_process() {
    let mut p = leader(&[1, 2], 1, 0);
    p.apply_image(image(2, 0, 5, &[1, 2]), 0).unwrap();
}

#[test]
#[should_panic(expected = "a leader never truncates")]
fn a_leader_truncating_stops_the_process() {
    let mut p = leader(&[1, 2], 1, 3);
    let _ = p.truncate_as_follower(Offset(1));
}

#[test]
fn every_mutation_is_counted_for_the_observation_tap() {
    let mut p = leader(&[1, 2], 1, 0);
    let before = p.changes();
    p.append_as_leader(batch(1), 1, 0).unwrap();
    assert!(p.changes() > before);
    let before = p.changes();
    let _ = p.high_watermark();
    let _ = p.state();
    assert_eq!(p.changes(), before, "reads change nothing");
}

/// Found by the simulator once retention ran (swarm-replicated seed 1973): a follower whose
/// fetch fell below the leader's log start restarted its log there and kept HW 0, below its
/// own log start.
#[test]
fn a_follower_restarted_past_retention_keeps_its_high_watermark_at_its_log_start() {
    let mut p = replica(1);
    assert_eq!(p.apply_image(image(2, 1, 1, &[1, 2]), 0).unwrap(), Transition::BecameFollower);
    p.restart_as_follower_at(Offset(5)).unwrap();
    assert_eq!((p.log().log_start_offset(), p.high_watermark()), (Offset(5), Offset(5)));
    p.update_follower_high_watermark(Offset(3));
    assert_eq!(p.high_watermark(), Offset(5), "a stale leader HW below the start does not move it back");
}
