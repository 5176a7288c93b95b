//! The group coordinator's stories, driven as the server drives it: requests with waiter ids,
//! writes "committed" by the test, time passed in.

use super::*;
use crate::types::TopicPartition;

/// A topic lookup that finds nothing (classic groups never look).
const NO_TOPICS: consumer::TopicLookup = &|_| None;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const DELAY_MS: i64 = 3_000;

fn coordinator() -> GroupCoordinator {
    let config = GroupConfig {
        offsets_partitions: 1,
        initial_rebalance_delay_ms: DELAY_MS,
        max_size: 3,
        ..GroupConfig::default()
    };
    let mut c = GroupCoordinator::new(config);
    let _ = c.begin_load(0, 1);
    c.finish_load(0, 1, Vec::new(), 0);
    c
}

fn join(member_id: &str, entropy: u128) -> JoinRequest {
    JoinRequest {
        group_id: "g".to_string(),
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "client".to_string(),
        client_host: "/10.0.0.1".to_string(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".to_string(),
        protocols: vec![("range".to_string(), Bytes::from_static(b"sub"))],
        require_known_member_id: true,
        member_id_entropy: entropy,
    }
}

fn sync(member_id: &str, generation_id: i32, assignments: &[(&str, &'static [u8])]) -> SyncRequest {
    SyncRequest {
        group_id: "g".to_string(),
        member_id: member_id.to_string(),
        group_instance_id: None,
        generation_id,
        protocol_type: Some("consumer".to_string()),
        protocol_name: Some("range".to_string()),
        assignments: assignments.iter().map(|(m, a)| (m.to_string(), Bytes::from_static(a))).collect(),
    }
}

fn join_reply(out: &Output, waiter: WaiterId) -> JoinReply {
    match out.replies.iter().find(|(w, _)| *w == waiter) {
        Some((_, Reply::Join(reply))) => reply.clone(),
        other => panic!("no join reply for waiter {waiter}: {other:?} in {out:?}"),
    }
}

fn sync_reply(out: &Output, waiter: WaiterId) -> SyncReply {
    match out.replies.iter().find(|(w, _)| *w == waiter) {
        Some((_, Reply::Sync(reply))) => reply.clone(),
        other => panic!("no sync reply for waiter {waiter}: {other:?} in {out:?}"),
    }
}

/// A member that asks for an id, then joins with it (parked).
fn new_member(c: &mut GroupCoordinator, now: i64, entropy: u128, waiter: WaiterId) -> (String, Output) {
    let out = c.join(now, join("", entropy), waiter);
    let reply = join_reply(&out, waiter);
    assert_eq!(reply.error, ErrorCode::MEMBER_ID_REQUIRED);
    let out = c.join(now, join(&reply.member_id, 0), waiter + 1);
    (reply.member_id, out)
}

/// Commits what the coordinator asked to write, in order, and collects what follows.
fn commit_writes(c: &mut GroupCoordinator, now: i64, mut out: Output) -> Output {
    let mut done = Output { replies: std::mem::take(&mut out.replies), writes: Vec::new() };
    for write in std::mem::take(&mut out.writes) {
        let next = c.written(now, &write, Ok(()), NO_TOPICS);
        done.append(commit_writes(c, now, next));
        done.writes.push(write);
    }
    done
}

/// Two members in a stable generation 1: returns (leader, follower).
fn stable_pair(c: &mut GroupCoordinator) -> (String, String) {
    let (a, out) = new_member(c, 0, 1, 10);
    assert!(out.replies.is_empty(), "the first rebalance waits the initial delay");
    let (b, out) = new_member(c, 100, 2, 20);
    assert!(out.replies.is_empty());
    let out = c.tick(DELAY_MS + 100);
    let (ra, rb) = (join_reply(&out, 11), join_reply(&out, 21));
    assert_eq!((ra.generation_id, rb.generation_id), (1, 1));
    assert_eq!(ra.leader, a, "the first member to join leads");
    assert_eq!(ra.members.len(), 2, "the leader gets the member list");
    assert!(rb.members.is_empty(), "followers do not");
    assert_eq!(ra.protocol_name.as_deref(), Some("range"));
    let out = c.sync(DELAY_MS + 200, sync(&b, 1, &[]), 22);
    assert!(out.replies.is_empty(), "a follower waits for the leader's assignment");
    let out = c.sync(DELAY_MS + 300, sync(&a, 1, &[(&a, b"A"), (&b, b"B")]), 12);
    assert!(out.replies.is_empty(), "nobody is answered before the assignment is written");
    assert_eq!(out.writes.len(), 1);
    let out = commit_writes(c, DELAY_MS + 400, out);
    assert_eq!(sync_reply(&out, 12).assignment, Bytes::from_static(b"A"));
    assert_eq!(sync_reply(&out, 22).assignment, Bytes::from_static(b"B"));
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
    (a, b)
}

#[test]
fn two_members_join_one_generation_and_each_gets_the_leaders_assignment() {
    let mut c = coordinator();
    let (a, b) = stable_pair(&mut c);
    assert_eq!(c.heartbeat(DELAY_MS + 500, "g", &a, None, 1), ErrorCode::NONE);
    assert_eq!(c.heartbeat(DELAY_MS + 500, "g", &b, None, 0), ErrorCode::ILLEGAL_GENERATION);
    assert_eq!(c.heartbeat(DELAY_MS + 500, "g", "stranger", None, 1), ErrorCode::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_member_that_misses_its_session_is_removed_and_the_others_rebalance_without_it() {
    let mut c = coordinator();
    let (a, b) = stable_pair(&mut c);
    let t = DELAY_MS + 400;
    // a keeps heartbeating; b falls silent.
    assert_eq!(c.heartbeat(t + 5_000, "g", &a, None, 1), ErrorCode::NONE);
    let out = c.tick(t + i64::from(SESSION_MS) + 1);
    assert!(out.replies.is_empty());
    assert_eq!(c.describe("g").unwrap().state, GroupState::PreparingRebalance);
    assert_eq!(c.heartbeat(t + 10_500, "g", &a, None, 1), ErrorCode::REBALANCE_IN_PROGRESS);
    assert_eq!(c.heartbeat(t + 10_500, "g", &b, None, 1), ErrorCode::UNKNOWN_MEMBER_ID);
    let out = c.join(t + 10_600, join(&a, 0), 30);
    let reply = join_reply(&out, 30);
    assert_eq!((reply.generation_id, reply.members.len()), (2, 1), "generation 2 has a alone");
}

#[test]
fn a_rebalance_completes_at_its_timeout_without_the_members_that_did_not_rejoin() {
    let mut c = coordinator();
    let (a, b) = stable_pair(&mut c);
    let t = DELAY_MS + 1_000;
    let (_c3, out) = new_member(&mut c, t, 3, 40);
    assert!(out.replies.is_empty());
    let out = c.join(t + 100, join(&a, 0), 50);
    assert!(out.replies.is_empty(), "b has not rejoined yet");
    // b keeps heartbeating (it would be told to rejoin) but never does.
    for step in 1..=5 {
        let _ = c.heartbeat(t + step * 5_000, "g", &b, None, 1);
    }
    let out = c.tick(t + i64::from(REBALANCE_MS) + 1);
    let reply = join_reply(&out, 50);
    assert_eq!(reply.generation_id, 2);
    assert_eq!(reply.members.len(), 2, "a and the newcomer; b is gone");
    assert!(reply.members.iter().all(|m| m.member_id != b));
}

#[test]
fn commits_are_fenced_by_member_and_generation_and_visible_only_once_written() {
    let mut c = coordinator();
    let (a, _b) = stable_pair(&mut c);
    let tp = TopicPartition::new("orders", 0);
    let value = |offset| OffsetValue { offset, leader_epoch: 3, metadata: String::new(), commit_timestamp_ms: 1 };
    let commit = |generation_id, member: &str, offset| CommitRequest {
        version: 8,
        group_id: "g".to_string(),
        generation_id,
        member_id: member.to_string(),
        group_instance_id: None,
        offsets: vec![(tp.clone(), value(offset))],
    };
    let (codes, write) = c.commit_offsets(10_000, commit(0, &a, 5));
    assert_eq!((codes[0].1, write), (ErrorCode::ILLEGAL_GENERATION, None), "an old generation");
    let (codes, _) = c.commit_offsets(10_000, commit(1, "ghost", 5));
    assert_eq!(codes[0].1, ErrorCode::UNKNOWN_MEMBER_ID);
    let (codes, _) = c.commit_offsets(10_000, commit(-1, "", 5));
    assert_eq!(codes[0].1, ErrorCode::UNKNOWN_MEMBER_ID, "a group with members takes no anonymous commits");
    let (codes, write) = c.commit_offsets(10_000, commit(1, &a, 7));
    assert_eq!(codes[0].1, ErrorCode::NONE);
    let write = write.expect("records to write");
    assert_eq!(c.fetch_offsets("g", Some(std::slice::from_ref(&tp))).unwrap()[0].1, None, "not before it is committed");
    let _ = c.written(10_001, &write, Ok(()), NO_TOPICS);
    assert_eq!(c.fetch_offsets("g", Some(std::slice::from_ref(&tp))).unwrap()[0].1, Some(value(7)));
    // A failed write changes nothing.
    let (_, write) = c.commit_offsets(10_002, commit(1, &a, 9));
    let _ = c.written(10_003, &write.unwrap(), Err(ErrorCode::NOT_COORDINATOR), NO_TOPICS);
    assert_eq!(c.fetch_offsets("g", None).unwrap(), vec![(tp, Some(value(7)))]);
}

#[test]
fn a_consumer_without_group_management_commits_to_an_empty_group() {
    let mut c = coordinator();
    let tp = TopicPartition::new("orders", 1);
    let value = OffsetValue { offset: 11, leader_epoch: -1, metadata: "m".to_string(), commit_timestamp_ms: 1 };
    let request = CommitRequest {
        version: 8,
        group_id: "solo".to_string(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        offsets: vec![(tp.clone(), value.clone())],
    };
    let (codes, write) = c.commit_offsets(1, request.clone());
    assert_eq!(codes[0].1, ErrorCode::NONE);
    let _ = c.written(2, &write.unwrap(), Ok(()), NO_TOPICS);
    assert_eq!(c.fetch_offsets("solo", None).unwrap(), vec![(tp, Some(value))]);
    let too_large = CommitRequest {
        version: 8,
        offsets: vec![(
            TopicPartition::new("orders", 2),
            OffsetValue { offset: 1, leader_epoch: -1, metadata: "x".repeat(5_000), commit_timestamp_ms: 1 },
        )],
        ..request
    };
    assert_eq!(c.commit_offsets(3, too_large).0[0].1, ErrorCode::OFFSET_METADATA_TOO_LARGE);
}

#[test]
fn a_new_coordinator_loads_the_group_and_its_offsets_from_the_records() {
    let mut c = coordinator();
    let (a, b) = stable_pair(&mut c);
    let tp = TopicPartition::new("orders", 0);
    let request = CommitRequest {
        version: 8,
        group_id: "g".to_string(),
        generation_id: 1,
        member_id: b.clone(),
        group_instance_id: None,
        offsets: vec![(
            tp.clone(),
            OffsetValue { offset: 42, leader_epoch: 1, metadata: String::new(), commit_timestamp_ms: 5 },
        )],
    };
    let (_, write) = c.commit_offsets(10_000, request);
    let committed = commit_writes(&mut c, 10_001, Output { replies: vec![], writes: vec![write.unwrap()] });
    // Everything the first coordinator wrote, in order: the generation, then the commit.
    let mut records: Vec<GroupRecord> = Vec::new();
    let mut c_writes = coordinator_records(&mut c);
    records.append(&mut c_writes);
    records.extend(committed.writes.into_iter().flat_map(|w| w.records));

    let mut other = GroupCoordinator::new(c.config().clone());
    let _ = other.begin_load(0, 2);
    assert_eq!(other.heartbeat(20_000, "g", &a, None, 1), ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
    assert_eq!(other.finish_load(0, 2, records, 20_000), 1);
    let group = other.describe("g").unwrap();
    assert_eq!(group.state, GroupState::Stable);
    assert_eq!(
        group.members.iter().map(|m| m.assignment.clone()).collect::<Vec<_>>(),
        vec![Bytes::from_static(b"A"), Bytes::from_static(b"B")]
    );
    assert_eq!(other.heartbeat(20_001, "g", &a, None, 1), ErrorCode::NONE, "members go on in their generation");
    assert_eq!(other.fetch_offsets("g", Some(&[tp])).unwrap()[0].1.as_ref().map(|v| v.offset), Some(42));
}

/// The generation record the stable pair's leader sync wrote (rebuilt by loading what the
/// coordinator would store now).
fn coordinator_records(c: &mut GroupCoordinator) -> Vec<GroupRecord> {
    let summary = c.describe("g").unwrap();
    let members = summary
        .members
        .iter()
        .map(|m| MemberValue {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            rebalance_timeout_ms: REBALANCE_MS,
            session_timeout_ms: SESSION_MS,
            subscription: m.metadata.clone(),
            assignment: m.assignment.clone(),
        })
        .collect();
    vec![GroupRecord::Group {
        group_id: "g".to_string(),
        value: Some(GroupValue {
            protocol_type: summary.protocol_type,
            generation_id: 1,
            protocol: Some(summary.protocol_name),
            leader: summary.members.first().map(|m| m.member_id.clone()),
            state_timestamp_ms: 0,
            members,
        }),
    }]
}

#[test]
fn the_stored_generation_is_what_the_leader_assigned() {
    let mut c = coordinator();
    let (a, _) = new_member(&mut c, 0, 1, 10);
    let out = c.tick(DELAY_MS);
    assert_eq!(join_reply(&out, 11).generation_id, 1);
    let out = c.sync(DELAY_MS, sync(&a, 1, &[(&a, b"all")]), 12);
    let [write] = &out.writes[..] else { panic!("{out:?}") };
    let GroupRecord::Group { value: Some(value), .. } = &write.records[0] else { panic!("{write:?}") };
    assert_eq!((value.generation_id, value.members[0].assignment.clone()), (1, Bytes::from_static(b"all")));
    assert_eq!(write.then, AfterWrite::Assignment { group_id: "g".to_string(), generation_id: 1 });
}

#[test]
fn losing_the_partition_answers_parked_requests_not_coordinator() {
    let mut c = coordinator();
    let (_a, out) = new_member(&mut c, 0, 1, 10);
    assert!(out.replies.is_empty());
    let out = c.unload(0);
    assert_eq!(join_reply(&out, 11).error, ErrorCode::NOT_COORDINATOR);
    assert_eq!(c.heartbeat(1, "g", "x", None, 1), ErrorCode::NOT_COORDINATOR);
    assert!(c.describe("g").is_err());
}

#[test]
fn a_failed_assignment_write_answers_the_members_and_starts_over() {
    let mut c = coordinator();
    let (a, _) = new_member(&mut c, 0, 1, 10);
    let _ = c.tick(DELAY_MS);
    let out = c.sync(DELAY_MS, sync(&a, 1, &[(&a, b"all")]), 12);
    let write = out.writes[0].clone();
    let out = c.written(DELAY_MS + 1, &write, Err(ErrorCode::NOT_COORDINATOR), NO_TOPICS);
    assert_eq!(sync_reply(&out, 12).error, ErrorCode::NOT_COORDINATOR);
    assert_eq!(c.describe("g").unwrap().state, GroupState::PreparingRebalance);
}

#[test]
fn a_restarted_static_member_gets_its_assignment_back_and_its_old_identity_is_fenced() {
    let mut c = coordinator();
    let static_join = |member_id: &str, entropy| JoinRequest {
        group_instance_id: Some("instance-1".to_string()),
        ..join(member_id, entropy)
    };
    let out = c.join(0, static_join("", 1), 10);
    assert!(out.replies.is_empty(), "static members need no MEMBER_ID_REQUIRED round");
    let (b, out2) = new_member(&mut c, 10, 2, 20);
    assert!(out2.replies.is_empty());
    let out = c.tick(DELAY_MS + 100);
    let first = join_reply(&out, 10);
    let leader = first.leader.clone();
    let a = first.member_id.clone();
    assert!(a.starts_with("instance-1-"));
    let _ = c.sync(DELAY_MS, sync(&b, 1, &[]), 22);
    let out = c.sync(
        DELAY_MS,
        SyncRequest {
            group_instance_id: Some("instance-1".to_string()),
            ..sync(&leader, 1, &[(&a, b"A"), (&b, b"B")])
        },
        12,
    );
    let _ = commit_writes(&mut c, DELAY_MS, out);
    // The static member restarts: a new JoinGroup without its member id, within its session.
    let out = c.join(DELAY_MS + 2_000, static_join("", 3), 30);
    let again = join_reply(&out, 30);
    assert_eq!((again.error, again.generation_id), (ErrorCode::NONE, 1), "same generation: no rebalance");
    assert_ne!(again.member_id, a);
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
    let out = c.sync(
        DELAY_MS + 2_100,
        SyncRequest { group_instance_id: Some("instance-1".to_string()), ..sync(&again.member_id, 1, &[]) },
        31,
    );
    assert_eq!(sync_reply(&out, 31).assignment, Bytes::from_static(b"A"));
    assert_eq!(c.heartbeat(DELAY_MS + 2_200, "g", &b, None, 1), ErrorCode::NONE, "the other member saw nothing");
    // The old instance (a zombie with the old member id) is fenced.
    assert_eq!(c.heartbeat(DELAY_MS + 2_300, "g", &a, Some("instance-1"), 1), ErrorCode::FENCED_INSTANCE_ID);
}

#[test]
fn the_group_refuses_members_beyond_its_max_size_and_bad_session_timeouts() {
    let mut c = coordinator();
    let out = c.join(0, JoinRequest { session_timeout_ms: 10, ..join("", 9) }, 21);
    assert_eq!(join_reply(&out, 21).error, ErrorCode::INVALID_SESSION_TIMEOUT);
    let out = c.join(0, JoinRequest { protocol_type: "connect".to_string(), ..join("", 9) }, 22);
    assert_eq!(join_reply(&out, 22).error, ErrorCode::MEMBER_ID_REQUIRED, "an empty group takes any protocol type");
    for i in 0..2 {
        let out = c.join(0, join("", i), 10 + i as u64);
        assert_eq!(join_reply(&out, 10 + i as u64).error, ErrorCode::MEMBER_ID_REQUIRED);
    }
    let out = c.join(0, join("", 7), 20);
    assert_eq!(join_reply(&out, 20).error, ErrorCode::GROUP_MAX_SIZE_REACHED, "members waiting for their id count");
}

#[test]
fn a_coordinator_holds_at_most_its_groups_max() {
    let config = GroupConfig { offsets_partitions: 1, max_groups: 2, ..GroupConfig::default() };
    let mut c = GroupCoordinator::new(config);
    let _ = c.begin_load(0, 0);
    c.finish_load(0, 0, Vec::new(), 0);
    for (i, group) in ["a", "b", "c"].into_iter().enumerate() {
        let out = c.join(0, JoinRequest { group_id: group.to_string(), ..join("", i as u128) }, i as u64);
        let expected = if i < 2 { ErrorCode::MEMBER_ID_REQUIRED } else { ErrorCode::COORDINATOR_NOT_AVAILABLE };
        assert_eq!(join_reply(&out, i as u64).error, expected, "group {group}");
    }
    let commit = CommitRequest {
        version: 8,
        group_id: "d".to_string(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        offsets: vec![(
            TopicPartition::new("t", 0),
            OffsetValue { offset: 1, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: 0 },
        )],
    };
    assert_eq!(c.commit_offsets(0, commit).0[0].1, ErrorCode::COORDINATOR_NOT_AVAILABLE);
}

#[test]
fn joins_and_assignments_beyond_their_bounds_are_refused_before_anything_is_kept() {
    let mut c = coordinator();
    let big = Bytes::from(vec![0u8; MEMBER_METADATA_BYTES_MAX + 1]);
    let out = c.join(0, JoinRequest { protocols: vec![("range".to_string(), big)], ..join("", 1) }, 1);
    assert_eq!(join_reply(&out, 1).error, ErrorCode::INVALID_REQUEST);
    let many = (0..=MEMBER_PROTOCOLS_MAX).map(|i| (format!("p{i}"), Bytes::new())).collect();
    let out = c.join(0, JoinRequest { protocols: many, ..join("", 1) }, 2);
    assert_eq!(join_reply(&out, 2).error, ErrorCode::INVALID_REQUEST);
    let out = c.join(0, JoinRequest { group_instance_id: Some("i".repeat(NAME_BYTES_MAX + 1)), ..join("", 1) }, 3);
    assert_eq!(join_reply(&out, 3).error, ErrorCode::INVALID_REQUEST);
    let out = c.join(0, JoinRequest { group_id: "g".repeat(NAME_BYTES_MAX + 1), ..join("", 1) }, 4);
    assert_eq!(join_reply(&out, 4).error, ErrorCode::INVALID_GROUP_ID);
    assert!(c.describe("g").is_ok_and(|g| g.members.is_empty()), "nothing was kept");
    let (a, _) = stable_pair(&mut c);
    let huge = vec![(a.clone(), Bytes::from(vec![0u8; ASSIGNMENT_BYTES_MAX + 1]))];
    let out = c.sync(DELAY_MS + 500, SyncRequest { assignments: huge, ..sync(&a, 1, &[]) }, 9);
    assert_eq!(sync_reply(&out, 9).error, ErrorCode::INVALID_REQUEST);
    // A client id of the protocol's longest still makes a member id that can be stored.
    let out = c.join(0, JoinRequest { group_id: "h".to_string(), client_id: "c".repeat(32_767), ..join("", 1) }, 10);
    assert!(join_reply(&out, 10).member_id.len() < 300);
}

#[test]
fn a_member_that_leaves_is_gone_at_once_and_the_last_one_empties_the_group() {
    let mut c = coordinator();
    let (a, b) = stable_pair(&mut c);
    let (code, codes, _) = c.leave(DELAY_MS + 500, "g", &[(b.clone(), None), ("nobody".to_string(), None)]);
    assert_eq!((code, codes), (ErrorCode::NONE, vec![ErrorCode::NONE, ErrorCode::UNKNOWN_MEMBER_ID]));
    assert_eq!(c.describe("g").unwrap().state, GroupState::PreparingRebalance);
    let (_, _, out) = c.leave(DELAY_MS + 600, "g", &[(a, None)]);
    assert_eq!(c.describe("g").unwrap().state, GroupState::Empty);
    assert_eq!(out.writes.len(), 1, "the empty generation is stored");
}

#[test]
fn an_empty_groups_offsets_expire_after_the_retention_and_delete_removes_a_group() {
    let config = GroupConfig { offsets_partitions: 1, offsets_retention_ms: 60_000, ..GroupConfig::default() };
    let mut c = GroupCoordinator::new(config);
    let _ = c.begin_load(0, 0);
    c.finish_load(0, 0, Vec::new(), 0);
    let tp = TopicPartition::new("t", 0);
    let request = |group: &str| CommitRequest {
        version: 8,
        group_id: group.to_string(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        offsets: vec![(
            tp.clone(),
            OffsetValue { offset: 1, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: 0 },
        )],
    };
    for group in ["old", "doomed"] {
        let (_, write) = c.commit_offsets(0, request(group));
        let _ = c.written(0, &write.unwrap(), Ok(()), NO_TOPICS);
    }
    let write = c.delete("doomed").unwrap();
    let _ = c.written(1, &write, Ok(()), NO_TOPICS);
    assert_eq!(c.delete("doomed"), Err(ErrorCode::GROUP_ID_NOT_FOUND));
    assert!(c.tick(59_000).writes.is_empty(), "not yet");
    let out = c.tick(60_000);
    assert_eq!(out.writes.len(), 1);
    assert!(c.tick(60_100).writes.is_empty(), "the removal is not written twice");
    let _ = commit_writes(&mut c, 60_200, out);
    assert_eq!(c.fetch_offsets("old", None).unwrap(), Vec::new());
}

#[test]
fn a_member_that_never_syncs_is_removed_at_the_rebalance_timeout() {
    let mut c = coordinator();
    let (leader, out1) = new_member(&mut c, 0, 1, 10);
    let (b, out2) = new_member(&mut c, 0, 2, 20);
    assert!(out1.replies.is_empty() && out2.replies.is_empty());
    let _ = c.tick(DELAY_MS);
    let _ = c.sync(DELAY_MS, sync(&b, 1, &[]), 22);
    // The leader heartbeats but never sends its assignment.
    for t in (DELAY_MS..DELAY_MS + i64::from(REBALANCE_MS)).step_by(5_000) {
        assert_eq!(c.heartbeat(t, "g", &leader, None, 1), ErrorCode::NONE);
    }
    assert!(c.tick(DELAY_MS + i64::from(REBALANCE_MS) - 1).replies.is_empty());
    let out = c.tick(DELAY_MS + i64::from(REBALANCE_MS));
    assert_eq!(sync_reply(&out, 22).error, ErrorCode::REBALANCE_IN_PROGRESS, "a rebalance without the silent leader");
    let out = c.join(DELAY_MS + i64::from(REBALANCE_MS) + 1, join(&b, 0), 23);
    let reply = join_reply(&out, 23);
    assert_eq!((reply.generation_id, reply.leader.clone()), (2, b), "b leads generation 2 alone");
}

/// A consumer's JoinGroup metadata: the consumer protocol's subscription (v0) to `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| StrBytes::from_string(t.to_string())).collect());
    let mut bytes = bytes::BytesMut::new();
    bytes.extend_from_slice(&0i16.to_be_bytes());
    subscription.encode(&mut bytes, 0).unwrap();
    bytes.freeze()
}

#[test]
fn offset_delete_removes_offsets_the_group_does_not_consume_and_refuses_the_rest() {
    let mut c = coordinator();
    let value = OffsetValue { offset: 4, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: 1 };
    let (orders, old) = (TopicPartition::new("orders", 0), TopicPartition::new("old-topic", 0));
    // Offsets committed while the group was empty (no members, generation -1).
    let commit = CommitRequest {
        version: 8,
        group_id: "g".to_string(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        offsets: vec![(orders.clone(), value.clone()), (old.clone(), value.clone())],
    };
    let (_, write) = c.commit_offsets(1, commit);
    let _ = c.written(2, &write.unwrap(), Ok(()), NO_TOPICS);
    assert_eq!(c.delete_offsets("nobody", std::slice::from_ref(&old)).unwrap_err(), ErrorCode::GROUP_ID_NOT_FOUND);
    // A member subscribed to `orders` joins: its offsets stay, the other topic's may go.
    let mut request = join("", 1);
    request.protocols = vec![("range".to_string(), subscription(&["orders"]))];
    let member_id = join_reply(&c.join(10, request.clone(), 1), 1).member_id;
    request.member_id = member_id;
    let _ = c.join(10, request, 2);
    let _ = c.tick(10 + DELAY_MS);
    assert_eq!(c.describe("g").unwrap().state, GroupState::CompletingRebalance);
    let (codes, write) = c.delete_offsets("g", &[orders.clone(), old.clone()]).unwrap();
    assert_eq!(codes, vec![ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC, ErrorCode::NONE]);
    let write = write.expect("a tombstone for old-topic");
    assert_eq!(write.records, vec![GroupRecord::Offset { group_id: "g".to_string(), tp: old.clone(), value: None }]);
    assert_eq!(c.fetch_offsets("g", None).unwrap().len(), 2, "nothing changes before the tombstone is written");
    let _ = c.written(20, &write, Ok(()), NO_TOPICS);
    assert_eq!(c.fetch_offsets("g", None).unwrap(), vec![(orders.clone(), Some(value))]);
    // Nothing committed for it: nothing to write, and no error.
    assert_eq!(c.delete_offsets("g", std::slice::from_ref(&old)).unwrap(), (vec![ErrorCode::NONE], None));
}

#[test]
fn offset_delete_of_a_group_whose_subscriptions_cannot_be_read_is_refused_while_it_has_members() {
    let mut c = coordinator();
    let _ = stable_pair(&mut c); // its members' metadata is not a consumer subscription
    let tp = TopicPartition::new("orders", 0);
    assert_eq!(c.delete_offsets("g", &[tp]).unwrap_err(), ErrorCode::NON_EMPTY_GROUP);
}
