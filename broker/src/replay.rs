//! The one runtime for state that is "decide → records → commit → replay":
//!
//! 1. **Decide.** A handler reads the state and returns a [`Decision`]: the records that would
//!    make the change, and the reply to send once they are committed. It changes nothing.
//! 2. **Commit.** [`Committed::commit`] appends the records durably to a [`RecordLog`], and
//!    only then
//! 3. **replays** the same records into the state ([`Replay::try_replay`]), in order. Nothing
//!    else changes the state.
//! 4. **Load.** [`Committed::load`] builds the state by replaying every stored record through
//!    the same function, so recovery and normal operation take one path.
//!
//! A failed append stops the runtime from committing anything more (until restart): the log
//! may hold part of what was written, and only a reload tells what. A record of its own that
//! does not replay is a bug in the decision, and the process stops (fail-stop); a stored record
//! that does not replay is an error naming its offset.
//!
//! Today the controller's metadata log runs on it, with the local fsynced file as the commit
//! point. The group and transaction coordinators (records in `__consumer_offsets` and
//! `__transaction_state`) and the Raft quorum change only what "durably appended" means: a
//! [`RecordLog`] whose append returns once the records are replicated to the commit point.

use crate::types::{ApiError, ErrorCode};

/// State built only by replaying records.
pub trait Replay {
    type Record;

    /// Applies one committed record if it fits; otherwise changes nothing and says why.
    fn try_replay(&mut self, record: &Self::Record) -> Result<(), String>;
}

/// Where records become durable (the commit point).
pub trait RecordLog<R> {
    /// Appends all of `records` as one unit. `Err(Refused)`: nothing was written (too large,
    /// say); `Err(Failed)`: the log can no longer be trusted.
    fn append(&mut self, records: &[R]) -> Result<(), AppendError>;
}

/// Why an append did not happen.
#[derive(Debug)]
pub enum AppendError {
    /// Refused before anything was written: the request's problem, the log is fine.
    Refused(String),
    /// The write or the sync failed: the log is failed.
    Failed(String),
}

/// What a handler decided: records to commit, and the reply for after the commit.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision<R, T> {
    pub records: Vec<R>,
    pub reply: T,
}

impl<R, T> Decision<R, T> {
    pub fn new(records: Vec<R>, reply: T) -> Self {
        Decision { records, reply }
    }

    /// A decision that changes nothing.
    pub fn reply(reply: T) -> Self {
        Decision { records: Vec::new(), reply }
    }
}

/// A state, its log, and every committed record (index = offset).
#[derive(Debug)]
pub struct Committed<S: Replay, L> {
    state: S,
    log: L,
    /// Invariant: `state` is the replay of exactly these, in order.
    records: Vec<S::Record>,
    /// Set when an append failed: nothing more is committed.
    failed: Option<String>,
}

impl<S, L> Committed<S, L>
where
    S: Replay + Default,
    S::Record: Clone + std::fmt::Debug,
    L: RecordLog<S::Record>,
{
    /// Replays the stored records. `Err((offset, why))` names the first that does not fit.
    pub fn load(log: L, records: Vec<S::Record>) -> Result<Self, (usize, String)> {
        let mut state = S::default();
        for (offset, record) in records.iter().enumerate() {
            state.try_replay(record).map_err(|why| (offset, why))?;
        }
        Ok(Committed { state, log, records, failed: None })
    }

    pub fn state(&self) -> &S {
        &self.state
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    /// Why commits stopped (a failed append), if they did: the process should halt.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The offset the next committed record gets.
    pub fn next_offset(&self) -> i64 {
        self.records.len() as i64
    }

    /// Committed records from `offset` on, at most `max` of them.
    pub fn records_from(&self, offset: i64, max: usize) -> &[S::Record] {
        let start = usize::try_from(offset.max(0)).unwrap_or(usize::MAX).min(self.records.len());
        let end = start.saturating_add(max).min(self.records.len());
        &self.records[start..end]
    }

    /// Appends durably, then replays. Errors are Kafka errors for the request that decided.
    pub fn commit(&mut self, records: Vec<S::Record>) -> Result<(), ApiError> {
        if let Some(reason) = &self.failed {
            return Err(ApiError::new(ErrorCode::KAFKA_STORAGE_ERROR, format!("the log failed earlier: {reason}")));
        }
        if records.is_empty() {
            return Ok(());
        }
        match self.log.append(&records) {
            Ok(()) => {}
            Err(AppendError::Refused(why)) => return Err(ApiError::new(ErrorCode::POLICY_VIOLATION, why)),
            Err(AppendError::Failed(why)) => {
                if crate::planted::active(crate::planted::Bug::AppendAfterFailedFsync) {
                    return Err(ApiError::new(ErrorCode::KAFKA_STORAGE_ERROR, format!("append failed: {why}")));
                }
                tracing::error!(error = why, "append failed: nothing more is committed until restart");
                self.failed = Some(why.clone());
                return Err(ApiError::new(ErrorCode::KAFKA_STORAGE_ERROR, format!("append failed: {why}")));
            }
        }
        for record in records {
            if let Err(why) = self.state.try_replay(&record) {
                panic!("committed record {} does not fit the state: {why}: {record:?}", self.records.len());
            }
            self.records.push(record);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter that only goes up, and a log that fails on demand.
    #[derive(Debug, Default)]
    struct Counter(i64);

    impl Replay for Counter {
        type Record = i64;
        fn try_replay(&mut self, record: &i64) -> Result<(), String> {
            if *record <= 0 {
                return Err(format!("{record} would not count up"));
            }
            self.0 += record;
            Ok(())
        }
    }

    #[derive(Debug, Default)]
    struct Log {
        stored: Vec<i64>,
        fail: Option<bool>,
    }

    impl RecordLog<i64> for Log {
        fn append(&mut self, records: &[i64]) -> Result<(), AppendError> {
            match self.fail {
                Some(true) => Err(AppendError::Failed("EIO".to_string())),
                Some(false) => Err(AppendError::Refused("too large".to_string())),
                None => {
                    self.stored.extend_from_slice(records);
                    Ok(())
                }
            }
        }
    }

    #[test]
    fn commit_appends_then_replays_and_load_replays_the_same_records() {
        let mut committed = Committed::<Counter, Log>::load(Log::default(), vec![]).unwrap();
        committed.commit(vec![2, 3]).unwrap();
        assert_eq!((committed.state().0, committed.next_offset()), (5, 2));
        let reloaded = Committed::<Counter, Log>::load(Log::default(), committed.log().stored.clone()).unwrap();
        assert_eq!(reloaded.state().0, 5);
        assert_eq!(committed.records_from(1, 10), &[3]);
    }

    #[test]
    fn a_refused_append_changes_nothing_and_a_failed_one_stops_all_commits() {
        let mut committed = Committed::<Counter, Log>::load(Log { stored: vec![], fail: Some(false) }, vec![]).unwrap();
        assert_eq!(committed.commit(vec![1]).unwrap_err().code, ErrorCode::POLICY_VIOLATION);
        assert_eq!(committed.state().0, 0);
        committed.log.fail = Some(true);
        assert_eq!(committed.commit(vec![1]).unwrap_err().code, ErrorCode::KAFKA_STORAGE_ERROR);
        committed.log.fail = None;
        assert_eq!(committed.commit(vec![1]).unwrap_err().code, ErrorCode::KAFKA_STORAGE_ERROR, "failed for good");
    }

    #[test]
    fn a_stored_record_that_does_not_replay_is_named_by_offset() {
        let error = Committed::<Counter, Log>::load(Log::default(), vec![1, 2, -4]).unwrap_err();
        assert_eq!(error.0, 2);
    }

    #[test]
    #[should_panic(expected = "does not fit the state")]
    fn a_decided_record_that_does_not_replay_stops_the_process() {
        let mut committed = Committed::<Counter, Log>::load(Log::default(), vec![]).unwrap();
        let _ = committed.commit(vec![-1]);
    }
}
