//! Failure reports and sweep summaries.
//!
//! A report lives in `reports/<scenario>/<seed>/`: `report.md` (header with scenario, seed,
//! commit and the replay command; the violated invariants with partitions, offsets and values;
//! the fault timeline; a compact per-node trace; the part of the history that shows each
//! violation), `report.json` (what `sim replay` needs) and `history.json` (the whole history).
#![allow(clippy::disallowed_methods)] // reports are written by the harness, outside any simulated node

use crate::history::{Op, Outcome};
use crate::run::RunOutcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use crate::verdict::Verdict;

/// What `sim replay` reads back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplayInfo {
    pub scenario_path: String,
    pub scenario: String,
    pub seed: u64,
    pub trace_hash: u64,
    pub verdict: Verdict,
    pub commit: String,
}

/// The commit the simulator was built from, for reports.
pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

pub fn report_dir(reports: &Path, scenario: &str, seed: u64) -> PathBuf {
    reports.join(scenario).join(seed.to_string())
}

/// Writes the report of one run and returns its directory.
pub fn write_report(
    reports: &Path,
    scenario_path: &str,
    outcome: &RunOutcome,
    verdict: Verdict,
) -> std::io::Result<PathBuf> {
    let dir = report_dir(reports, &outcome.scenario, outcome.seed);
    std::fs::create_dir_all(&dir)?;
    let info = ReplayInfo {
        scenario_path: scenario_path.to_string(),
        scenario: outcome.scenario.clone(),
        seed: outcome.seed,
        trace_hash: outcome.trace_hash,
        verdict,
        commit: commit(),
    };
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&info)?)?;
    std::fs::write(dir.join("history.json"), serde_json::to_string(&outcome.history)?)?;
    std::fs::write(dir.join("report.md"), render(scenario_path, outcome, verdict, &info.commit, &dir))?;
    Ok(dir)
}

fn render(scenario_path: &str, outcome: &RunOutcome, verdict: Verdict, commit: &str, dir: &Path) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {} seed {}: {:?}\n", outcome.scenario, outcome.seed, verdict);
    let _ = writeln!(md, "- scenario: `{scenario_path}`\n- seed: {}\n- commit: {commit}", outcome.seed);
    let _ = writeln!(
        md,
        "- simulated time: {:.1} s\n- trace hash: {:016x}",
        outcome.simulated_ns as f64 / 1e9,
        outcome.trace_hash
    );
    let _ = writeln!(
        md,
        "- fault budget: {} ({})",
        if outcome.budget.within { "within" } else { "beyond" },
        outcome.budget.reason
    );
    let _ = writeln!(md, "- configuration drawn: {}", outcome.config.describe());
    let _ = writeln!(md, "- fewest segments of any replica at the end: {}", outcome.fewest_segments);
    let _ = writeln!(md, "- replay: `cargo sim replay {}`", dir.display());
    let _ = writeln!(md, "- rerun: `cargo sim run {scenario_path} --seed {}`\n", outcome.seed);
    if let Some(liveness) = &outcome.liveness_failure {
        let _ = writeln!(md, "## Liveness failure\n\n{liveness}\n");
    }
    if !outcome.violations.is_empty() {
        let mut by_invariant: BTreeMap<&str, Vec<&crate::check::Violation>> = BTreeMap::new();
        for v in &outcome.violations {
            by_invariant.entry(v.invariant).or_default().push(v);
        }
        let _ = writeln!(md, "## Violations\n");
        for (invariant, list) in &by_invariant {
            let _ = writeln!(md, "### {invariant}: {} violation(s)\n", list.len());
            let _ = writeln!(md, "| partition | offsets | values | detail |\n| --- | --- | --- | --- |");
            for v in list.iter().take(5) {
                let values: Vec<String> = v.values.iter().map(ToString::to_string).collect();
                let _ = writeln!(md, "| {} | {:?} | {} | {} |", v.partition, v.offsets, values.join(", "), v.detail);
            }
            md.push('\n');
        }
    }
    let overlaps = crate::check::groups::ownership_overlaps(&outcome.history);
    if !overlaps.is_empty() {
        let _ = writeln!(md, "## Partitions read by two group members at once, across generations (allowed)\n");
        let _ = writeln!(md, "| partition | earlier owner (generation, window) | later owner (generation, window) |");
        let _ = writeln!(md, "| --- | --- | --- |");
        let window = |w: &(String, i32, u64, u64)| {
            format!("{} ({}, {:.3}–{:.3} s)", w.0, w.1, w.2 as f64 / 1e9, w.3 as f64 / 1e9)
        };
        for o in overlaps.iter().take(20) {
            let _ = writeln!(md, "| {} | {} | {} |", o.partition, window(&o.earlier), window(&o.later));
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Fault timeline\n");
    if outcome.faults.is_empty() {
        let _ = writeln!(md, "(no faults)");
    }
    for event in &outcome.faults {
        let _ = writeln!(md, "- {:>9.3} s  {:<10} {}", event.at_ns as f64 / 1e9, event.target, event.what);
    }
    for (node, counts) in &outcome.disk_faults {
        if counts != &crate::disk::DiskFaultCounts::default() {
            let _ = writeln!(
                md,
                "- disk of {node}: {} corrupted reads, {} I/O errors, {} ENOSPC, {} files torn by power loss",
                counts.corrupted_reads, counts.io_errors, counts.no_space_errors, counts.torn_files
            );
        }
    }
    let _ = writeln!(md, "\n## Per-node trace\n");
    for line in node_trace(outcome) {
        let _ = writeln!(md, "- {line}");
    }
    let _ = writeln!(md, "\n## History around each violation\n");
    let mut shown = std::collections::BTreeSet::new();
    for v in outcome.violations.iter().filter(|v| shown.insert(v.invariant)) {
        let _ = writeln!(md, "### {} (partition {})\n", v.invariant, v.partition);
        for &i in v.operations.iter().take(10) {
            if let Some(op) = outcome.history.operations.get(i) {
                let _ = writeln!(
                    md,
                    "- #{i} process {} [{:.3}s, {:.3}s] {:?} {}",
                    op.process.0,
                    op.invoked_ns as f64 / 1e9,
                    op.completed_ns as f64 / 1e9,
                    op.outcome,
                    describe(&op.op)
                );
            }
        }
        md.push('\n');
    }
    md
}

fn describe(op: &Op) -> String {
    match op {
        Op::Send { partition, value, offset } => format!("send {value} to p{partition} -> offset {offset:?}"),
        Op::Poll { partition, records, high_watermark, after_seek } => {
            let span = match (records.first(), records.last()) {
                (Some(a), Some(b)) => format!("offsets {}..={} ({} records)", a.0, b.0, records.len()),
                _ => "no records".to_string(),
            };
            format!("poll p{partition}: {span}, HW {high_watermark:?}{}", if *after_seek { ", after seek" } else { "" })
        }
        Op::ListLatest { partition, offset } => format!("list latest p{partition} -> {offset:?}"),
        Op::GroupAssigned { member, generation, partitions } => {
            format!("{member} given partitions {partitions:?} in generation {generation}")
        }
        Op::GroupCommit { member, generation, partition, offset } => {
            format!("{member} commits offset {offset} of p{partition} in generation {generation}")
        }
        Op::GroupOffsetFetch { partition, offset } => format!("committed offset of p{partition} -> {offset:?}"),
        Op::GroupHeartbeat { member, epoch, owned, answered_epoch, joining } => format!(
            "{member} heartbeats at epoch {epoch}{}{} -> epoch {answered_epoch}",
            if *joining { " (joining)" } else { "" },
            owned.as_ref().map_or(String::new(), |o| format!(" owning {o:?}"))
        ),
    }
}

/// One line per node: brokers' fault events, clients' operation counts by outcome.
fn node_trace(outcome: &RunOutcome) -> Vec<String> {
    let mut lines = Vec::new();
    let mut brokers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for event in &outcome.faults {
        brokers.entry(&event.target).or_default().push(format!("{:.1}s {}", event.at_ns as f64 / 1e9, event.what));
    }
    for (name, final_state) in &outcome.final_observations {
        let events = brokers.remove(name.to_string().as_str()).unwrap_or_default();
        let offsets: Vec<String> = final_state
            .iter()
            .map(|o| format!("p{} [{}, {})", o.state.partition, o.state.log_start_offset, o.state.log_end_offset))
            .collect();
        lines.push(format!(
            "{name}: {} | final logs {}",
            if events.is_empty() { "no faults".to_string() } else { events.join(", ") },
            offsets.join(" ")
        ));
    }
    let mut clients: BTreeMap<u32, [usize; 3]> = BTreeMap::new();
    for op in &outcome.history.operations {
        let counts = clients.entry(op.process.0).or_default();
        counts[match op.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Info => 2,
        }] += 1;
    }
    for (process, [ok, fail, info]) in clients {
        let role = match process {
            0..=999 => "producer",
            1000..=1999 => "consumer",
            _ => "final reader",
        };
        lines.push(format!("{role} process {process}: {ok} ok, {fail} fail, {info} info"));
    }
    lines
}

/// One row of a sweep summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedResult {
    pub scenario: String,
    pub seed: u64,
    pub verdict: Verdict,
    pub within_budget: bool,
    pub anomalies: Vec<String>,
    pub trace_hash: u64,
    pub wall_ms: u64,
    pub simulated_ms: u64,
    /// The fewest segments any replica of any partition held at the end.
    pub fewest_segments: usize,
    pub detail: String,
}

/// JUnit XML: one test case per (scenario, seed).
pub fn junit(results: &[SeedResult]) -> String {
    let failures = results.iter().filter(|r| r.verdict != Verdict::Pass).count();
    let mut xml = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"gregor-sim\" tests=\"{}\" failures=\"{failures}\">\n", results.len());
    for r in results {
        let _ = write!(
            xml,
            "  <testcase classname=\"{}\" name=\"seed-{}\" time=\"{:.3}\"",
            escape(&r.scenario),
            r.seed,
            r.wall_ms as f64 / 1e3
        );
        if r.verdict == Verdict::Pass {
            xml.push_str("/>\n");
        } else {
            let _ = writeln!(
                xml,
                ">\n    <failure message=\"{:?}\">{}</failure>\n  </testcase>",
                r.verdict,
                escape(&r.detail)
            );
        }
    }
    xml.push_str("</testsuite>\n");
    xml
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
