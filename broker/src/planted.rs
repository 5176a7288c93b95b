//! Planted bugs: deliberate defects that exist only in simulator builds (`--cfg madsim`) and
//! only when switched on by name (`cargo sim planted`). They prove the checkers can catch real
//! broker bugs end to end, not just hand-written histories. In a real build [`active`] is a
//! constant `false` and every planted branch compiles away.

/// The catalog. Each names the invariant it should break.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bug {
    /// Acknowledge an append without the fsync `flush.messages=1` asks for.
    AckBeforeFsync = 1,
    /// Never recognise an idempotent retry as a duplicate.
    NoDedup = 2,
    /// Serve batches without checking their CRC and framing.
    ServeUnchecked = 4,
    /// Recovery drops the last batch of the active segment even when it is whole.
    TruncateSyncedTail = 8,
    /// The leader advances the high watermark to its own log end, ignoring the ISR.
    HwBeforeIsr = 16,
    /// A new follower skips truncation (OffsetForLeaderEpoch) and fetches from its log end.
    SkipTruncation = 32,
    /// min.insync.replicas is forgotten everywhere: acks=all appends and acknowledges, and the
    /// high watermark advances, while the ISR is below it.
    IgnoreMinIsr = 64,
    /// Loading the leader-epoch checkpoint keeps only its newest entry (the history before it is
    /// lost, and OffsetForLeaderEpoch answers for older epochs go wrong).
    LoseEpochHistory = 128,
    /// The idempotence check recognises a retry only of a producer's newest batch, not of any of
    /// its last five: a retry of an older batch still in flight is refused as out of order
    /// although it is in the log (the producer, told its batch is not there, sends it again).
    DedupNewestOnly = 256,
    /// Opening a log after a crash leaves its producer state empty (no snapshot loaded, no batch
    /// replayed): a retry of a batch appended just before the crash is no longer recognised.
    ProducerStateNotRecovered = 512,
    /// Rebuilding producer state on open replays the log's batches up to its last one, not
    /// including it (an off-by-one bound): a retry of that batch is appended a second time.
    ProducerReplayStopsShort = 1024,
    /// A follower truncates to where the leader's answered epoch *starts* in its log, not where
    /// it ends: it fetches the records again, so no client sees a difference, but its log end
    /// drops below the HW it showed.
    TruncateToEpochStart = 2048,
    /// The controller elects the first live replica in assignment order, in the ISR or not.
    ElectOutOfSync = 4096,
    /// The controller's metadata log acknowledges appends without fsyncing them: a power loss
    /// of the controller forgets committed decisions (epochs, registrations) it already sent.
    MetadataAckBeforeFsync = 8192,
    /// Recovery loads the newest producer-state snapshot but does not replay the batches after
    /// it (rebuilt from the wrong point): retries of those batches are not recognised.
    ProducerSnapshotTailSkipped = 16384,
    /// After a failed write or fsync of the metadata log, the controller keeps appending after
    /// the failed frame and keeps running (no halt): a later frame can become durable while the
    /// failed one is lost, and after a power loss the log has a hole and the node cannot start.
    AppendAfterFailedFsync = 32768,
    /// The leader advances the high watermark while the ISR is below `min.insync.replicas`
    /// (no strict min ISR): acks=0/1 records become readable on a lone leader, and an election
    /// among eligible leader replicas can then take them away.
    HwBelowMinIsr = 65536,
    /// A follower's fetcher gives up for good after one failed fetch (instead of reconnecting
    /// after a backoff): the replica stops replicating until its leader changes. Nothing is
    /// lost, the partition just never gets its replica back.
    FetcherStopsOnError = 131072,
    /// The controller never fences a broker that stopped heartbeating: the partitions it led
    /// keep a leader nobody can reach until it registers again (a restart), and stay offline
    /// while it is paused or cut off.
    NeverFenceSilentBroker = 262144,
    /// The leader's high watermark is the smallest log end among all assigned replicas, not
    /// just the ISR: one replica that is down or behind holds every partition it is in still.
    HwHeldByOutOfSync = 524288,
    /// `retention.ms` is converted with the wrong unit (divided by 60,000, as if it were given
    /// in minutes): the default week becomes about 10 s, and sealed segments older than that are
    /// deleted, records consumers already read included.
    RetentionWrongUnit = 1048576,
    /// Recovery after a crash keeps only the active segment (it "cleans up" the sealed ones it
    /// did not scan): everything before it is gone, though consumers read it long ago and the
    /// log end and high watermark never move back.
    RecoveryDropsSealedSegments = 2097152,
    /// The group coordinator accepts an OffsetCommit whatever its member id and generation (the
    /// fencing checks are forgotten; for KIP-848 groups, member id and member epoch): a member
    /// expelled for missing its session commits over the partition's new owner.
    CommitOldGeneration = 4194304,
    /// When the leader's assignment is written, the leader is answered with every member's
    /// part (the whole plan, merged), the others with their own: each partition the leader
    /// gave away has two owners in one generation. Nothing goes unowned, so the group does not
    /// stall.
    LeaderGetsEveryAssignment = 8388608,
    /// A coordinator that loads a `__consumer_offsets` partition replays its groups but not
    /// their offset commits: after a coordinator moves, acknowledged commits are gone.
    OffsetsNotReplayed = 16777216,
    /// A coordinator that takes a `__consumer_offsets` partition over from another (leader
    /// epoch above 0) never finishes loading it: its groups get COORDINATOR_LOAD_IN_PROGRESS
    /// for good. Nothing is lost or reordered; the group just stops.
    LoadNeverCompletes = 33554432,
    /// The log cleaner keeps the records a newer one of the same key supersedes and drops the
    /// newest one (its comparison is the wrong way round): a compacted `__consumer_offsets`
    /// replays an older commit than the one acknowledged.
    CleanerDropsNewest = 67108864,
    /// OffsetFetch answers one past each committed offset (an off-by-one in the answer): a
    /// member that resumes there never reads the record at the committed offset. No commit is
    /// lost or moved back; one record per resumption is simply never consumed.
    OffsetFetchPastCommit = 134217728,
    /// A KIP-848 member is given partitions of its target that another member still owns or is
    /// revoking (the ownership check of reconciliation is forgotten): two members read one
    /// partition at once, the old owner unaware it lost it.
    AssignUnreleasedPartitions = 268435456,
}

impl Bug {
    pub const ALL: [Bug; 29] = [
        Bug::AckBeforeFsync,
        Bug::NoDedup,
        Bug::ServeUnchecked,
        Bug::TruncateSyncedTail,
        Bug::HwBeforeIsr,
        Bug::SkipTruncation,
        Bug::IgnoreMinIsr,
        Bug::LoseEpochHistory,
        Bug::DedupNewestOnly,
        Bug::ProducerStateNotRecovered,
        Bug::ProducerReplayStopsShort,
        Bug::TruncateToEpochStart,
        Bug::ElectOutOfSync,
        Bug::MetadataAckBeforeFsync,
        Bug::ProducerSnapshotTailSkipped,
        Bug::AppendAfterFailedFsync,
        Bug::HwBelowMinIsr,
        Bug::FetcherStopsOnError,
        Bug::NeverFenceSilentBroker,
        Bug::HwHeldByOutOfSync,
        Bug::RetentionWrongUnit,
        Bug::RecoveryDropsSealedSegments,
        Bug::CommitOldGeneration,
        Bug::LeaderGetsEveryAssignment,
        Bug::OffsetsNotReplayed,
        Bug::LoadNeverCompletes,
        Bug::CleanerDropsNewest,
        Bug::OffsetFetchPastCommit,
        Bug::AssignUnreleasedPartitions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "ack-before-fsync",
            Bug::NoDedup => "no-dedup",
            Bug::ServeUnchecked => "serve-unchecked",
            Bug::TruncateSyncedTail => "truncate-synced-tail",
            Bug::HwBeforeIsr => "hw-before-isr",
            Bug::SkipTruncation => "skip-truncation",
            Bug::IgnoreMinIsr => "ignore-min-isr",
            Bug::LoseEpochHistory => "lose-epoch-history",
            Bug::DedupNewestOnly => "dedup-newest-only",
            Bug::ProducerStateNotRecovered => "producer-state-not-recovered",
            Bug::ProducerReplayStopsShort => "producer-replay-stops-short",
            Bug::TruncateToEpochStart => "truncate-to-epoch-start",
            Bug::ElectOutOfSync => "elect-out-of-sync",
            Bug::MetadataAckBeforeFsync => "metadata-ack-before-fsync",
            Bug::ProducerSnapshotTailSkipped => "producer-snapshot-tail-skipped",
            Bug::AppendAfterFailedFsync => "append-after-failed-fsync",
            Bug::HwBelowMinIsr => "hw-below-min-isr",
            Bug::FetcherStopsOnError => "fetcher-stops-on-error",
            Bug::NeverFenceSilentBroker => "never-fence-silent-broker",
            Bug::HwHeldByOutOfSync => "hw-held-by-out-of-sync",
            Bug::RetentionWrongUnit => "retention-wrong-unit",
            Bug::RecoveryDropsSealedSegments => "recovery-drops-sealed-segments",
            Bug::CommitOldGeneration => "commit-old-generation",
            Bug::LeaderGetsEveryAssignment => "leader-gets-every-assignment",
            Bug::OffsetsNotReplayed => "offsets-not-replayed",
            Bug::LoadNeverCompletes => "load-never-completes",
            Bug::CleanerDropsNewest => "cleaner-drops-newest",
            Bug::OffsetFetchPastCommit => "offset-fetch-past-commit",
            Bug::AssignUnreleasedPartitions => "assign-unreleased-partitions",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

#[cfg(madsim)]
static ACTIVE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Switches exactly these bugs on, for the whole process (simulator builds only).
#[cfg(madsim)]
pub fn set(bugs: &[Bug]) {
    let mask = bugs.iter().fold(0, |m, b| m | *b as u32);
    ACTIVE.store(mask, std::sync::atomic::Ordering::SeqCst);
}

/// Whether `bug` is switched on. Always `false` outside the simulator.
#[inline]
pub fn active(bug: Bug) -> bool {
    #[cfg(madsim)]
    {
        ACTIVE.load(std::sync::atomic::Ordering::SeqCst) & bug as u32 != 0
    }
    #[cfg(not(madsim))]
    {
        let _ = bug;
        false
    }
}
