//! `sim`: run the broker inside the simulator.
//!
//! ```text
//! sim                                   the default suite: every scenario in scenarios/, default seeds
//! sim run SCENARIO --seed N             one run; a report in reports/ unless it passes
//! sim sweep [SCENARIO...] [--seeds A..B[,N...]] [--jobs N] [--shard K/N] [--check-determinism]
//! sim replay REPORT_DIR                 re-run a reported seed and compare trace hashes
//! ```
//! Exit codes: 0 pass, 1 safety violation, 2 liveness failure, 3 simulator panic, 4 bad usage or
//! scenario, 5 an expected anomaly was never found, 6 nondeterminism (a replay's hash differs).
#![allow(clippy::disallowed_methods)] // the harness: one fresh OS thread per seed, files for reports

#[cfg(madsim)]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("sim must be built with --cfg madsim: run it through `cargo sim`");
    std::process::exit(4);
}

#[cfg(madsim)]
mod cli {
    use sim::report::{self, SeedResult, Verdict};
    use sim::run::{self, RunOutcome};
    use sim::scenario::{ExpectedOutcome, Scenario};
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    const EXIT_USAGE: i32 = 4;
    const EXIT_EXPECTATION: i32 = 5;
    const EXIT_NONDETERMINISM: i32 = 6;
    const DEFAULT_SEEDS: std::ops::Range<u64> = 0..20;

    const USAGE: &str = "usage:
  sim                                  run every scenario in scenarios/ on the default seeds
  sim run SCENARIO --seed N            one run
  sim sweep [SCENARIO...] [--seeds A..B[,N...]] [--jobs N] [--shard K/N] [--check-determinism] [--reports DIR]
  sim replay REPORT_DIR                re-run a reported seed; the trace hash must match
  sim planted [SCENARIO...] [--bug NAME] [--seeds A..B] [--until-caught]
                                       each planted bug must be caught (the run fails: safety or liveness) within the seeds
                                       (--until-caught: stop each bug at its first catch instead of measuring its rate)
  sim bench [SCENARIO] [--seeds A..B]  wall time per seed and seeds per hour (default: scenarios/bench/standard.toml)
exit codes: 0 pass, 1 safety, 2 liveness, 3 panic, 4 usage, 5 expected anomaly not found, 6 nondeterminism";

    struct Options {
        scenarios: Vec<PathBuf>,
        seeds: Vec<u64>,
        jobs: usize,
        check_determinism: bool,
        reports: PathBuf,
        /// `--shard K/N`: this process runs the seeds with `seed % N == K - 1`.
        shard: Option<(u64, u64)>,
    }

    impl Options {
        /// The seeds a sweep runs for `scenario`: the asked range plus the scenario's regression
        /// seeds (each once), within the shard.
        fn seeds_for(&self, scenario: &Scenario) -> Vec<u64> {
            let mut seeds = self.seeds.clone();
            for &seed in &scenario.expect.regression_seeds {
                if !seeds.contains(&seed) && self.shard.is_none_or(|(k, n)| seed % n == k - 1) {
                    seeds.push(seed);
                }
            }
            seeds
        }
    }

    pub fn main() -> i32 {
        // Broker and simulator logs on stderr when RUST_LOG asks for them (off by default);
        // no wall-clock timestamps, so the same seed prints the same log.
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            tracing_subscriber::fmt().with_env_filter(filter).without_time().with_writer(std::io::stderr).init();
        }
        let args: Vec<String> = std::env::args().skip(1).collect();
        let result = match args.first().map(String::as_str) {
            None => sweep(&[]),
            Some("run") => run_one(&args[1..]),
            Some("sweep") => sweep(&args[1..]),
            Some("replay") => replay(&args[1..]),
            Some("bench") => bench(&args[1..]),
            Some("planted") => planted(&args[1..]),
            Some("-h" | "--help") => {
                println!("{USAGE}");
                Ok(0)
            }
            Some(other) => Err(format!("unknown command `{other}`")),
        };
        result.unwrap_or_else(|e| {
            eprintln!("sim: {e}\n\n{USAGE}");
            EXIT_USAGE
        })
    }

    /// `A..B`, `N`, or a comma-separated list of both (`0..20,54,122`).
    fn parse_seeds(spec: &str) -> Result<Vec<u64>, String> {
        let bad = || format!("--seeds expects A..B, N or a comma-separated list of them, got `{spec}`");
        let mut seeds = Vec::new();
        for part in spec.split(',') {
            match part.split_once("..") {
                Some((a, b)) => {
                    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                    seeds.extend(a..b);
                }
                None => seeds.push(part.parse::<u64>().map_err(|_| bad())?),
            }
        }
        Ok(seeds)
    }

    fn parse_options(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            scenarios: vec![],
            seeds: DEFAULT_SEEDS.collect(),
            jobs: 1,
            check_determinism: false,
            reports: PathBuf::from("reports"),
            shard: None,
        };
        let mut shard: Option<(u64, u64)> = None;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--seeds" => options.seeds = parse_seeds(&value("--seeds")?)?,
                "--seed" => {
                    options.seeds = vec![value("--seed")?.parse().map_err(|_| "--seed expects a number".to_string())?]
                }
                "--jobs" => {
                    options.jobs = value("--jobs")?.parse().map_err(|_| "--jobs expects a number".to_string())?
                }
                "--reports" => options.reports = PathBuf::from(value("--reports")?),
                "--check-determinism" => options.check_determinism = true,
                "--shard" => {
                    let spec = value("--shard")?;
                    let (k, n) = spec.split_once('/').ok_or("--shard expects K/N")?;
                    let (k, n): (u64, u64) = (k.parse().map_err(|_| "bad K")?, n.parse().map_err(|_| "bad N")?);
                    if k == 0 || k > n {
                        return Err(format!("--shard {spec}: K must be 1..=N"));
                    }
                    shard = Some((k, n));
                }
                other if other.starts_with('-') => return Err(format!("unknown option `{other}`")),
                path => options.scenarios.push(PathBuf::from(path)),
            }
        }
        if let Some((k, n)) = shard {
            options.seeds.retain(|s| s % n == k - 1);
        }
        options.shard = shard;
        options.jobs = options.jobs.max(1);
        Ok(options)
    }

    /// Every `*.toml` directly in `scenarios/`, sorted.
    fn default_scenarios() -> Result<Vec<PathBuf>, String> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir("scenarios")
            .map_err(|e| format!("reading scenarios/: {e} (run from the repository root)"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        Ok(paths)
    }

    fn load(path: &Path) -> Result<Scenario, String> {
        Scenario::load(path).map_err(|e| e.to_string())
    }

    /// Runs one seed on a fresh OS thread; a panic becomes `Err(message)`.
    fn run_isolated(scenario: &Scenario, seed: u64) -> Result<RunOutcome, String> {
        let scenario = scenario.clone();
        std::thread::Builder::new()
            .name(format!("seed-{seed}"))
            .spawn(move || run::run(&scenario, seed))
            .expect("spawning a seed thread")
            .join()
            .map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".to_string())
            })
    }

    fn judge(scenario: &Scenario, outcome: &RunOutcome) -> sim::verdict::Judgement {
        sim::verdict::judge(
            &scenario.expect,
            outcome.budget.within,
            &outcome.violations,
            outcome.liveness_failure.as_deref(),
        )
    }

    fn verdict(scenario: &Scenario, outcome: &RunOutcome) -> Verdict {
        judge(scenario, outcome).verdict
    }

    fn anomalies(outcome: &RunOutcome) -> Vec<String> {
        let set: BTreeSet<&str> = outcome.violations.iter().map(|v| v.invariant).collect();
        set.into_iter().map(str::to_string).collect()
    }

    fn evaluate(path: &Path, scenario: &Scenario, seed: u64, reports: &Path) -> (SeedResult, Option<RunOutcome>) {
        let started = Instant::now();
        let outcome = run_isolated(scenario, seed);
        let wall_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(outcome) => {
                let sim::verdict::Judgement { verdict, detail } = judge(scenario, &outcome);
                if verdict != Verdict::Pass {
                    let _ = report::write_report(reports, &path.display().to_string(), &outcome, verdict);
                }
                let result = SeedResult {
                    scenario: scenario.name.clone(),
                    seed,
                    verdict,
                    within_budget: outcome.budget.within,
                    anomalies: anomalies(&outcome),
                    trace_hash: outcome.trace_hash,
                    wall_ms,
                    simulated_ms: outcome.simulated_ns / 1_000_000,
                    fewest_segments: outcome.fewest_segments,
                    detail,
                };
                (result, Some(outcome))
            }
            Err(panic) => {
                let result = SeedResult {
                    scenario: scenario.name.clone(),
                    seed,
                    verdict: Verdict::Panic,
                    within_budget: true,
                    anomalies: vec![],
                    trace_hash: 0,
                    wall_ms,
                    simulated_ms: 0,
                    fewest_segments: 0,
                    detail: format!("panic: {panic}"),
                };
                (result, None)
            }
        }
    }

    fn run_one(args: &[String]) -> Result<i32, String> {
        let options = parse_options(args)?;
        let [path] = options.scenarios.as_slice() else { return Err("run takes one scenario".to_string()) };
        let [seed] = options.seeds.as_slice() else { return Err("run takes one --seed".to_string()) };
        let scenario = load(path)?;
        let (result, outcome) = evaluate(path, &scenario, *seed, &options.reports);
        print_result(&result);
        // A single run always leaves its report: it is how a seed is investigated.
        if let Some(outcome) = &outcome {
            if result.verdict == Verdict::Pass {
                report::write_report(&options.reports, &path.display().to_string(), outcome, result.verdict)
                    .map_err(|e| e.to_string())?;
                if !outcome.violations.is_empty() {
                    println!("anomalies found (allowed beyond the fault budget): {:?}", result.anomalies);
                }
            }
        }
        let dir = report::report_dir(&options.reports, &scenario.name, *seed);
        println!("report: {}\nreplay: cargo sim replay {}", dir.join("report.md").display(), dir.display());
        Ok(result.verdict.exit_code())
    }

    fn print_result(r: &SeedResult) {
        println!(
            "{} seed {}: {:?} ({} budget) anomalies {:?}, {} ms wall, {:.1} s simulated, trace {:016x}{}",
            r.scenario,
            r.seed,
            r.verdict,
            if r.within_budget { "within" } else { "beyond" },
            r.anomalies,
            r.wall_ms,
            r.simulated_ms as f64 / 1e3,
            r.trace_hash,
            if r.detail.is_empty() { String::new() } else { format!("\n  {}", r.detail) }
        );
    }

    fn sweep(args: &[String]) -> Result<i32, String> {
        let mut options = parse_options(args)?;
        if options.scenarios.is_empty() {
            options.scenarios = default_scenarios()?;
        }
        let scenarios: Vec<(PathBuf, Scenario)> =
            options.scenarios.iter().map(|p| load(p).map(|s| (p.clone(), s))).collect::<Result<_, _>>()?;
        let jobs: Vec<(usize, u64)> = scenarios
            .iter()
            .enumerate()
            .flat_map(|(i, (_, scenario))| options.seeds_for(scenario).into_iter().map(move |s| (i, s)))
            .collect();
        let total = jobs.len();
        let queue = Arc::new(Mutex::new(jobs.into_iter()));
        let results: Arc<Mutex<Vec<SeedResult>>> = Arc::default();
        let nondeterministic: Arc<Mutex<Vec<String>>> = Arc::default();
        let done = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let scenarios = Arc::new(scenarios);
        let workers: Vec<_> = (0..options.jobs)
            .map(|_| {
                let (queue, results, done, scenarios, nondeterministic) =
                    (queue.clone(), results.clone(), done.clone(), scenarios.clone(), nondeterministic.clone());
                let (reports, check) = (options.reports.clone(), options.check_determinism);
                std::thread::spawn(move || loop {
                    let Some((i, seed)) = queue.lock().expect("queue").next() else { return };
                    let (path, scenario) = &scenarios[i];
                    let (result, _) = evaluate(path, scenario, seed, &reports);
                    if check && result.verdict != Verdict::Panic {
                        let again = run_isolated(scenario, seed).map(|o| o.trace_hash).unwrap_or(0);
                        if again != result.trace_hash {
                            nondeterministic.lock().expect("nd").push(format!(
                                "{} seed {seed}: trace {:016x} then {again:016x}",
                                scenario.name, result.trace_hash
                            ));
                        }
                    }
                    let failed = result.verdict != Verdict::Pass;
                    results.lock().expect("results").push(result);
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    progress(n, total, failed, &started);
                })
            })
            .collect();
        for worker in workers {
            worker.join().map_err(|_| "a sweep worker panicked".to_string())?;
        }
        eprintln!();
        let mut results = Arc::try_unwrap(results).expect("workers joined").into_inner().expect("results");
        results.sort_by(|a, b| (&a.scenario, a.seed).cmp(&(&b.scenario, b.seed)));
        let exit = summarize(&scenarios, &results, &options, started.elapsed().as_secs_f64());
        let nondeterministic = nondeterministic.lock().expect("nd").clone();
        if !nondeterministic.is_empty() {
            println!("\nNONDETERMINISM: the same seed gave different trace hashes:");
            nondeterministic.iter().for_each(|line| println!("  {line}"));
            return Ok(EXIT_NONDETERMINISM);
        }
        if options.check_determinism {
            println!("determinism: every seed ran twice with the same trace hash");
        }
        Ok(exit)
    }

    fn progress(done: usize, total: usize, failed: bool, started: &Instant) {
        use std::io::IsTerminal;
        static FAILED: AtomicUsize = AtomicUsize::new(0);
        let failures = FAILED.fetch_add(usize::from(failed), Ordering::SeqCst) + usize::from(failed);
        // In a log (CI), a line per tenth instead of a redrawn bar.
        if !std::io::stderr().is_terminal() {
            if done == total || done.is_multiple_of((total / 10).max(1)) {
                eprintln!("{done}/{total} seeds, {failures} failed, {:.0} s", started.elapsed().as_secs_f64());
            }
            return;
        }
        let width = 30;
        let filled = done * width / total.max(1);
        eprint!(
            "\r[{}{}] {done}/{total} seeds, {failures} failed, {:.0} s",
            "#".repeat(filled),
            " ".repeat(width - filled),
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }

    fn summarize(scenarios: &[(PathBuf, Scenario)], results: &[SeedResult], options: &Options, wall_s: f64) -> i32 {
        println!("\n| scenario | seeds | pass | safety | liveness | panic | anomalies found (seeds) | expected | fewest segments | wall ms/seed |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        let mut exit = 0;
        for (path, scenario) in scenarios {
            let rows: Vec<&SeedResult> = results.iter().filter(|r| r.scenario == scenario.name).collect();
            let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
            let mut found: BTreeMap<&str, usize> = BTreeMap::new();
            for row in &rows {
                for anomaly in &row.anomalies {
                    *found.entry(anomaly.as_str()).or_default() += 1;
                }
            }
            let expected = match scenario.expect.outcome {
                ExpectedOutcome::Pass => "pass".to_string(),
                ExpectedOutcome::Anomalies => scenario.expect.anomalies.join(", "),
            };
            let mean_ms = rows.iter().map(|r| r.wall_ms).sum::<u64>() / rows.len().max(1) as u64;
            // Segment rolls happened in every seed if the fewest segments is above 1.
            let fewest_segments = rows.iter().filter(|r| r.verdict != Verdict::Panic).map(|r| r.fewest_segments).min();
            let found_text: Vec<String> = found.iter().map(|(a, n)| format!("{a} ({n})")).collect();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {expected} | {} | {mean_ms} |",
                scenario.name,
                rows.len(),
                count(Verdict::Pass),
                count(Verdict::Safety),
                count(Verdict::Liveness),
                count(Verdict::Panic),
                if found_text.is_empty() { "-".to_string() } else { found_text.join(", ") },
                fewest_segments.map_or("-".to_string(), |n| n.to_string()),
            );
            for row in rows.iter().filter(|r| r.verdict != Verdict::Pass) {
                println!(
                    "  FAILED {} seed {}: {:?}: {}\n    replay: cargo sim replay {}",
                    row.scenario,
                    row.seed,
                    row.verdict,
                    row.detail,
                    report::report_dir(&options.reports, &row.scenario, row.seed).display()
                );
            }
            if scenario.expect.outcome == ExpectedOutcome::Anomalies {
                for anomaly in &scenario.expect.anomalies {
                    if !found.contains_key(anomaly.as_str()) {
                        println!(
                            "  EXPECTATION NOT MET {}: `{anomaly}` was never found in {} seeds ({})",
                            scenario.name,
                            rows.len(),
                            path.display()
                        );
                        if exit == 0 {
                            exit = EXIT_EXPECTATION;
                        }
                    }
                }
                // Keep one report per expected anomaly as evidence the checker saw it.
                if let Some(row) = rows.iter().find(|r| !r.anomalies.is_empty()) {
                    println!("  evidence: cargo sim run {} --seed {}", path.display(), row.seed);
                }
            }
        }
        // A failed run's code wins over an unmet expectation; safety wins over everything.
        let failed = Verdict::sweep_exit_code(results.iter().map(|r| r.verdict));
        if failed != 0 {
            exit = failed;
        }
        let seeds_per_hour = results.len() as f64 / wall_s * 3600.0;
        println!(
            "\n{} runs in {wall_s:.1} s ({seeds_per_hour:.0} seeds/hour with {} jobs)",
            results.len(),
            options.jobs
        );
        let dir = &options.reports;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("sweep.json"), serde_json::to_string_pretty(results)?)?;
            std::fs::write(dir.join("junit.xml"), report::junit(results))
        };
        match write() {
            Ok(()) => println!("results: {} and {}", dir.join("sweep.json").display(), dir.join("junit.xml").display()),
            Err(e) => eprintln!("sim: writing results to {}: {e}", dir.display()),
        }
        exit
    }

    /// The planted-bug catalog and the scenario that should catch each bug (a bug may have
    /// two: one where several checkers catch it, one where a single checker must).
    const PLANTED: [(broker::planted::Bug, &str); 31] = [
        (broker::planted::Bug::AckBeforeFsync, "scenarios/single-node-crash-fsync.toml"),
        (broker::planted::Bug::NoDedup, "scenarios/planted/lost-acks.toml"),
        (broker::planted::Bug::ServeUnchecked, "scenarios/disk-corruption.toml"),
        (broker::planted::Bug::TruncateSyncedTail, "scenarios/single-node-crash-fsync.toml"),
        (broker::planted::Bug::HwBeforeIsr, "scenarios/isr-shrink-expand.toml"),
        (broker::planted::Bug::HwBeforeIsr, "scenarios/planted/acks1-follower-isolated.toml"),
        (broker::planted::Bug::SkipTruncation, "scenarios/leader-isolated-acks-all.toml"),
        (broker::planted::Bug::IgnoreMinIsr, "scenarios/isr-below-min.toml"),
        (broker::planted::Bug::LoseEpochHistory, "scenarios/rolling-restart.toml"),
        (broker::planted::Bug::DedupNewestOnly, "scenarios/planted/lost-acks.toml"),
        (broker::planted::Bug::ProducerStateNotRecovered, "scenarios/planted/producer-crash-in-flight.toml"),
        (broker::planted::Bug::ProducerReplayStopsShort, "scenarios/planted/producer-crash-in-flight.toml"),
        (broker::planted::Bug::TruncateToEpochStart, "scenarios/planted/lagging-follower-leader-crash.toml"),
        (broker::planted::Bug::ElectOutOfSync, "scenarios/planted/lagging-follower-leader-crash.toml"),
        (broker::planted::Bug::MetadataAckBeforeFsync, "scenarios/planted/controller-power-loss.toml"),
        (broker::planted::Bug::AppendAfterFailedFsync, "scenarios/planted/controller-disk-errors.toml"),
        (broker::planted::Bug::ProducerSnapshotTailSkipped, "scenarios/planted/producer-crash-small-segments.toml"),
        (broker::planted::Bug::HwBelowMinIsr, "scenarios/lone-leader-disk-loss.toml"),
        (broker::planted::Bug::FetcherStopsOnError, "scenarios/isr-shrink-expand.toml"),
        (broker::planted::Bug::NeverFenceSilentBroker, "scenarios/leader-isolated-acks-all.toml"),
        (broker::planted::Bug::HwHeldByOutOfSync, "scenarios/follower-outage.toml"),
        (broker::planted::Bug::RetentionWrongUnit, "scenarios/planted/consumer-caught-up-restart.toml"),
        (broker::planted::Bug::RecoveryDropsSealedSegments, "scenarios/planted/consumer-caught-up-restart.toml"),
        (broker::planted::Bug::CommitOldGeneration, "scenarios/group-coordinator-crash.toml"),
        (broker::planted::Bug::LeaderGetsEveryAssignment, "scenarios/group-coordinator-crash.toml"),
        (broker::planted::Bug::OffsetsNotReplayed, "scenarios/group-coordinator-crash.toml"),
        (broker::planted::Bug::LoadNeverCompletes, "scenarios/group-coordinator-crash.toml"),
        (broker::planted::Bug::CleanerDropsNewest, "scenarios/compaction-under-crashes.toml"),
        (broker::planted::Bug::OffsetFetchPastCommit, "scenarios/group-coordinator-crash.toml"),
        (broker::planted::Bug::CommitOldGeneration, "scenarios/consumer-protocol-member-crash.toml"),
        (broker::planted::Bug::AssignUnreleasedPartitions, "scenarios/consumer-protocol-member-crash.toml"),
    ];

    /// Checker power: with each planted bug switched on (one at a time, for this process), its
    /// scenario must fail (safety or liveness, on an invariant it does not excuse) within the seeds. Prints the detection rate.
    /// `--bug NAME` runs only that bug; scenario paths given replace the catalogue's scenario
    /// (to find which scenarios catch a new bug).
    fn planted(args: &[String]) -> Result<i32, String> {
        let mut args = args.to_vec();
        // `--until-caught`: a bug's seeds stop at its first catch (CI: caught within the seeds,
        // without measuring the rate).
        let until_caught = args.iter().any(|a| a == "--until-caught");
        args.retain(|a| a != "--until-caught");
        let only = match args.iter().position(|a| a == "--bug") {
            Some(i) => {
                let name = args.get(i + 1).cloned().ok_or("--bug needs a planted bug's name")?;
                args.drain(i..i + 2);
                Some(broker::planted::Bug::from_name(&name).ok_or_else(|| format!("no planted bug `{name}`"))?)
            }
            None => None,
        };
        let options = parse_options(&args)?;
        let explicit = !options.scenarios.is_empty();
        println!("| planted bug | scenario | seeds | caught | first caught | invariants that failed the run | alone (seeds) |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        let mut missed = Vec::new();
        let runs: Vec<(broker::planted::Bug, PathBuf)> = match only {
            // One bug on the scenarios given: whether or not the catalogue lists it.
            Some(bug) if explicit => options.scenarios.iter().map(|p| (bug, p.clone())).collect(),
            _ => {
                let mut runs: Vec<(broker::planted::Bug, PathBuf)> = PLANTED
                    .iter()
                    .filter(|(bug, _)| only.is_none_or(|o| o == *bug))
                    .flat_map(|(bug, path)| {
                        let paths = if explicit { options.scenarios.clone() } else { vec![PathBuf::from(path)] };
                        paths.into_iter().map(move |p| (*bug, p))
                    })
                    .collect();
                runs.dedup();
                runs
            }
        };
        if runs.is_empty() {
            return Err("no planted bug to run: the catalogue names no scenario for it (give one)".to_string());
        }
        for (bug, path) in runs {
            let scenario = load(&path)?;
            broker::planted::set(&[bug]);
            let mut caught = 0;
            let mut first = None;
            let mut broken: BTreeSet<String> = BTreeSet::new();
            // Invariants that were the only one broken in a seed: the checker alone caught it.
            let mut alone: BTreeMap<String, usize> = BTreeMap::new();
            let mut seeds_run = 0;
            for &seed in &options.seeds {
                if until_caught && caught > 0 {
                    break;
                }
                seeds_run += 1;
                let outcome = run_isolated(&scenario, seed);
                // Caught: the run failed, on safety or on availability.
                let violations = match &outcome {
                    Ok(outcome) if matches!(verdict(&scenario, outcome), Verdict::Safety | Verdict::Liveness) => {
                        // The invariants that failed the run (those the scenario does not excuse).
                        let mut found: Vec<String> = anomalies(outcome)
                            .into_iter()
                            .filter(|a| !sim::verdict::excused(&scenario.expect, outcome.budget.within, a))
                            .collect();
                        if outcome.liveness_failure.is_some() {
                            found.push("(heal did not converge)".to_string());
                        }
                        found
                    }
                    _ => continue,
                };
                caught += 1;
                first.get_or_insert(seed);
                let distinct: BTreeSet<String> = violations.into_iter().collect();
                if distinct.len() == 1 {
                    *alone.entry(distinct.iter().next().expect("one").clone()).or_default() += 1;
                }
                broken.extend(distinct);
            }
            broker::planted::set(&[]);
            let first = first.map_or("-".to_string(), |s| s.to_string());
            let broken: Vec<String> = broken.into_iter().collect();
            let alone: Vec<String> = alone.into_iter().map(|(invariant, n)| format!("{invariant} ({n})")).collect();
            println!(
                "| {} | {} | {} | {caught} | {first} | {} | {} |",
                bug.name(),
                scenario.name,
                seeds_run,
                broken.join(", "),
                if alone.is_empty() { "-".to_string() } else { alone.join(", ") }
            );
            if caught == 0 {
                missed.push(bug.name());
            }
        }
        if missed.is_empty() {
            println!("every planted bug was caught");
            Ok(0)
        } else {
            println!("NOT CAUGHT: {}", missed.join(", "));
            Ok(1)
        }
    }

    fn bench(args: &[String]) -> Result<i32, String> {
        let mut options = parse_options(args)?;
        if options.scenarios.is_empty() {
            options.scenarios = vec![PathBuf::from("scenarios/bench/standard.toml")];
        }
        let [path] = options.scenarios.as_slice() else { return Err("bench takes one scenario".to_string()) };
        let scenario = load(path)?;
        let mut walls = Vec::new();
        let mut simulated_s = 0.0;
        let mut operations = 0;
        for &seed in &options.seeds {
            let started = Instant::now();
            let outcome = run_isolated(&scenario, seed)?;
            walls.push(started.elapsed().as_secs_f64());
            simulated_s += outcome.simulated_ns as f64 / 1e9;
            operations += outcome.history.operations.len();
            if verdict(&scenario, &outcome) != Verdict::Pass {
                return Err(format!(
                    "seed {seed} did not pass; the benchmark measures passing runs (see `sim run {} --seed {seed}`)",
                    path.display()
                ));
            }
        }
        let total: f64 = walls.iter().sum();
        walls.sort_by(f64::total_cmp);
        let n = walls.len().max(1) as f64;
        println!("| measurement ({}, {} seeds, one thread) | value |", scenario.name, walls.len());
        println!("| --- | --- |");
        println!(
            "| wall time per seed: mean / p50 / max | {:.0} / {:.0} / {:.0} ms |",
            total / n * 1e3,
            walls[walls.len() / 2] * 1e3,
            walls.last().copied().unwrap_or(0.0) * 1e3
        );
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        println!("| simulated seconds per wall second, one core | {:.0} |", simulated_s / total);
        println!(
            "| simulated seconds per wall second, this machine ({cores} cores, one seed per core) | {:.0} |",
            simulated_s / total * cores as f64
        );
        println!("| client operations per seed | {:.0} |", operations as f64 / n);
        println!("| seeds per hour, one core | {:.0} |", 3600.0 / (total / n));
        println!(
            "| seeds per hour, this machine ({} cores) | {:.0} |",
            std::thread::available_parallelism().map_or(1, |c| c.get()),
            3600.0 / (total / n) * std::thread::available_parallelism().map_or(1, |c| c.get()) as f64
        );
        Ok(0)
    }

    fn replay(args: &[String]) -> Result<i32, String> {
        let [dir] = args else { return Err("replay takes a report directory".to_string()) };
        let dir = Path::new(dir);
        let text = std::fs::read_to_string(dir.join("report.json"))
            .map_err(|e| format!("{}: {e}", dir.join("report.json").display()))?;
        let info: report::ReplayInfo =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", dir.join("report.json").display()))?;
        let scenario = load(Path::new(&info.scenario_path))?;
        let (result, _) = evaluate(Path::new(&info.scenario_path), &scenario, info.seed, &PathBuf::from("reports"));
        print_result(&result);
        if result.trace_hash != info.trace_hash {
            println!(
                "NONDETERMINISM: the report has trace {:016x}, the replay {:016x} (report from commit {})",
                info.trace_hash, result.trace_hash, info.commit
            );
            return Ok(EXIT_NONDETERMINISM);
        }
        println!("replayed bit for bit: trace hash {:016x} matches", result.trace_hash);
        Ok(result.verdict.exit_code())
    }
}
