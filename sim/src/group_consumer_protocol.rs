//! The KIP-848 side of the simulator's group members (`group.protocol=consumer`), as
//! librdkafka speaks it: ConsumerGroupHeartbeat with a client-made member id; a full request
//! when (re)joining or after the coordinator moved, otherwise only the epoch and, after an
//! assignment changed, the partitions now owned (the acknowledgement); revoked partitions are
//! committed and dropped before that acknowledgement; UNKNOWN_MEMBER_ID and
//! FENCED_MEMBER_EPOCH lose every partition and rejoin at epoch 0 under the same id; a static
//! member leaves with epoch -2, a dynamic one with -1.
//!
//! Recorded: every assignment answered (`GroupAssigned`, the member epoch as its generation)
//! and every heartbeat (`GroupHeartbeat`: what it said it owned, what it was answered), which
//! the `revoke-before-reassign` checker reads.

use crate::client::{Recorder, Router};
use crate::group_client::{
    commit_positions, coordinator_call, text, MemberConfig, Membership, Rejoin, REBALANCE_TIMEOUT_MS, UNKNOWN_POSITION,
};
use crate::history::{Op, Outcome, Partition};
use broker::types::ErrorCode;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::*;

/// `MemberEpoch` of a member leaving for good, and of a static member leaving for now.
const LEAVE_EPOCH: i32 = -1;
const STATIC_LEAVE_EPOCH: i32 = -2;

fn classify(code: ErrorCode) -> Rejoin {
    match code {
        ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::FENCED_MEMBER_EPOCH | ErrorCode::FENCED_INSTANCE_ID => Rejoin::Fresh,
        ErrorCode::COORDINATOR_LOAD_IN_PROGRESS => Rejoin::Same,
        // UNRELEASED_INSTANCE_ID (the instance's previous process still holds it until its
        // session ends), coordinator errors: look again, retry later.
        _ => Rejoin::FindCoordinator,
    }
}

/// One heartbeat (a join when the member has no epoch), and what its answer asks: revoked
/// partitions are committed and dropped, new ones wait for their committed offsets, and a
/// changed assignment is acknowledged by the next heartbeat, sent at once.
pub(crate) async fn heartbeat(
    config: &MemberConfig,
    router: &mut Router,
    m: &mut Membership,
    recorder: &Recorder,
) -> Result<(), Rejoin> {
    let topic_id = router.topic_id().await.ok_or(Rejoin::FindCoordinator)?;
    for _ in 0..2 {
        if !beat(config, router, m, recorder, topic_id).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends one heartbeat; `true` if the assignment changed (acknowledge it).
async fn beat(
    config: &MemberConfig,
    router: &mut Router,
    m: &mut Membership,
    recorder: &Recorder,
    topic_id: u128,
) -> Result<bool, Rejoin> {
    let joining = m.generation < 0;
    if joining {
        m.owned.clear();
    }
    if m.member_id.is_empty() {
        m.member_id = format!("{}-{}", config.name, recorder.now_ns());
    }
    let epoch = if joining { 0 } else { m.generation };
    let owned: Vec<Partition> = m.owned.keys().copied().collect();
    let full = joining || m.full_heartbeat;
    let send_owned = full || m.ack_pending;
    let mut request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(text(&config.group)))
        .with_member_id(text(&m.member_id))
        .with_member_epoch(epoch)
        .with_instance_id(config.instance())
        .with_rebalance_timeout_ms(if full { REBALANCE_TIMEOUT_MS } else { -1 });
    if full {
        request = request
            .with_subscribed_topic_names(Some(vec![TopicName(text(&config.topic))]))
            .with_subscribed_topic_regex(Some(text("")))
            .with_server_assignor(config.server_assignor.map(text));
    }
    if send_owned {
        let partitions =
            TopicPartitions::default().with_topic_id(uuid::Uuid::from_u128(topic_id)).with_partitions(owned.clone());
        request = request.with_topic_partitions(Some(if owned.is_empty() { Vec::new() } else { vec![partitions] }));
    }
    let member = config.owner(&m.member_id);
    let invoked = recorder.now_ns();
    let answer =
        coordinator_call(router, m, ApiKey::ConsumerGroupHeartbeat, 1, RequestKind::ConsumerGroupHeartbeat(request))
            .await;
    let said = send_owned.then(|| owned.clone());
    let record = |outcome: Outcome, answered_epoch: i32| {
        let op = Op::GroupHeartbeat { member: member.clone(), epoch, owned: said.clone(), answered_epoch, joining };
        recorder.record(config.process, invoked, outcome, op);
    };
    let response = match answer {
        Ok(ResponseKind::ConsumerGroupHeartbeat(r)) => r,
        _ => {
            record(Outcome::Info, -1);
            m.full_heartbeat = true;
            return Err(Rejoin::FindCoordinator);
        }
    };
    let code = ErrorCode(response.error_code);
    if !code.is_none() {
        record(Outcome::Fail, -1);
        m.full_heartbeat = true;
        let rejoin = classify(code);
        if matches!(rejoin, Rejoin::Fresh) {
            m.generation = -1;
        }
        return Err(rejoin);
    }
    record(Outcome::Ok, response.member_epoch);
    m.full_heartbeat = false;
    m.ack_pending = false;
    m.generation = response.member_epoch;
    let Some(assignment) = response.assignment else { return Ok(false) };
    let assigned: Vec<Partition> = assignment
        .topic_partitions
        .iter()
        .filter(|t| t.topic_id.as_u128() == topic_id)
        .flat_map(|t| t.partitions.iter().copied())
        .collect();
    recorder.record(
        config.process,
        invoked,
        Outcome::Ok,
        Op::GroupAssigned { member: member.clone(), generation: response.member_epoch, partitions: assigned.clone() },
    );
    let revoked: Vec<Partition> = m.owned.keys().copied().filter(|p| !assigned.contains(p)).collect();
    if !revoked.is_empty() {
        // Commit what was read of the revoked partitions before giving them up (librdkafka's
        // revocation callback commits), then drop them.
        let kept = std::mem::take(&mut m.owned);
        m.owned = kept.iter().filter(|(p, _)| revoked.contains(p)).map(|(p, v)| (*p, *v)).collect();
        let committed = commit_positions(config, router, m, recorder).await;
        m.owned = kept.into_iter().filter(|(p, _)| !revoked.contains(p)).collect();
        committed?;
    }
    let changed = !revoked.is_empty() || assigned.iter().any(|p| !m.owned.contains_key(p));
    for p in assigned {
        m.owned.entry(p).or_insert((UNKNOWN_POSITION, true));
    }
    m.ack_pending = changed;
    Ok(changed)
}

/// Leaves the group: -1, or -2 for a static member (it keeps its partitions for a return
/// within its session).
pub(crate) async fn leave(config: &MemberConfig, router: &mut Router, m: &Membership, recorder: &Recorder) {
    if m.member_id.is_empty() || m.coordinator.is_none() || m.generation < 0 {
        return;
    }
    let epoch = if config.instance_id.is_some() { STATIC_LEAVE_EPOCH } else { LEAVE_EPOCH };
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(text(&config.group)))
        .with_member_id(text(&m.member_id))
        .with_member_epoch(epoch)
        .with_instance_id(config.instance());
    let invoked = recorder.now_ns();
    let answer =
        coordinator_call(router, m, ApiKey::ConsumerGroupHeartbeat, 1, RequestKind::ConsumerGroupHeartbeat(request))
            .await;
    let outcome = match answer {
        Ok(ResponseKind::ConsumerGroupHeartbeat(r)) if ErrorCode(r.error_code).is_none() => Outcome::Ok,
        Ok(_) => Outcome::Fail,
        Err(_) => Outcome::Info,
    };
    let op = Op::GroupHeartbeat {
        member: config.owner(&m.member_id),
        epoch,
        owned: Some(Vec::new()),
        answered_epoch: epoch,
        joining: false,
    };
    recorder.record(config.process, invoked, outcome, op);
}
