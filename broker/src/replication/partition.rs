//! One partition replica on this broker: its log, its role (leader or follower) at a leader
//! epoch, and — as leader — the followers' progress, the ISR and the high watermark.
//!
//! A plain synchronous struct with private fields: the server calls its methods under the
//! partition's mutex with the time passed in. Every mutator ends by asserting the invariants
//! (kept on in release: a broken replica stops the process rather than serve wrong offsets):
//! - `high_watermark <= log end offset`;
//! - the committed ISR is a non-empty subset of the replicas; a leader is in it;
//! - the leader epoch and the partition epoch never go back;
//! - as leader, the HW never goes back.
//!
//! High watermark (leader): the smallest log end offset in the ISR (counting members of a
//! proposed but uncommitted ISR change too: a shrink takes effect only once the controller has
//! committed it). A new leader does not serve clients until its HW has reached the start of its
//! epoch (everything earlier epochs may have exposed): until then the HW it knows may be below
//! what the old leader showed.
//!
//! Call order: [`Partition::new`], then [`Partition::apply_image`] with the committed metadata
//! (a replica does nothing before it); then, as leader, [`Partition::append_as_leader`],
//! [`Partition::record_follower_fetch`], [`Partition::propose_isr`] /
//! [`Partition::isr_answered`], [`Partition::acks_all_outcome`]; as follower,
//! [`Partition::truncate_as_follower`], [`Partition::append_as_follower`],
//! [`Partition::update_follower_high_watermark`]; any time, [`Partition::housekeeping`].

use crate::controller::{PartitionImage, NO_LEADER};
use crate::log::{AppendOutcome, LogError, PartitionLog};
use crate::types::{ErrorCode, LeaderEpoch, Offset, TopicPartition};
use bytes::Bytes;
use std::collections::BTreeMap;

/// Which periodic log work is due in a [`Partition::housekeeping`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// `log.retention.check.interval.ms` has passed: apply retention.
    pub retention: bool,
    /// `log.cleaner.backoff.ms` has passed: clean compacted logs.
    pub clean: bool,
}

/// A follower's progress as its leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The offset of its last fetch: everything below is on its log. `None`: no fetch yet in
    /// this leader epoch (or since it registered anew).
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
struct LeaderState {
    /// The log end when this leadership began: the first offset of this epoch.
    epoch_start_offset: Offset,
    followers: BTreeMap<i32, FollowerProgress>,
    /// An ISR sent to the controller and not answered yet.
    pending_isr: Option<Vec<i32>>,
}

#[derive(Clone, Debug)]
enum Role {
    Leader(LeaderState),
    /// Follows `image.leader` (or waits for one, if there is none).
    Follower,
}

/// What changed when new metadata was applied.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    BecameLeader,
    /// A fetcher must (re)start for this leader epoch.
    BecameFollower,
}

/// An ISR change to send to the controller (AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrProposal {
    /// The committed state it changes: the controller refuses it if that moved on.
    pub image: PartitionImage,
    pub isr: Vec<i32>,
    /// Each follower's registration as its progress was recorded (KIP-903).
    pub joining: Vec<(i32, i64)>,
}

/// An acks=all append waiting for the ISR (Kafka's delayed produce).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcksAllWait {
    pub leader_epoch: LeaderEpoch,
    pub last_offset: Offset,
}

/// Why a leader refused a produce.
#[derive(Debug)]
pub enum AppendRefusal {
    NotLeader,
    /// acks=all with an ISR smaller than `min.insync.replicas`.
    NotEnoughReplicas {
        isr: usize,
        min_insync_replicas: i32,
    },
    Log(LogError),
}

impl AppendRefusal {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AppendRefusal::NotLeader => ErrorCode::NOT_LEADER_OR_FOLLOWER,
            AppendRefusal::NotEnoughReplicas { .. } => ErrorCode::NOT_ENOUGH_REPLICAS,
            AppendRefusal::Log(e) => e.error_code(),
        }
    }
}

impl std::fmt::Display for AppendRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendRefusal::NotLeader => write!(f, "this broker does not lead the partition"),
            AppendRefusal::NotEnoughReplicas { isr, min_insync_replicas } => {
                write!(f, "ISR has {isr} replicas, min.insync.replicas is {min_insync_replicas}")
            }
            AppendRefusal::Log(e) => write!(f, "{e}"),
        }
    }
}

#[derive(Debug)]
pub struct Partition {
    tp: TopicPartition,
    log: PartitionLog,
    node_id: i32,
    /// The latest committed metadata for this partition. Invariant: `node_id` is a replica;
    /// epochs never decrease.
    image: PartitionImage,
    role: Role,
    /// Leader: see the module docs. Follower: the leader's HW as of the last fetch, capped by
    /// the local log end. Invariant: `high_watermark <= log.log_end_offset()`.
    high_watermark: Offset,
    /// `min.insync.replicas` of the topic.
    min_insync_replicas: i32,
    /// Bumped by every mutator that may have changed what [`Partition::state`] shows (for the
    /// simulator's observation tap).
    changes: u64,
}

/// What a replica shows of itself: role, epochs, ISR and offsets.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaState {
    pub topic_id: u128,
    pub partition: i32,
    pub leader: bool,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub min_insync_replicas: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
}

impl Partition {
    pub fn new(
        tp: TopicPartition,
        log: PartitionLog,
        node_id: i32,
        image: PartitionImage,
        min_insync_replicas: i32,
    ) -> Self {
        assert!(image.replicas.contains(&node_id), "{tp}: broker {node_id} opened a replica it is not assigned");
        let placeholder = PartitionImage { leader: NO_LEADER, leader_epoch: -1, partition_epoch: -1, ..image };
        // Nothing below the log start can be read: the HW starts there (Kafka's
        // `max(logStartOffset, checkpointed HW)`; retention may have moved the start).
        let high_watermark = log.log_start_offset();
        Partition {
            tp,
            log,
            node_id,
            image: placeholder,
            role: Role::Follower,
            high_watermark,
            min_insync_replicas,
            changes: 0,
        }
    }

    // ------------------------------------------------------------ reads

    pub fn tp(&self) -> &TopicPartition {
        &self.tp
    }

    /// The log, for reads (fetch, ListOffsets, OffsetForLeaderEpoch). Writes go through the
    /// mutators, which keep the HW below the log end.
    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    pub fn image(&self) -> &PartitionImage {
        &self.image
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn min_insync_replicas(&self) -> i32 {
        self.min_insync_replicas
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.image.leader_epoch)
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// How many mutations this replica has seen (see [`Partition::state`]).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    pub fn state(&self) -> ReplicaState {
        ReplicaState {
            topic_id: self.image.topic_id,
            partition: self.image.partition,
            leader: self.is_leader(),
            leader_epoch: self.image.leader_epoch,
            isr: self.image.isr.clone(),
            min_insync_replicas: self.min_insync_replicas,
            log_start_offset: self.log.log_start_offset().0,
            high_watermark: self.high_watermark.0,
            log_end_offset: self.log.log_end_offset().0,
        }
    }

    /// Whether this replica still follows at `leader_epoch`. A fetcher checks it under the
    /// partition lock after every await, before it changes the log: an answer from a leader it
    /// no longer follows must not truncate or append (the simulator found exactly that: a
    /// stale OffsetForLeaderEpoch answer cut a log below its high watermark).
    pub fn follows_at(&self, leader_epoch: i32) -> bool {
        !self.is_leader() && self.image.leader_epoch == leader_epoch
    }

    /// Leader: whether clients may be served (see the module docs).
    pub fn high_watermark_established(&self) -> bool {
        match &self.role {
            Role::Leader(state) => self.high_watermark >= state.epoch_start_offset,
            Role::Follower => false,
        }
    }

    /// The ISR the HW and acks=all wait for: committed, plus any member of a pending change
    /// (a member of both may come twice).
    fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        let pending = match &self.role {
            Role::Leader(LeaderState { pending_isr: Some(pending), .. }) => pending.as_slice(),
            _ => &[],
        };
        self.image.isr.iter().chain(pending).copied()
    }

    // ------------------------------------------------------------ metadata

    /// Applies newer committed metadata. Leadership at a new epoch starts the epoch in the log
    /// (so OffsetForLeaderEpoch answers for it at once); a new leader epoch as follower needs a
    /// new fetcher (which truncates first).
    pub fn apply_image(&mut self, image: PartitionImage, now_ms: i64) -> Result<Transition, LogError> {
        assert!(image.replicas.contains(&self.node_id), "{}: not a replica of {image:?}", self.tp);
        if image.partition_epoch <= self.image.partition_epoch {
            return Ok(Transition::None);
        }
        assert!(
            image.leader_epoch >= self.image.leader_epoch,
            "{}: leader epoch went back from {} to {}",
            self.tp,
            self.image.leader_epoch,
            image.leader_epoch
        );
        let transition = self.apply_newer_image(image, now_ms);
        self.changed();
        transition
    }

    fn apply_newer_image(&mut self, image: PartitionImage, now_ms: i64) -> Result<Transition, LogError> {
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

    // ------------------------------------------------------------ leader

    /// Leader: appends a client batch at the current leader epoch. acks=all is refused while the
    /// committed ISR is below `min.insync.replicas`; its answer waits on the returned
    /// [`AcksAllWait`] (see [`Partition::acks_all_outcome`]).
    pub fn append_as_leader(
        &mut self,
        records: Bytes,
        acks: i16,
        now_ms: i64,
    ) -> Result<(AppendOutcome, Option<AcksAllWait>), AppendRefusal> {
        if !self.is_leader() {
            return Err(AppendRefusal::NotLeader);
        }
        let isr = self.image.isr.len();
        let ignore_min_isr = crate::planted::active(crate::planted::Bug::IgnoreMinIsr);
        if acks == -1 && (isr as i32) < self.min_insync_replicas && !ignore_min_isr {
            return Err(AppendRefusal::NotEnoughReplicas { isr, min_insync_replicas: self.min_insync_replicas });
        }
        let leader_epoch = self.leader_epoch();
        let outcome = self.log.append(records, leader_epoch, now_ms).map_err(AppendRefusal::Log);
        self.changed();
        let outcome = outcome?;
        self.maybe_advance_high_watermark();
        self.check_invariants();
        let wait = (acks == -1).then_some(AcksAllWait { leader_epoch, last_offset: outcome.info().last_offset });
        Ok((outcome, wait))
    }

    /// The acks=all purgatory, as a pure function of this replica: `None` while the batch still
    /// waits; `Some(NONE)` once the HW passed it with the ISR at or above
    /// `min.insync.replicas`; otherwise the error to answer with.
    pub fn acks_all_outcome(&self, wait: &AcksAllWait) -> Option<ErrorCode> {
        if !self.is_leader() || self.leader_epoch() != wait.leader_epoch {
            return Some(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        if self.high_watermark <= wait.last_offset {
            return None;
        }
        let ignore_min_isr = crate::planted::active(crate::planted::Bug::IgnoreMinIsr);
        if (self.image.isr.len() as i32) < self.min_insync_replicas && !ignore_min_isr {
            return Some(ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND);
        }
        Some(ErrorCode::NONE)
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
        let moved = self.maybe_advance_high_watermark();
        if moved {
            self.changed();
        }
        moved
    }

    /// Leader: the ISR to propose, if it should change: members not caught up for
    /// `lag_time_max_ms` leave; replicas caught up to the HW (and into this epoch) join.
    /// The proposal is pending until [`Partition::isr_answered`] (or a newer image).
    pub fn propose_isr(&mut self, now_ms: i64, lag_time_max_ms: i64) -> Option<IsrProposal> {
        let isr = self.isr_change(now_ms, lag_time_max_ms)?;
        let Role::Leader(state) = &mut self.role else { return None };
        state.pending_isr = Some(isr.clone());
        let joining = state.followers.iter().filter_map(|(&r, progress)| Some((r, progress.broker_epoch?))).collect();
        Some(IsrProposal { image: self.image.clone(), isr, joining })
    }

    fn isr_change(&self, now_ms: i64, lag_time_max_ms: i64) -> Option<Vec<i32>> {
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

    /// Leader: the controller answered the pending ISR proposal (either way: the committed
    /// image, applied with the answer, is the truth). Returns whether the HW moved.
    pub fn isr_answered(&mut self) -> bool {
        if let Role::Leader(state) = &mut self.role {
            state.pending_isr = None;
        }
        let moved = self.maybe_advance_high_watermark();
        if moved {
            self.changed();
        }
        moved
    }

    /// Leader: moves the HW up to the smallest log end in the maximal ISR. Returns whether it
    /// moved.
    ///
    /// Strict min ISR (KIP-966, as Kafka applies it with eligible leader replicas): the HW does
    /// not move while the committed ISR is smaller than `min.insync.replicas`. Elections below
    /// min ISR may pick any ISR or ELR member with the longest log, and a replica that left the
    /// ISR need not hold what the lone leader appended since; a record consumers could read
    /// there (an acks=0/1 write) could vanish with the leader. So such writes stay invisible until
    /// the ISR is back at min ISR, and then become visible together.
    fn maybe_advance_high_watermark(&mut self) -> bool {
        let Role::Leader(state) = &self.role else { return false };
        let under_min_isr = (self.image.isr.len() as i32) < self.min_insync_replicas;
        let planted = crate::planted::active(crate::planted::Bug::HwBelowMinIsr)
            || crate::planted::active(crate::planted::Bug::IgnoreMinIsr);
        if under_min_isr && !planted {
            return false;
        }
        let log_end = self.log.log_end_offset();
        let mut candidate = log_end;
        let members: Vec<i32> = if crate::planted::active(crate::planted::Bug::HwHeldByOutOfSync) {
            self.image.replicas.clone()
        } else {
            self.maximal_isr().collect()
        };
        for replica in members {
            if replica == self.node_id {
                continue;
            }
            match state.followers.get(&replica).and_then(|f| f.log_end_offset) {
                Some(offset) => candidate = candidate.min(offset),
                None => return false,
            }
        }
        if crate::planted::active(crate::planted::Bug::HwBeforeIsr) {
            candidate = log_end;
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            self.check_invariants();
            return true;
        }
        false
    }

    // ------------------------------------------------------------ follower

    /// Follower: truncates the log to `target` (where it agrees with the leader, from
    /// [`super::follower::truncation_target`]); the HW follows it down.
    pub fn truncate_as_follower(&mut self, target: Offset) -> Result<(), LogError> {
        assert!(!self.is_leader(), "{}: a leader never truncates", self.tp);
        let log_end = self.log.log_end_offset();
        if target >= log_end {
            // Nothing to cut; the log still forgets an epoch it started at its end as leader
            // without appending (see `PartitionLog::truncate_to`).
            return self.log.truncate_to(target);
        }
        if target < self.high_watermark {
            tracing::error!(tp = %self.tp, target = target.0, high_watermark = self.high_watermark.0, "truncating below the high watermark");
        }
        tracing::info!(tp = %self.tp, from = log_end.0, to = target.0, leader_epoch = self.image.leader_epoch, "follower truncating to the leader's epoch end");
        let result = self.log.truncate_to(target);
        self.clamp_high_watermark();
        result
    }

    /// Follower: appends batches fetched from the leader at `leader_epoch`.
    pub fn append_as_follower(
        &mut self,
        records: &Bytes,
        now_ms: i64,
        leader_epoch: LeaderEpoch,
    ) -> Result<(), LogError> {
        assert!(!self.is_leader(), "{}: a leader appends only client batches", self.tp);
        let result = self.log.append_replicated(records, now_ms, leader_epoch).map(|_| ());
        self.clamp_high_watermark();
        result
    }

    /// Follower: the leader's log starts past our log end (retention ran there): start over
    /// empty at `offset`.
    pub fn restart_as_follower_at(&mut self, offset: Offset) -> Result<(), LogError> {
        assert!(!self.is_leader(), "{}: a leader never restarts its log", self.tp);
        let result = self.log.restart_at(offset);
        self.clamp_high_watermark();
        result
    }

    /// Follower: the leader said its HW is `leader_high_watermark`.
    pub fn update_follower_high_watermark(&mut self, leader_high_watermark: Offset) {
        if !self.is_leader() {
            self.high_watermark = leader_high_watermark.min(self.log.log_end_offset()).max(self.log.log_start_offset());
            self.changed();
        }
    }

    // ------------------------------------------------------------ upkeep

    /// Time-based log work (flush.ms, segment.ms) and, when due, retention and cleaning.
    /// Both work only below the HW (a follower's is its leader's, as far as it knows).
    pub fn housekeeping(&mut self, now_ms: i64, due: Due) -> Result<(), LogError> {
        let (log, high_watermark) = (&mut self.log, self.high_watermark);
        let result = log.tick(now_ms).and_then(|()| {
            if due.retention {
                log.apply_retention(now_ms, high_watermark)?;
            }
            if due.clean {
                log.clean(now_ms, high_watermark)?;
            }
            Ok(())
        });
        self.clamp_high_watermark();
        result
    }

    /// Flushes and closes the log (clean shutdown).
    pub fn close(&mut self) -> Result<(), LogError> {
        self.log.close()
    }

    /// The log, to delete it (its topic was deleted).
    pub fn into_log(self) -> PartitionLog {
        self.log
    }

    /// Only a follower's log may move below its HW (truncation to the leader); the HW follows.
    /// Keeps the HW within the log: at most its end (a follower's log may move below its HW by
    /// truncation to the leader), at least its start (a follower restarted at the leader's log
    /// start, past retention: nothing below it can be read).
    fn clamp_high_watermark(&mut self) {
        self.high_watermark = self.high_watermark.min(self.log.log_end_offset()).max(self.log.log_start_offset());
        self.changed();
    }

    fn changed(&mut self) {
        self.changes += 1;
        self.check_invariants();
    }

    /// The invariants of the module docs (on in release: fail-stop beats silent corruption).
    fn check_invariants(&self) {
        let log_end = self.log.log_end_offset();
        assert!(
            self.high_watermark <= log_end,
            "{}: high watermark {} above the log end {log_end}",
            self.tp,
            self.high_watermark
        );
        let image = &self.image;
        assert!(
            image.isr.iter().all(|r| image.replicas.contains(r)),
            "{}: ISR {:?} outside replicas",
            self.tp,
            image.isr
        );
        if self.is_leader() {
            assert!(image.leader == self.node_id, "{}: leads but the image names {}", self.tp, image.leader);
            assert!(image.isr.contains(&self.node_id), "{}: leader outside the ISR {:?}", self.tp, image.isr);
        }
    }
}

#[cfg(test)]
mod tests;
