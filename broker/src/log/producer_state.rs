//! Idempotent producer state (Kafka's ProducerStateManager): per producer id, its epoch and the
//! sequence ranges and offsets of its last [`PRODUCER_BATCH_WINDOW`] batches.
//!
//! Rules, as Kafka applies them to a batch with producer id >= 0:
//! - epoch older than the producer's → INVALID_PRODUCER_EPOCH;
//! - same epoch, same first and last sequence as one of the last five batches → a duplicate:
//!   answered with the original offsets, nothing written;
//! - newer epoch → the sequence must restart at 0 (unless the producer was unknown);
//! - same epoch → the first sequence must follow the last one (wrapping at `i32::MAX`);
//! - unknown producer (never seen, or its batches left the log) → any sequence is accepted.

use super::LogError;
use crate::types::{ProducerEpoch, ProducerId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Kafka keeps the last five batches per producer: the most a producer has in flight.
pub const PRODUCER_BATCH_WINDOW: usize = 5;

/// Where one batch of a producer landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first. Invariant: at most [`PRODUCER_BATCH_WINDOW`] entries, all of `epoch`.
    pub batches: VecDeque<BatchMetadata>,
}

/// The outcome of checking a batch's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already in the log: answer with these offsets.
    Duplicate(BatchMetadata),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStateManager {
    pub producers: BTreeMap<i64, ProducerEntry>,
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

impl ProducerStateManager {
    /// Checks a batch from `producer_id` with sequences `first_seq..=last_seq`.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<SequenceCheck, LogError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            // A producer this log knows nothing of must start at 0. Accepting a later sequence
            // would let a retry of its first batch land behind its second (the simulator found
            // that after a failover). The client starts over (KIP-360) on UNKNOWN_PRODUCER_ID.
            if first_seq != 0 {
                return Err(LogError::UnknownProducerId { producer_id: ProducerId(producer_id), received: first_seq });
            }
            return Ok(SequenceCheck::Append);
        };
        if epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id: ProducerId(producer_id),
                received: ProducerEpoch(epoch),
                current: ProducerEpoch(entry.epoch),
            });
        }
        if epoch > entry.epoch {
            if first_seq != 0 {
                return Err(LogError::OutOfOrderSequence {
                    producer_id: ProducerId(producer_id),
                    expected: 0,
                    received: first_seq,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        // Planted (simulator only): look at the newest batch alone, not the whole window.
        let window =
            if crate::planted::active(crate::planted::Bug::DedupNewestOnly) { 1 } else { PRODUCER_BATCH_WINDOW };
        let mut recent = entry.batches.iter().rev().take(window);
        if let Some(original) = recent.find(|b| b.first_seq == first_seq && b.last_seq == last_seq) {
            return Ok(SequenceCheck::Duplicate(*original));
        }
        match entry.batches.back() {
            Some(last) if !in_sequence(last.last_seq, first_seq) => Err(LogError::OutOfOrderSequence {
                producer_id: ProducerId(producer_id),
                expected: last.last_seq.wrapping_add(1).max(0),
                received: first_seq,
            }),
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Records an appended batch (also used when replaying the log on recovery).
    pub fn update(&mut self, producer_id: i64, epoch: i16, batch: BatchMetadata) {
        let entry =
            self.producers.entry(producer_id).or_insert_with(|| ProducerEntry { epoch, batches: VecDeque::new() });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(batch);
        while entry.batches.len() > PRODUCER_BATCH_WINDOW {
            entry.batches.pop_front();
        }
        debug_assert!(entry.batches.len() <= PRODUCER_BATCH_WINDOW);
    }

    /// Forgets batches at or after `offset` (log truncation) and producers left with none.
    pub fn truncate_from(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }

    /// Whether the batch of `producer_id` ending at `last_offset` is one this state remembers
    /// (one of the producer's last five): the log cleaner keeps such a batch, if only as an
    /// empty one, so that replaying the log rebuilds the same state.
    pub fn remembers(&self, producer_id: i64, last_offset: i64) -> bool {
        self.producers.get(&producer_id).is_some_and(|e| e.batches.iter().any(|b| b.last_offset == last_offset))
    }

    /// Forgets batches below `offset` (retention), and producers left with none.
    pub fn remove_before(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.last_offset >= offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first_seq: i32, last_seq: i32, first_offset: i64) -> BatchMetadata {
        BatchMetadata { first_seq, last_seq, first_offset, last_offset: first_offset + i64::from(last_seq - first_seq) }
    }

    #[test]
    fn a_retry_within_the_last_five_batches_is_a_duplicate_with_its_original_offsets() {
        let mut state = ProducerStateManager::default();
        for i in 0..6 {
            state.update(1, 0, meta(i * 2, i * 2 + 1, 100 + i64::from(i) * 2));
        }
        assert_eq!(state.check(1, 0, 4, 5).unwrap(), SequenceCheck::Duplicate(meta(4, 5, 104)));
        // The first batch has left the window: its retry is out of sequence, not a duplicate.
        assert!(matches!(state.check(1, 0, 0, 1), Err(LogError::OutOfOrderSequence { .. })));
        assert_eq!(state.check(1, 0, 12, 12).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn gaps_and_old_epochs_are_refused_and_new_epochs_restart_at_zero() {
        let mut state = ProducerStateManager::default();
        state.update(1, 3, meta(0, 4, 0));
        assert!(matches!(state.check(1, 3, 6, 6), Err(LogError::OutOfOrderSequence { expected: 5, received: 6, .. })));
        assert!(matches!(state.check(1, 2, 5, 5), Err(LogError::InvalidProducerEpoch { .. })));
        assert!(matches!(state.check(1, 4, 5, 5), Err(LogError::OutOfOrderSequence { expected: 0, .. })));
        assert_eq!(state.check(1, 4, 0, 0).unwrap(), SequenceCheck::Append);
        // An unknown producer must start at 0: its first batch may still be on its way.
        assert!(matches!(state.check(2, 0, 17, 17), Err(LogError::UnknownProducerId { received: 17, .. })));
        assert_eq!(state.check(2, 0, 0, 0).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut state = ProducerStateManager::default();
        state.update(1, 0, meta(i32::MAX - 1, i32::MAX, 0));
        assert_eq!(state.check(1, 0, 0, 3).unwrap(), SequenceCheck::Append);
    }
}
