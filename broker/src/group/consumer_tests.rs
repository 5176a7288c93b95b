//! KIP-848 consumer groups, driven as the server drives the coordinator: heartbeats with
//! waiter ids, writes "committed" by the test, time passed in.

use super::consumer::{ConsumerHeartbeat, HeartbeatReply, TopicLookup};
use super::consumer_records::{Assignment, ConsumerRecord, MemberState};
use super::records::{GroupRecord, OffsetValue};
use super::*;
use crate::types::TopicPartition;

const TOPIC: u128 = 7;
/// One topic, `t`, with four partitions.
const TOPICS: TopicLookup = &|name| (name == "t").then_some((TOPIC, 4));
const SESSION_MS: i64 = 45_000;

fn coordinator() -> GroupCoordinator {
    let mut c = GroupCoordinator::new(GroupConfig { offsets_partitions: 1, ..GroupConfig::default() });
    let _ = c.begin_load(0, 1);
    c.finish_load(0, 1, Vec::new(), 0);
    c
}

fn parts(ps: &[i32]) -> Assignment {
    if ps.is_empty() {
        return Assignment::new();
    }
    Assignment::from([(TOPIC, ps.iter().copied().collect())])
}

fn join(member: &str) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        version: 1,
        group_id: "g".to_string(),
        member_id: member.to_string(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(vec!["t".to_string()]),
        subscribed_topic_regex: Some(String::new()),
        topic_partitions: Some(Assignment::new()),
        client_id: "c".to_string(),
        client_host: "/10.0.0.1".to_string(),
        ..ConsumerHeartbeat::default()
    }
}

/// A steady heartbeat: nothing restated but what the member owns.
fn beat(member: &str, epoch: i32, owned: Option<&[i32]>) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        version: 1,
        group_id: "g".to_string(),
        member_id: member.to_string(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        topic_partitions: owned.map(parts),
        client_id: "c".to_string(),
        client_host: "/10.0.0.1".to_string(),
        ..ConsumerHeartbeat::default()
    }
}

/// Sends a heartbeat, commits every write it (and what follows) asks for, and returns the
/// answer.
fn send(c: &mut GroupCoordinator, now: i64, request: ConsumerHeartbeat) -> HeartbeatReply {
    let out = c.consumer_heartbeat(now, request, 1, TOPICS);
    let out = commit(c, now, out);
    reply(&out, 1)
}

fn commit(c: &mut GroupCoordinator, now: i64, mut out: Output) -> Output {
    let mut done = Output { replies: std::mem::take(&mut out.replies), writes: Vec::new() };
    for write in std::mem::take(&mut out.writes) {
        done.writes.push(write.clone());
        let next = c.written(now, &write, Ok(()), TOPICS);
        done.append(commit(c, now, next));
    }
    done
}

fn reply(out: &Output, waiter: WaiterId) -> HeartbeatReply {
    match out.replies.iter().find(|(w, _)| *w == waiter) {
        Some((_, Reply::ConsumerHeartbeat(reply))) => reply.clone(),
        other => panic!("no heartbeat reply for waiter {waiter}: {other:?} in {out:?}"),
    }
}

fn consumer_records(write: &Write) -> Vec<ConsumerRecord> {
    write
        .records
        .iter()
        .filter_map(|r| match r {
            GroupRecord::Consumer { record, .. } => Some(record.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_first_member_joins_with_kafkas_records_and_gets_every_partition() {
    let mut c = coordinator();
    let out = c.consumer_heartbeat(0, join("m1"), 1, TOPICS);
    assert!(out.replies.is_empty(), "answered once the records are committed");
    let kinds: Vec<i16> = consumer_records(&out.writes[0]).iter().map(ConsumerRecord::key_type).collect();
    assert_eq!(kinds, vec![5, 4, 3, 7, 6, 8], "member, topics, epoch, target, target epoch, current");
    let out = commit(&mut c, 0, out);
    let r = reply(&out, 1);
    assert_eq!((r.error, r.member_epoch, r.member_id.as_deref()), (ErrorCode::NONE, 1, Some("m1")));
    assert_eq!(r.assignment, Some(parts(&[0, 1, 2, 3])));
    assert_eq!(r.heartbeat_interval_ms, 5_000);
    // A steady heartbeat writes nothing and carries no assignment.
    let out = c.consumer_heartbeat(100, beat("m1", 1, Some(&[0, 1, 2, 3])), 2, TOPICS);
    assert!(out.writes.is_empty());
    assert_eq!((reply(&out, 2).member_epoch, reply(&out, 2).assignment), (1, None));
}

/// The story KIP-848 exists for: a partition moves only after its owner gave it up.
#[test]
fn a_new_member_gets_partitions_only_after_their_owner_acknowledges_the_revocation() {
    let mut c = coordinator();
    send(&mut c, 0, join("m1"));
    let m2 = send(&mut c, 10, join("m2"));
    assert_eq!((m2.member_epoch, m2.assignment.clone()), (2, Some(Assignment::new())), "nothing free yet");
    // m1 learns what to give up; it keeps its epoch until it has.
    let m1 = send(&mut c, 20, beat("m1", 1, Some(&[0, 1, 2, 3])));
    assert_eq!(m1.member_epoch, 1);
    let kept = m1.assignment.clone().expect("a changed assignment is sent");
    assert_eq!(kept.values().map(|p| p.len()).sum::<usize>(), 2);
    let m2_again = send(&mut c, 30, beat("m2", 2, Some(&[])));
    assert_eq!(m2_again.assignment, None, "still nothing: m1 has not acknowledged");
    let kept: Vec<i32> = kept[&TOPIC].iter().copied().collect();
    let m1_acked = send(&mut c, 40, beat("m1", 1, Some(&kept)));
    assert_eq!(m1_acked.member_epoch, 2);
    let m2_done = send(&mut c, 50, beat("m2", 2, Some(&[])));
    let got: Vec<i32> = m2_done.assignment.expect("its partitions")[&TOPIC].iter().copied().collect();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| !kept.contains(p)), "{got:?} vs {kept:?}");
    let description = c.describe_consumer("g").unwrap();
    assert_eq!((description.state, description.group_epoch), ("Stable", 2));
}

#[test]
fn heartbeats_wait_while_the_groups_records_are_written_and_are_decided_in_order() {
    let mut c = coordinator();
    let first = c.consumer_heartbeat(0, join("m1"), 1, TOPICS);
    let second = c.consumer_heartbeat(0, join("m2"), 2, TOPICS);
    assert!(second.replies.is_empty() && second.writes.is_empty(), "queued behind m1's write");
    let out = commit(&mut c, 0, first);
    assert_eq!(reply(&out, 1).member_epoch, 1);
    assert_eq!(reply(&out, 2).member_epoch, 2, "decided after m1's records were applied");
}

#[test]
fn a_member_that_stops_heartbeating_is_removed_when_its_session_ends() {
    let mut c = coordinator();
    send(&mut c, 0, join("m1"));
    send(&mut c, 0, join("m2"));
    let ticked = c.tick(SESSION_MS - 1);
    let out = commit(&mut c, SESSION_MS - 1, ticked);
    assert!(out.writes.is_empty());
    send(&mut c, SESSION_MS - 1, beat("m1", 1, None));
    let ticked = c.tick(SESSION_MS);
    let out = commit(&mut c, SESSION_MS, ticked);
    assert_eq!(out.writes.len(), 1, "m2 timed out");
    let d = c.describe_consumer("g").unwrap();
    assert_eq!(d.members.iter().map(|m| m.member_id.as_str()).collect::<Vec<_>>(), vec!["m1"]);
    assert_eq!(d.group_epoch, 3);
    let r = send(&mut c, SESSION_MS + 1, beat("m2", 2, Some(&[])));
    assert_eq!(r.error, ErrorCode::UNKNOWN_MEMBER_ID);
}

#[test]
fn member_epochs_ahead_or_behind_are_fenced_but_a_retry_at_the_previous_epoch_is_answered() {
    let mut c = coordinator();
    send(&mut c, 0, join("m1"));
    assert_eq!(send(&mut c, 1, beat("m1", 2, None)).error, ErrorCode::FENCED_MEMBER_EPOCH);
    // The answer to the join (epoch 1) was lost: the retry at epoch 0 owning nothing is fine.
    let retry = send(&mut c, 2, join("m1"));
    assert_eq!((retry.error, retry.member_epoch), (ErrorCode::NONE, 1));
    assert_eq!(retry.assignment, Some(parts(&[0, 1, 2, 3])));
    send(&mut c, 3, join("m2"));
    let m1 = send(&mut c, 4, beat("m1", 1, Some(&[0, 1, 2, 3])));
    let kept: Vec<i32> = m1.assignment.unwrap()[&TOPIC].iter().copied().collect();
    send(&mut c, 5, beat("m1", 1, Some(&kept)));
    // Epoch 1 with more than it is assigned is not a retry.
    assert_eq!(send(&mut c, 6, beat("m1", 1, Some(&[0, 1, 2, 3]))).error, ErrorCode::FENCED_MEMBER_EPOCH);
}

#[test]
fn a_static_member_that_leaves_for_now_returns_to_its_partitions_without_a_new_group_epoch() {
    let mut c = coordinator();
    let static_join = |member: &str| ConsumerHeartbeat { instance_id: Some("i-1".to_string()), ..join(member) };
    send(&mut c, 0, static_join("a"));
    send(&mut c, 0, join("b"));
    let a = send(
        &mut c,
        1,
        ConsumerHeartbeat { instance_id: Some("i-1".to_string()), ..beat("a", 1, Some(&[0, 1, 2, 3])) },
    );
    let kept: Vec<i32> = a.assignment.unwrap()[&TOPIC].iter().copied().collect();
    send(&mut c, 2, ConsumerHeartbeat { instance_id: Some("i-1".to_string()), ..beat("a", 1, Some(&kept)) });
    let epoch_before = c.describe_consumer("g").unwrap().group_epoch;
    let left = send(&mut c, 3, ConsumerHeartbeat { instance_id: Some("i-1".to_string()), ..beat("a", -2, None) });
    assert_eq!((left.error, left.member_epoch), (ErrorCode::NONE, -2));
    // A second instance with the same id is refused while the first holds it; the restarted
    // process (a new member id) takes its place and partitions.
    let back = send(&mut c, 4, static_join("a-restarted"));
    assert_eq!(back.error, ErrorCode::NONE);
    assert_eq!(back.assignment.unwrap()[&TOPIC].iter().copied().collect::<Vec<_>>(), kept);
    assert_eq!(c.describe_consumer("g").unwrap().group_epoch, epoch_before, "nobody rebalanced");
    assert_eq!(send(&mut c, 5, static_join("a-third")).error, ErrorCode::UNRELEASED_INSTANCE_ID);
}

#[test]
fn commits_and_fetches_of_a_consumer_group_need_the_members_current_epoch() {
    let mut c = coordinator();
    send(&mut c, 0, join("m1"));
    let commit_at = |epoch: i32, version: i16| CommitRequest {
        group_id: "g".to_string(),
        generation_id: epoch,
        member_id: "m1".to_string(),
        group_instance_id: None,
        version,
        offsets: vec![(
            TopicPartition::new("t", 0),
            OffsetValue { offset: 5, leader_epoch: 0, metadata: String::new(), commit_timestamp_ms: 1 },
        )],
    };
    assert_eq!(c.commit_offsets(1, commit_at(0, 9)).0[0].1, ErrorCode::STALE_MEMBER_EPOCH);
    assert_eq!(c.commit_offsets(1, commit_at(1, 8)).0[0].1, ErrorCode::UNSUPPORTED_VERSION);
    let (codes, write) = c.commit_offsets(1, commit_at(1, 9));
    assert_eq!(codes[0].1, ErrorCode::NONE);
    commit(&mut c, 1, Output { replies: Vec::new(), writes: vec![write.unwrap()] });
    assert_eq!(c.fetch_offsets("g", None).unwrap()[0].1.as_ref().unwrap().offset, 5);
    assert_eq!(c.check_consumer_fetch("g", Some("m1"), 0), ErrorCode::STALE_MEMBER_EPOCH);
    assert_eq!(c.check_consumer_fetch("g", Some("nobody"), 1), ErrorCode::UNKNOWN_MEMBER_ID);
    assert_eq!(c.check_consumer_fetch("g", None, -1), ErrorCode::NONE);
}

/// A new coordinator replays the group: member epochs and assignments survive a failover, so
/// members keep their partitions.
#[test]
fn a_coordinator_that_loads_the_records_keeps_every_members_epoch_and_partitions() {
    let mut c = coordinator();
    let mut log = Vec::new();
    for (now, request) in [(0, join("m1")), (1, join("m2")), (2, beat("m1", 1, Some(&[0, 1, 2, 3])))] {
        let out = c.consumer_heartbeat(now, request, 1, TOPICS);
        let out = commit(&mut c, now, out);
        log.extend(out.writes.into_iter().flat_map(|w| w.records));
    }
    let before = c.describe_consumer("g").unwrap();
    let mut reloaded = coordinator();
    let _ = reloaded.begin_load(0, 2);
    reloaded.finish_load(0, 2, log, 10);
    assert_eq!(reloaded.describe_consumer("g").unwrap(), before);
    let m1 = reloaded.consumer_groups["g"].members["m1"].current.clone();
    assert_eq!((m1.member_epoch, m1.state), (1, MemberState::UnrevokedPartitions));
}

#[test]
fn a_failed_write_loads_the_partition_again_before_anything_more_is_decided() {
    let mut c = coordinator();
    let out = c.consumer_heartbeat(0, join("m1"), 1, TOPICS);
    let queued = c.consumer_heartbeat(0, join("m2"), 2, TOPICS);
    assert!(queued.replies.is_empty());
    let out = c.written(0, &out.writes[0], Err(ErrorCode::COORDINATOR_NOT_AVAILABLE), TOPICS);
    assert_eq!(reply(&out, 1).error, ErrorCode::COORDINATOR_NOT_AVAILABLE);
    assert_eq!(reply(&out, 2).error, ErrorCode::NOT_COORDINATOR, "the queue is answered: the partition reloads");
    assert_eq!(c.partitions()[&0], LoadState::Loading { leader_epoch: 1 });
}

#[test]
fn requests_kafka_refuses_are_refused_with_its_codes() {
    let mut c = coordinator();
    let cases = [
        (ConsumerHeartbeat { rebalance_timeout_ms: -1, ..join("m") }, ErrorCode::INVALID_REQUEST),
        (ConsumerHeartbeat { topic_partitions: None, ..join("m") }, ErrorCode::INVALID_REQUEST),
        (ConsumerHeartbeat { member_id: String::new(), ..join("m") }, ErrorCode::INVALID_REQUEST),
        (ConsumerHeartbeat { member_epoch: -3, ..beat("m", 0, None) }, ErrorCode::INVALID_REQUEST),
        (
            ConsumerHeartbeat { server_assignor: Some("bogus".to_string()), ..join("m") },
            ErrorCode::UNSUPPORTED_ASSIGNOR,
        ),
        (
            ConsumerHeartbeat { subscribed_topic_regex: Some("^t.*".to_string()), ..join("m") },
            ErrorCode::INVALID_REGULAR_EXPRESSION,
        ),
        (beat("m", 3, None), ErrorCode::GROUP_ID_NOT_FOUND),
        (
            ConsumerHeartbeat { subscribed_topic_names: Some(vec!["t".repeat(10_000); 30]), ..join("m") },
            ErrorCode::INVALID_REQUEST,
        ),
    ];
    for (request, code) in cases {
        assert_eq!(send(&mut c, 0, request.clone()).error, code, "{request:?}");
    }
    // v0 may join without a member id: the coordinator makes one up.
    let made_up = send(&mut c, 0, ConsumerHeartbeat { version: 0, member_id: String::new(), ..join("") });
    assert_eq!(made_up.member_id.map(|m| m.len()), Some(22));
}

#[test]
fn an_empty_classic_group_and_an_empty_consumer_group_change_places_keeping_offsets() {
    let mut c = coordinator();
    let offset = OffsetValue { offset: 9, leader_epoch: 0, metadata: String::new(), commit_timestamp_ms: 1 };
    let admin_commit = CommitRequest {
        group_id: "g".to_string(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        version: 8,
        offsets: vec![(TopicPartition::new("t", 0), offset)],
    };
    let (_, write) = c.commit_offsets(0, admin_commit);
    commit(&mut c, 0, Output { replies: Vec::new(), writes: vec![write.unwrap()] });
    assert_eq!(send(&mut c, 1, join("m1")).error, ErrorCode::NONE);
    assert!(c.is_consumer_group("g"));
    assert_eq!(c.fetch_offsets("g", None).unwrap()[0].1.as_ref().unwrap().offset, 9);
    // A classic member cannot join while consumer-protocol members are in.
    let mut classic_join = JoinRequest {
        group_id: "g".to_string(),
        member_id: String::new(),
        group_instance_id: None,
        client_id: "c".to_string(),
        client_host: "/h".to_string(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".to_string(),
        protocols: vec![("range".to_string(), bytes::Bytes::new())],
        require_known_member_id: true,
        member_id_entropy: 1,
    };
    let refused = c.join(2, classic_join.clone(), 5);
    assert!(matches!(&refused.replies[0].1, Reply::Join(r) if r.error == ErrorCode::INCONSISTENT_GROUP_PROTOCOL));
    send(&mut c, 3, beat("m1", -1, None));
    // Empty now: the first classic join removes the consumer group and is asked to retry.
    let joined = c.join(4, classic_join.clone(), 6);
    let out = commit(&mut c, 4, joined);
    assert!(matches!(&out.replies[0].1, Reply::Join(r) if r.error == ErrorCode::COORDINATOR_LOAD_IN_PROGRESS));
    assert!(!c.is_consumer_group("g"));
    assert_eq!(c.fetch_offsets("g", None).unwrap()[0].1.as_ref().unwrap().offset, 9, "the offsets stay");
    classic_join.member_id_entropy = 2;
    let out = c.join(5, classic_join, 7);
    assert!(matches!(&out.replies[0].1, Reply::Join(r) if r.error == ErrorCode::MEMBER_ID_REQUIRED));
}

/// Subscribing to a topic that does not exist is no error; once it is created, the next
/// heartbeat moves the group to a new epoch and assigns it. A member that stops subscribing to
/// a topic gives its partitions up.
#[test]
fn topics_created_later_or_unsubscribed_move_the_group_to_a_new_epoch() {
    let mut c = coordinator();
    let both = ConsumerHeartbeat { subscribed_topic_names: Some(vec!["t".to_string(), "u".to_string()]), ..join("m1") };
    let joined = send(&mut c, 0, both);
    assert_eq!((joined.member_epoch, joined.assignment), (1, Some(parts(&[0, 1, 2, 3]))));
    let with_u: TopicLookup = &|name| match name {
        "t" => Some((TOPIC, 4)),
        "u" => Some((8, 2)),
        _ => None,
    };
    let out = c.consumer_heartbeat(1, beat("m1", 1, Some(&[0, 1, 2, 3])), 2, with_u);
    let written = out.writes.clone();
    let mut done = Output { replies: out.replies, writes: Vec::new() };
    for write in written {
        done.append(c.written(1, &write, Ok(()), with_u));
    }
    let r = reply(&done, 2);
    assert_eq!(r.member_epoch, 2);
    assert_eq!(r.assignment.unwrap()[&8], [0, 1].into_iter().collect());
    // Dropping `u` from the subscription: its partitions are revoked.
    let only_t =
        ConsumerHeartbeat { subscribed_topic_names: Some(vec!["t".to_string()]), ..beat("m1", 2, Some(&[0, 1, 2, 3])) };
    let out = c.consumer_heartbeat(2, only_t, 3, with_u);
    let written = out.writes.clone();
    let mut done = Output { replies: out.replies, writes: Vec::new() };
    for write in written {
        done.append(c.written(2, &write, Ok(()), with_u));
    }
    let r = reply(&done, 3);
    assert_eq!((r.member_epoch, r.assignment), (3, Some(parts(&[0, 1, 2, 3]))));
    assert_eq!(c.describe_consumer("g").unwrap().group_epoch, 3);
}

/// A write that ends after its partition moved away (or was loaded again) changes nothing: the
/// coordinator that loads the partition reads it from the log.
#[test]
fn a_write_that_ends_after_the_partition_was_unloaded_changes_nothing() {
    let mut c = coordinator();
    let out = c.consumer_heartbeat(0, join("m1"), 1, TOPICS);
    let _ = c.unload(0);
    let late = c.written(0, &out.writes[0], Ok(()), TOPICS);
    assert_eq!(reply(&late, 1).error, ErrorCode::NOT_COORDINATOR);
    assert!(!c.is_consumer_group("g"), "no group state for a partition this broker does not lead");
    let _ = c.begin_load(0, 2);
    c.finish_load(0, 2, out.writes[0].records.clone(), 0);
    assert_eq!(c.describe_consumer("g").unwrap().members.len(), 1, "the new load has it");
}

#[test]
fn a_full_group_refuses_new_members_but_not_its_own() {
    let consumer = ConsumerGroupConfig { max_size: 1, ..ConsumerGroupConfig::default() };
    let mut c = GroupCoordinator::new(GroupConfig { offsets_partitions: 1, consumer, ..GroupConfig::default() });
    let _ = c.begin_load(0, 1);
    c.finish_load(0, 1, Vec::new(), 0);
    send(&mut c, 0, join("m1"));
    assert_eq!(send(&mut c, 1, join("m2")).error, ErrorCode::GROUP_MAX_SIZE_REACHED);
    assert_eq!(send(&mut c, 2, beat("m1", 1, Some(&[0, 1, 2, 3]))).error, ErrorCode::NONE);
}
