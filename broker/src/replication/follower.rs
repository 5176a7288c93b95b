//! The follower's decisions, as pure functions: where to truncate given the leader's
//! OffsetForLeaderEpoch answer (KIP-101/279), and which answers from a leader to believe at all.
//! The server's fetcher sends the requests and applies the result under the partition lock.

use crate::types::{ErrorCode, LeaderEpoch, Offset, TopicPartition};

/// What the follower knows of its own log when the answer arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerLog {
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
    /// The latest leader epoch in the log: the one the request asked about.
    pub asked_epoch: LeaderEpoch,
}

/// The leader's answer: the largest epoch at or below the one asked about that it knows, and
/// where that epoch ends on the leader (`-1, -1`: it knows none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEnd {
    pub leader_epoch: i32,
    pub end_offset: i64,
}

/// The offset to truncate to (never above our log end). `our_end_for(epoch)` is where
/// `epoch` ends in our own log. An answer that would cut below our log start is refused: a
/// leader that means it keeps answering so, and this replica cannot follow it; never truncate
/// the whole log on one peer's word.
pub fn truncation_target(
    ours: FollowerLog,
    answer: EpochEnd,
    our_end_for: impl Fn(LeaderEpoch) -> Offset,
) -> Result<Offset, String> {
    if answer.leader_epoch >= 0 && answer.end_offset < ours.log_start_offset.0 {
        return Err(format!(
            "leader says epoch {} ends at {}, below our log start {}",
            answer.leader_epoch, answer.end_offset, ours.log_start_offset.0
        ));
    }
    let target = if answer.leader_epoch < 0 {
        // The leader knows no epoch at or before ours: nothing of ours is known to be on it.
        ours.log_start_offset
    } else if answer.leader_epoch < ours.asked_epoch.0 {
        // The leader never had our latest epoch: keep what both have of its latest epoch.
        Offset(answer.end_offset.min(our_end_for(LeaderEpoch(answer.leader_epoch)).0))
    } else {
        Offset(answer.end_offset)
    };
    let target = target.min(ours.log_end_offset);
    if crate::planted::active(crate::planted::Bug::TruncateToEpochStart) && answer.leader_epoch >= 0 {
        // Where the answered epoch starts in our log, not where it ends.
        let start = match answer.leader_epoch {
            0 => ours.log_start_offset,
            epoch => our_end_for(LeaderEpoch(epoch - 1)),
        };
        return Ok(start.min(target).max(ours.log_start_offset));
    }
    Ok(target)
}

/// A leader's OffsetForLeaderEpoch answer, checked before it can move our log: it must be about
/// our partition, and name an epoch no newer than the one we asked about with a non-negative
/// end offset (or say it knows no such epoch: -1 and -1).
pub fn check_epoch_answer(
    tp: &TopicPartition,
    topic: &str,
    partition: i32,
    answer: EpochEnd,
    asked: i32,
) -> Result<(), String> {
    let EpochEnd { leader_epoch: epoch, end_offset } = answer;
    if topic != tp.topic || partition != tp.partition {
        return Err(format!("OffsetForLeaderEpoch answer about {topic}-{partition}"));
    }
    if epoch < 0 {
        if epoch == -1 && end_offset == -1 {
            return Ok(());
        }
        return Err(format!("OffsetForLeaderEpoch answer epoch {epoch} end {end_offset}"));
    }
    if epoch > asked {
        return Err(format!("OffsetForLeaderEpoch answered epoch {epoch}, newer than the {asked} asked about"));
    }
    if end_offset < 0 {
        return Err(format!("OffsetForLeaderEpoch answered a negative end offset {end_offset}"));
    }
    Ok(())
}

/// A leader's fetch answer, checked before it can move our log or HW: about our partition, and
/// (when it carries data or says we are out of range) with `0 <= log start <= HW`.
pub fn check_fetch_answer(
    tp: &TopicPartition,
    topic: &str,
    partition: i32,
    error_code: ErrorCode,
    high_watermark: i64,
    log_start_offset: i64,
) -> Result<(), String> {
    if topic != tp.topic || partition != tp.partition {
        return Err(format!("fetch answer about {topic}-{partition}"));
    }
    let carries_offsets = error_code == ErrorCode::NONE || error_code == ErrorCode::OFFSET_OUT_OF_RANGE;
    if carries_offsets && !(0 <= log_start_offset && log_start_offset <= high_watermark) {
        return Err(format!("fetch answer with log start {log_start_offset} and high watermark {high_watermark}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> TopicPartition {
        TopicPartition { topic: "t".to_string(), partition: 0 }
    }

    fn answer(leader_epoch: i32, end_offset: i64) -> EpochEnd {
        EpochEnd { leader_epoch, end_offset }
    }

    #[test]
    fn truncation_targets_follow_the_leaders_epoch_end() {
        let ours =
            FollowerLog { log_start_offset: Offset(10), log_end_offset: Offset(50), asked_epoch: LeaderEpoch(4) };
        let our_end = |e: LeaderEpoch| Offset(if e.0 == 3 { 40 } else { 50 });
        // (story, answer, expected target)
        let table: [(&str, EpochEnd, Result<Offset, ()>); 6] = [
            ("same epoch, the leader's copy is shorter", answer(4, 45), Ok(Offset(45))),
            ("same epoch, the leader has more: keep all of ours", answer(4, 70), Ok(Offset(50))),
            ("the leader never had epoch 4: keep what both have of epoch 3", answer(3, 44), Ok(Offset(40))),
            ("the leader never had epoch 4 and its epoch 3 is shorter", answer(3, 35), Ok(Offset(35))),
            ("the leader knows no epoch at or before ours", answer(-1, -1), Ok(Offset(10))),
            ("an answer below our log start is refused", answer(2, 5), Err(())),
        ];
        for (story, epoch_end, expected) in table {
            let got = truncation_target(ours, epoch_end, our_end).map_err(|_| ());
            assert_eq!(got, expected, "{story}");
        }
    }

    #[test]
    fn epoch_answers_that_could_truncate_to_a_bad_offset_are_refused() {
        assert!(check_epoch_answer(&tp(), "t", 0, answer(3, 100), 3).is_ok());
        assert!(check_epoch_answer(&tp(), "t", 0, answer(-1, -1), 3).is_ok());
        assert!(check_epoch_answer(&tp(), "t", 0, answer(3, -5), 3).is_err(), "negative end offset");
        assert!(check_epoch_answer(&tp(), "t", 0, answer(4, 100), 3).is_err(), "an epoch newer than asked");
        assert!(check_epoch_answer(&tp(), "t", 0, answer(-7, 100), 3).is_err());
        assert!(check_epoch_answer(&tp(), "t", 1, answer(3, 100), 3).is_err(), "another partition");
        assert!(check_epoch_answer(&tp(), "u", 0, answer(3, 100), 3).is_err(), "another topic");
    }

    #[test]
    fn fetch_answers_with_impossible_offsets_are_refused() {
        let none = ErrorCode::NONE;
        let out_of_range = ErrorCode::OFFSET_OUT_OF_RANGE;
        assert!(check_fetch_answer(&tp(), "t", 0, none, 10, 0).is_ok());
        assert!(check_fetch_answer(&tp(), "t", 0, out_of_range, 10, 4).is_ok());
        assert!(check_fetch_answer(&tp(), "t", 0, out_of_range, 10, i64::MAX).is_err(), "log start past the HW");
        assert!(check_fetch_answer(&tp(), "t", 0, none, -3, 0).is_err(), "negative HW");
        assert!(check_fetch_answer(&tp(), "t", 0, out_of_range, 10, -2).is_err(), "negative log start");
        assert!(check_fetch_answer(&tp(), "t", 2, none, 10, 0).is_err());
        assert!(
            check_fetch_answer(&tp(), "t", 0, ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1).is_ok(),
            "an error answer carries no offsets"
        );
    }
}
