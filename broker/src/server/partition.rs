//! One partition replica on this broker: its log, its role (leader or follower) at a leader
//! epoch, and — as leader — the followers' progress, the ISR and the high watermark.
//!
//! A plain synchronous struct: the metadata applier, the request handlers and the replica
//! fetcher call its methods under the partition's mutex with the time passed in.
//!
//! High watermark (leader): the smallest log end offset in the ISR (counting members of a
//! proposed but uncommitted ISR change too: a shrink takes effect only once the controller has
//! committed it). It never goes back while this broker leads. A new leader does not serve
//! clients until its HW has reached the start of its epoch (everything earlier epochs may have
//! exposed): until then the HW it knows may be below what the old leader showed.

use crate::controller::{PartitionImage, NO_LEADER};
use crate::log::{LogError, PartitionLog};
use crate::types::{LeaderEpoch, Offset, TopicPartition};
use std::collections::BTreeMap;

/// A follower's progress as its leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The offset of its last fetch: everything below is on its log. `None`: no fetch yet in
    /// this leader epoch.
    pub log_end_offset: Option<Offset>,
    /// The last time its fetch reached the leader's log end.
    pub last_caught_up_ms: i64,
    /// The follower's registration (broker epoch) this progress belongs to. A restarted
    /// follower may have lost data: its old progress must not let it into the ISR (KIP-903;
    /// the simulator found a restarted follower re-admitted with a 6-record log).
    pub broker_epoch: Option<i64>,
}

/// Leader-only state.
#[derive(Clone, Debug)]
pub struct LeaderState {
    /// The log end when this leadership began: the first offset of this epoch.
    pub epoch_start_offset: Offset,
    pub followers: BTreeMap<i32, FollowerProgress>,
    /// An ISR sent to the controller and not answered yet.
    pub pending_isr: Option<Vec<i32>>,
}

#[derive(Clone, Debug)]
pub enum Role {
    Leader(LeaderState),
    /// Follows `image.leader` (or waits for one, if there is none).
    Follower,
}

#[derive(Debug)]
pub struct Partition {
    pub tp: TopicPartition,
    pub log: PartitionLog,
    pub node_id: i32,
    /// The latest committed metadata for this partition. Invariant: `node_id` is a replica.
    pub image: PartitionImage,
    pub role: Role,
    /// Leader: see the module docs. Follower: the leader's HW as of the last fetch, capped by
    /// the local log end. Invariant: `high_watermark <= log.log_end_offset()`.
    pub high_watermark: Offset,
    /// `min.insync.replicas` of the topic.
    pub min_insync_replicas: i32,
    /// The smallest committed ISR size at which an acks=all append was acknowledged (for the
    /// simulator's isr-enforced check).
    pub smallest_isr_acked: Option<usize>,
    /// Set if a follower truncation ever cut below the HW this replica had (for the
    /// simulator's no-truncation-below-hw check).
    pub truncated_below_high_watermark: bool,
}

/// What changed when new metadata was applied.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    BecameLeader,
    /// A fetcher must (re)start for this leader epoch.
    BecameFollower,
}

impl Partition {
    pub fn new(
        tp: TopicPartition,
        log: PartitionLog,
        node_id: i32,
        image: PartitionImage,
        min_insync_replicas: i32,
    ) -> Self {
        let placeholder = PartitionImage { leader: NO_LEADER, leader_epoch: -1, partition_epoch: -1, ..image };
        Partition {
            tp,
            log,
            node_id,
            image: placeholder,
            role: Role::Follower,
            high_watermark: Offset::ZERO,
            min_insync_replicas,
            smallest_isr_acked: None,
            truncated_below_high_watermark: false,
        }
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.image.leader_epoch)
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// Whether this replica still follows at `leader_epoch`. A fetcher checks it under the
    /// partition lock after every await, before it changes the log: an answer from a leader it
    /// no longer follows must not truncate or append (the simulator found exactly that: a
    /// stale OffsetForLeaderEpoch answer cut a log below its high watermark).
    pub fn follows_at(&self, leader_epoch: i32) -> bool {
        !self.is_leader() && self.image.leader_epoch == leader_epoch
    }

    /// Applies newer committed metadata. Leadership at a new epoch starts the epoch in the log
    /// (so OffsetForLeaderEpoch answers for it at once); a new leader epoch as follower needs a
    /// new fetcher (which truncates first).
    pub fn apply_image(&mut self, image: PartitionImage, now_ms: i64) -> Result<Transition, LogError> {
        assert!(image.replicas.contains(&self.node_id));
        if image.partition_epoch <= self.image.partition_epoch {
            return Ok(Transition::None);
        }
        let same_epoch = image.leader_epoch == self.image.leader_epoch;
        let was_leader = self.is_leader();
        self.image = image;
        if self.image.leader == self.node_id {
            if same_epoch && was_leader {
                if let Role::Leader(state) = &mut self.role {
                    // The committed ISR changed: a pending proposal is answered.
                    state.pending_isr = None;
                }
                self.maybe_advance_high_watermark();
                return Ok(Transition::None);
            }
            self.log.assign_epoch_start(self.leader_epoch())?;
            let epoch_start_offset = self.log.log_end_offset();
            let followers = self
                .image
                .replicas
                .iter()
                .filter(|&&r| r != self.node_id)
                .map(|&r| (r, FollowerProgress { log_end_offset: None, last_caught_up_ms: now_ms, broker_epoch: None }))
                .collect();
            self.role = Role::Leader(LeaderState { epoch_start_offset, followers, pending_isr: None });
            self.high_watermark = self.high_watermark.min(epoch_start_offset);
            self.maybe_advance_high_watermark();
            tracing::info!(tp = %self.tp, leader_epoch = self.image.leader_epoch, isr = ?self.image.isr, log_end = epoch_start_offset.0, "became leader");
            return Ok(Transition::BecameLeader);
        }
        self.role = Role::Follower;
        if same_epoch && !was_leader {
            return Ok(Transition::None);
        }
        tracing::info!(tp = %self.tp, leader = self.image.leader, leader_epoch = self.image.leader_epoch, "became follower");
        Ok(Transition::BecameFollower)
    }

    /// The ISR the HW and acks=all wait for: committed, plus any member of a pending change.
    pub fn maximal_isr(&self) -> Vec<i32> {
        let mut isr = self.image.isr.clone();
        if let Role::Leader(LeaderState { pending_isr: Some(pending), .. }) = &self.role {
            for r in pending {
                if !isr.contains(r) {
                    isr.push(*r);
                }
            }
        }
        isr
    }

    /// Leader: moves the HW up to the smallest log end in the maximal ISR. Returns whether it
    /// moved.
    pub fn maybe_advance_high_watermark(&mut self) -> bool {
        let Role::Leader(state) = &self.role else { return false };
        let log_end = self.log.log_end_offset();
        let mut candidate = log_end;
        for replica in self.maximal_isr() {
            if replica == self.node_id {
                continue;
            }
            match state.followers.get(&replica).and_then(|f| f.log_end_offset) {
                Some(offset) => candidate = candidate.min(offset),
                None => return false,
            }
        }
        let planted = crate::planted::active(crate::planted::Bug::HwBeforeIsr);
        if planted {
            candidate = log_end;
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            return true;
        }
        false
    }

    /// Leader: whether clients may be served (see the module docs).
    pub fn high_watermark_established(&self) -> bool {
        match &self.role {
            Role::Leader(state) => self.high_watermark >= state.epoch_start_offset,
            Role::Follower => false,
        }
    }

    /// Leader: forgets the progress of followers that registered anew (restarted) since it was
    /// recorded. `broker_epochs`: each replica's current registration.
    pub fn track_registrations(&mut self, broker_epochs: &BTreeMap<i32, i64>) {
        let Role::Leader(state) = &mut self.role else { return };
        for (replica, progress) in state.followers.iter_mut() {
            let current = broker_epochs.get(replica).copied();
            if progress.broker_epoch != current {
                if progress.broker_epoch.is_some() {
                    tracing::info!(tp = %self.tp, replica, "follower registered anew: its progress starts over");
                }
                progress.broker_epoch = current;
                progress.log_end_offset = None;
            }
        }
    }

    /// Leader: a follower fetched at `fetch_offset`. Returns whether the HW moved.
    pub fn record_follower_fetch(&mut self, replica: i32, fetch_offset: Offset, now_ms: i64) -> bool {
        let log_end = self.log.log_end_offset();
        let Role::Leader(state) = &mut self.role else { return false };
        let Some(progress) = state.followers.get_mut(&replica) else { return false };
        if fetch_offset > log_end {
            // Past our end: its tail diverges (it must truncate first). It proves nothing.
            return false;
        }
        progress.log_end_offset = Some(fetch_offset);
        if fetch_offset >= log_end {
            progress.last_caught_up_ms = now_ms;
        }
        self.maybe_advance_high_watermark()
    }

    /// Leader: the ISR to propose, if it should change: members not caught up for
    /// `lag_time_max_ms` leave; replicas caught up to the HW (and into this epoch) join.
    pub fn isr_change(&self, now_ms: i64, lag_time_max_ms: i64) -> Option<Vec<i32>> {
        let Role::Leader(state) = &self.role else { return None };
        if state.pending_isr.is_some() {
            return None;
        }
        let mut isr: Vec<i32> = self
            .image
            .isr
            .iter()
            .copied()
            .filter(|&r| {
                r == self.node_id
                    || state.followers.get(&r).is_some_and(|f| now_ms - f.last_caught_up_ms <= lag_time_max_ms)
            })
            .collect();
        for (&replica, progress) in &state.followers {
            let caught_up = progress
                .log_end_offset
                .is_some_and(|leo| leo >= self.high_watermark && leo >= state.epoch_start_offset);
            if !isr.contains(&replica) && caught_up && now_ms - progress.last_caught_up_ms <= lag_time_max_ms {
                isr.push(replica);
            }
        }
        (isr != self.image.isr).then_some(isr)
    }

    /// Follower: the leader said its HW is `leader_high_watermark`.
    pub fn update_follower_high_watermark(&mut self, leader_high_watermark: Offset) {
        if !self.is_leader() {
            self.high_watermark = leader_high_watermark.min(self.log.log_end_offset());
        }
    }

    /// Follower truncation moved the log end: the HW cannot stay above it.
    pub fn clamp_high_watermark(&mut self) {
        self.high_watermark = self.high_watermark.min(self.log.log_end_offset());
    }
}
