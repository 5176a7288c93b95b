//! How one run is judged from what the checkers found.
//!
//! - Every violation is reported, whatever else failed; the verdict only ranks them.
//! - Safety outranks liveness: a run that lost data and also stalled is a safety failure (and a
//!   sweep's exit code is 1 if any run was).
//! - A scenario that expects anomalies excuses exactly those, by name, and only in runs whose
//!   faults were beyond the budget. Any other violation fails the run, and the detail names what
//!   was expected and what else was found.
//! - Availability invariants ([`LIVENESS_INVARIANTS`]) and a heal phase that did not converge are
//!   liveness failures: the cluster stalled, nothing was lost.

use crate::check::Violation;
use crate::scenario::{Expectation, ExpectedOutcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How one seed ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Verdict {
    Pass,
    /// An invariant broke that the scenario does not excuse.
    Safety,
    /// Nothing broke that loses or corrupts data, but the cluster stalled: an availability
    /// invariant broke, or the heal phase did not converge.
    Liveness,
    /// The simulator (or the broker) panicked.
    Panic,
}

impl Verdict {
    /// Process exit codes: distinct per failure class.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Pass => 0,
            Verdict::Safety => 1,
            Verdict::Liveness => 2,
            Verdict::Panic => 3,
        }
    }

    /// The exit code of a sweep: safety if any run failed safety, else the worst other code.
    pub fn sweep_exit_code(verdicts: impl IntoIterator<Item = Verdict>) -> i32 {
        let verdicts: BTreeSet<Verdict> = verdicts.into_iter().collect();
        if verdicts.contains(&Verdict::Safety) {
            return Verdict::Safety.exit_code();
        }
        verdicts.iter().map(|v| v.exit_code()).max().unwrap_or(0)
    }
}

/// Invariants that say the cluster was unavailable when it should not have been.
pub const LIVENESS_INVARIANTS: &[&str] =
    &["leader-takeover", "progress-in-budget", "catch-up-after-heal", "group-progress"];

pub fn is_liveness(invariant: &str) -> bool {
    LIVENESS_INVARIANTS.contains(&invariant)
}

/// A run's verdict and the one line that says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub detail: String,
}

/// Whether a violation of `invariant` is one the scenario expects (and the run was beyond the
/// budget, where the scenario's expected loss can happen).
pub fn excused(expect: &Expectation, within_budget: bool, invariant: &str) -> bool {
    !within_budget && expect.outcome == ExpectedOutcome::Anomalies && expect.anomalies.iter().any(|a| a == invariant)
}

/// Judges a run. `within_budget`: every fault was one the configuration promises to survive.
pub fn judge(
    expect: &Expectation,
    within_budget: bool,
    violations: &[Violation],
    liveness_failure: Option<&str>,
) -> Judgement {
    let unexcused: Vec<&Violation> =
        violations.iter().filter(|v| !excused(expect, within_budget, v.invariant)).collect();
    let kinds = |list: &[&Violation]| -> String {
        let set: BTreeSet<&str> = list.iter().map(|v| v.invariant).collect();
        set.into_iter().collect::<Vec<_>>().join(", ")
    };
    let expected_note = if expect.outcome == ExpectedOutcome::Anomalies {
        format!(" (the scenario excuses only {} beyond the budget)", expect.anomalies.join(", "))
    } else {
        String::new()
    };
    let safety: Vec<&Violation> = unexcused.iter().copied().filter(|v| !is_liveness(v.invariant)).collect();
    if let Some(first) = safety.first() {
        return Judgement {
            verdict: Verdict::Safety,
            detail: format!("{}: {} [found: {}]{expected_note}", first.invariant, first.detail, kinds(&safety)),
        };
    }
    let stalled: Vec<&Violation> = unexcused.iter().copied().filter(|v| is_liveness(v.invariant)).collect();
    if let Some(first) = stalled.first() {
        return Judgement {
            verdict: Verdict::Liveness,
            detail: format!("{}: {} [found: {}]", first.invariant, first.detail, kinds(&stalled)),
        };
    }
    if let Some(failure) = liveness_failure {
        return Judgement { verdict: Verdict::Liveness, detail: failure.to_string() };
    }
    let detail = violations.first().map_or(String::new(), |v| format!("{}: {}", v.invariant, v.detail));
    Judgement { verdict: Verdict::Pass, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Value;

    fn violation(invariant: &'static str) -> Violation {
        Violation {
            invariant,
            partition: 0,
            offsets: vec![1],
            values: vec![Value(7)],
            operations: vec![],
            detail: format!("{invariant} detail"),
        }
    }

    fn expecting(anomalies: &[&str]) -> Expectation {
        Expectation {
            outcome: if anomalies.is_empty() { ExpectedOutcome::Pass } else { ExpectedOutcome::Anomalies },
            anomalies: anomalies.iter().map(|a| a.to_string()).collect(),
            regression_seeds: vec![],
        }
    }

    #[test]
    fn a_run_that_lost_data_and_stalled_is_a_safety_failure() {
        let judged = judge(&expecting(&[]), true, &[violation("poll-skip")], Some("the final read did not finish"));
        assert_eq!(judged.verdict, Verdict::Safety);
        let judged = judge(&expecting(&[]), true, &[violation("leader-takeover"), violation("lost-write")], None);
        assert_eq!(judged.verdict, Verdict::Safety);
        assert!(judged.detail.starts_with("lost-write"), "{}", judged.detail);
    }

    #[test]
    fn an_expected_loss_excuses_only_what_it_names() {
        let expect = expecting(&["lost-write", "unseen"]);
        let named = [violation("lost-write"), violation("unseen")];
        assert_eq!(judge(&expect, false, &named, None).verdict, Verdict::Pass);
        let mut more = named.to_vec();
        more.push(violation("poll-skip"));
        let judged = judge(&expect, false, &more, None);
        assert_eq!(judged.verdict, Verdict::Safety);
        assert!(
            judged.detail.contains("poll-skip") && judged.detail.contains("lost-write, unseen"),
            "{}",
            judged.detail
        );
    }

    #[test]
    fn within_the_budget_nothing_is_excused() {
        let expect = expecting(&["lost-write"]);
        assert_eq!(judge(&expect, true, &[violation("lost-write")], None).verdict, Verdict::Safety);
    }

    #[test]
    fn availability_violations_are_liveness_and_name_themselves() {
        let judged = judge(&expecting(&[]), true, &[violation("catch-up-after-heal")], None);
        assert_eq!(judged.verdict, Verdict::Liveness);
        assert!(judged.detail.starts_with("catch-up-after-heal"));
        assert_eq!(judge(&expecting(&[]), true, &[], None).verdict, Verdict::Pass);
    }

    #[test]
    fn a_sweep_with_any_safety_failure_exits_1() {
        let verdicts = [Verdict::Liveness, Verdict::Safety, Verdict::Liveness];
        assert_eq!(Verdict::sweep_exit_code(verdicts), 1);
        assert_eq!(Verdict::sweep_exit_code([Verdict::Pass, Verdict::Liveness]), 2);
        assert_eq!(Verdict::sweep_exit_code([Verdict::Pass, Verdict::Panic]), 3);
        assert_eq!(Verdict::sweep_exit_code([]), 0);
    }
}
