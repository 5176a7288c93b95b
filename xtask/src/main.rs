//! The helper behind the cargo aliases in `.cargo/config.toml`:
//!
//! - `cargo sim [--release] [ARGS]`  build the simulator (`--cfg madsim`, `target/sim`) and run it
//! - `cargo bench-sim`     the simulator benchmark (release build)
//! - `cargo xtest [TIER]`  run test tiers: `fast`, `lint`, `real`, `sim`, or all (default);
//!   `deep` (release sweeps, hours) runs only when named
//! - `cargo bench-broker`  the broker benchmark (release build)
//! - `cargo fuzz-broker`   the request-path fuzzer (`broker/examples/fuzz.rs`, release build)
//!
//! Everything a fresh machine lacks (the Python venv with kafka-python, confluent-kafka and
//! aiokafka; kafkajs under `tests/js/node_modules`, with the machine's npm; kcat, Debian's
//! package unpacked into `.kcat` if none is installed; librdkafka is built from source by the
//! `rdkafka` crate) is set up here, so `.ci/run` needs nothing else.
#![allow(clippy::disallowed_methods)] // the build helper: real files and processes, never simulated

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const USAGE: &str = "usage:
  cargo sim [ARGS...]      build the simulator (--cfg madsim, target/sim) and run it
  cargo xtest [TIER...]    run test tiers; TIER is fast | lint | real | sim (default: all, in that order)
                           or deep: the release sweeps to run before resolving a capability (hours)
  cargo bench-broker       run the broker benchmark (release build)
  cargo bench-sim          run the simulator benchmark (release build)
  cargo fuzz-broker [--frames N | --seconds S] [--seed S]
                           fuzz the broker's request path (release build; exits 1 on any panic)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let result = match args.first().map(String::as_str) {
        Some("sim") => sim(&root, &args[1..]),
        Some("test") => test(&root, &args[1..]),
        Some("bench") => bench(&root, &args[1..]),
        Some("bench-sim") => bench_sim(&root, &args[1..]),
        Some("fuzz") => fuzz(&root, &args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().expect("xtask lives in the workspace root").to_path_buf()
}

/// A cargo command for simulator builds: `--cfg madsim` everywhere, its own target dir.
fn sim_cargo(root: &Path) -> Command {
    let mut cmd = Command::new(cargo());
    let rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    cmd.current_dir(root)
        .env("RUSTFLAGS", format!("{rustflags} --cfg madsim").trim())
        .env("CARGO_TARGET_DIR", root.join("target/sim"));
    cmd
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn run(what: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: {what}: {cmd:?}");
    let status = cmd.status().map_err(|e| format!("{what}: could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Builds the `sim` binary with the madsim cfg (debug, or release with a leading `--release`)
/// and returns its path.
fn build_sim(root: &Path, release: bool) -> Result<PathBuf, String> {
    let mut cmd = sim_cargo(root);
    cmd.args(["build", "--package", "sim", "--bin", "sim"]);
    if release {
        // The release profile aborts on panic (fail-stop); the simulator must unwind to report
        // a seed's panic and go on, so it has its own profile.
        cmd.args(["--profile", "release-unwind"]);
    }
    run("build the simulator", &mut cmd)?;
    Ok(root.join("target/sim").join(if release { "release-unwind" } else { "debug" }).join("sim"))
}

/// `cargo sim [--release] [ARGS]`: the simulator's command line, from the repository root.
fn sim(root: &Path, args: &[String]) -> Result<(), String> {
    let release = args.first().is_some_and(|a| a == "--release");
    let args = if release { &args[1..] } else { args };
    let binary = build_sim(root, release)?;
    eprintln!("xtask: {} {}", binary.display(), args.join(" "));
    let status = Command::new(&binary)
        .current_dir(root)
        .args(args)
        .status()
        .map_err(|e| format!("running {}: {e}", binary.display()))?;
    // Keep the simulator's exit code: it says which kind of failure happened.
    std::process::exit(status.code().unwrap_or(3));
}

fn test(root: &Path, tiers: &[String]) -> Result<(), String> {
    const ALL: [&str; 4] = ["fast", "lint", "real", "sim"];
    let tiers: Vec<&str> = if tiers.is_empty() { ALL.to_vec() } else { tiers.iter().map(String::as_str).collect() };
    for tier in &tiers {
        if !ALL.contains(tier) && *tier != "deep" {
            return Err(format!("unknown tier `{tier}`\n{USAGE}"));
        }
    }
    for tier in tiers {
        let started = Instant::now();
        eprintln!("xtask: ===== tier {tier} =====");
        match tier {
            "fast" => tier_fast(root)?,
            "lint" => tier_lint(root)?,
            "real" => tier_real(root)?,
            "sim" => tier_sim(root)?,
            "deep" => tier_deep(root)?,
            _ => unreachable!("checked above"),
        }
        eprintln!("xtask: tier {tier} passed in {:.0?}", started.elapsed());
    }
    Ok(())
}

/// Unit, property and snapshot tests of the broker: seconds, for the edit loop.
fn tier_fast(root: &Path) -> Result<(), String> {
    run("broker unit and property tests", Command::new(cargo()).current_dir(root).args(["test", "--package", "broker"]))
}

/// Formatting and clippy (whose `clippy.toml` bans what breaks determinism), in both builds:
/// the simulator's harness exists only with `--cfg madsim`, the real-client tests only without.
fn tier_lint(root: &Path) -> Result<(), String> {
    run("rustfmt", Command::new(cargo()).current_dir(root).args(["fmt", "--all", "--", "--check"]))?;
    let deny_warnings = ["--", "-D", "warnings"];
    run(
        "clippy",
        Command::new(cargo())
            .current_dir(root)
            .args(["clippy", "--package", "broker", "--package", "sim", "--package", "tests", "--all-targets"])
            .args(deny_warnings),
    )?;
    run(
        "clippy (simulator build)",
        sim_cargo(root)
            .args(["clippy", "--package", "broker", "--package", "sim", "--all-targets"])
            .args(deny_warnings),
    )
}

/// Real clients (kafka-python, librdkafka, confluent-kafka, aiokafka, kafkajs, kcat) against a
/// real broker.
fn tier_real(root: &Path) -> Result<(), String> {
    let python = ensure_python_venv(root)?;
    ensure_node_modules(root)?;
    let kcat = ensure_kcat(root)?;
    run(
        "real clients against a real broker",
        Command::new(cargo()).current_dir(root).env("GREGOR_PYTHON", &python).env("GREGOR_KCAT", &kcat).args([
            "test",
            "--package",
            "tests",
            "--",
            "--test-threads=1",
        ]),
    )
}

/// Seeds per scenario in the test tier (CI): small enough to stay within minutes. The first
/// ones run twice each to check determinism, the rest once.
const CI_SEEDS_TWICE: &str = "0..10";
const CI_SEEDS_ONCE: &str = "10..20";
/// Seeds within which every planted bug must be caught.
const PLANTED_SEEDS: &str = "0..10";

/// The broker inside the simulator: the simulator's tests (checkers, disk model, smoke), then
/// every scenario on the CI seeds (the first half run twice to check determinism), then every
/// planted bug, which must be caught.
fn tier_sim(root: &Path) -> Result<(), String> {
    run("simulator tests", sim_cargo(root).args(["test", "--package", "sim"]))?;
    let binary = build_sim(root, false)?;
    let twice = ["sweep", "--seeds", CI_SEEDS_TWICE, "--jobs", "2", "--check-determinism", "--reports", "reports/ci"];
    run("every scenario, CI seeds run twice (determinism)", Command::new(&binary).current_dir(root).args(twice))?;
    let once = ["sweep", "--seeds", CI_SEEDS_ONCE, "--jobs", "2", "--reports", "reports/ci-more"];
    run("every scenario, more CI seeds", Command::new(&binary).current_dir(root).args(once))?;
    run(
        "planted bugs must be caught",
        Command::new(&binary).current_dir(root).args(["planted", "--until-caught", "--seeds", PLANTED_SEEDS]),
    )
}

/// The deep sweeps: (scenario, seeds). Run before a capability is called done; the CI seed set
/// is a smoke test, not proof. About five hours on 2 cores.
const DEEP_SWEEPS: [(&str, &str); 4] = [
    ("scenarios/swarm-single-node.toml", "0..100000"),
    ("scenarios/swarm-replicated.toml", "0..50000"),
    ("scenarios/swarm-groups.toml", "0..5000"),
    ("scenarios/swarm-consumer-protocol.toml", "0..5000"),
];

/// Release sweeps over tens of thousands of seeds per swarm scenario; each sweep prints its
/// seeds/hour and wall time, and failing seeds leave their reports under `reports/deep`.
/// Every sweep runs even if an earlier one failed, so one command gives the whole picture.
fn tier_deep(root: &Path) -> Result<(), String> {
    let binary = build_sim(root, true)?;
    let mut failed = Vec::new();
    for (scenario, seeds) in DEEP_SWEEPS {
        let started = Instant::now();
        let sweep = ["sweep", scenario, "--seeds", seeds, "--jobs", "2", "--reports", "reports/deep"];
        if let Err(e) = run("deep sweep", Command::new(&binary).current_dir(root).args(sweep)) {
            failed.push(e);
        }
        eprintln!("xtask: deep sweep of {scenario} (seeds {seeds}) took {:.0?}", started.elapsed());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Creates `.venv` with the pinned Python packages unless it already has them.
fn ensure_python_venv(root: &Path) -> Result<PathBuf, String> {
    let venv = root.join(".venv");
    let python = venv.join("bin/python");
    let requirements = root.join("tests/python/requirements.txt");
    let stamp = venv.join(".gregor-requirements");
    let wanted = read_to_string(&requirements)?;
    if python.exists() && read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    let system_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    run("create the Python venv", Command::new(&system_python).current_dir(root).args(["-m", "venv"]).arg(&venv))?;
    run(
        "install Python test requirements",
        Command::new(&python)
            .current_dir(root)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
    )?;
    std::fs::write(&stamp, wanted).map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    Ok(python)
}

/// Installs `tests/js`'s locked npm packages (kafkajs) unless they are already there.
fn ensure_node_modules(root: &Path) -> Result<(), String> {
    let js = root.join("tests/js");
    let lock = read_to_string(&js.join("package-lock.json"))?;
    let stamp = js.join("node_modules/.gregor-lock");
    if read_to_string(&stamp).ok().as_deref() == Some(lock.as_str()) {
        return Ok(());
    }
    run(
        "install the Node.js test packages",
        Command::new("npm").current_dir(&js).args(["ci", "--no-audit", "--no-fund"]),
    )?;
    std::fs::write(&stamp, lock).map_err(|e| format!("writing {}: {e}", stamp.display()))
}

/// kcat: the one on the PATH, else Debian's package and the two libraries it needs that a
/// fresh machine lacks, fetched with `apt-get download` (no root needed) and unpacked into
/// `.kcat/`. Returns a command that runs it (a wrapper script setting LD_LIBRARY_PATH).
fn ensure_kcat(root: &Path) -> Result<PathBuf, String> {
    if let Ok(found) = Command::new("sh").args(["-c", "command -v kcat"]).output() {
        if found.status.success() {
            return Ok(PathBuf::from(String::from_utf8_lossy(&found.stdout).trim()));
        }
    }
    let dir = root.join(".kcat");
    let wrapper = dir.join("kcat");
    if wrapper.exists() {
        return Ok(wrapper);
    }
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("creating {}: {e}", debs.display()))?;
    let download = || {
        run(
            "download kcat (Debian packages: kcat, librdkafka1, libyajl2)",
            Command::new("apt-get").current_dir(&debs).args(["download", "kcat", "librdkafka1", "libyajl2"]),
        )
    };
    if download().is_err() {
        // A fresh image may have no package lists yet.
        run("refresh the package lists (apt-get update)", Command::new("apt-get").arg("update"))?;
        download()?;
    }
    let unpacked = dir.join("root");
    for deb in std::fs::read_dir(&debs).map_err(|e| format!("reading {}: {e}", debs.display()))? {
        let deb = deb.map_err(|e| e.to_string())?.path();
        run("unpack a Debian package", Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    }
    let script = format!(
        "#!/bin/sh\nLD_LIBRARY_PATH=\"{lib}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\" exec \"{bin}\" \"$@\"\n",
        lib = unpacked.join("usr/lib/x86_64-linux-gnu").display(),
        bin = unpacked.join("usr/bin/kcat").display(),
    );
    std::fs::write(&wrapper, script).map_err(|e| format!("writing {}: {e}", wrapper.display()))?;
    run("make the kcat wrapper executable", Command::new("chmod").arg("+x").arg(&wrapper))?;
    run("kcat runs", Command::new(&wrapper).arg("-V"))?;
    Ok(wrapper)
}

fn read_to_string(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// The simulator benchmark: a release build, the standard scenario, seeds per hour.
fn bench_sim(root: &Path, args: &[String]) -> Result<(), String> {
    let binary = build_sim(root, true)?;
    run("simulator benchmark", Command::new(binary).current_dir(root).arg("bench").args(args))
}

/// The request-path fuzzer: a release build that unwinds, so it can count panics.
fn fuzz(root: &Path, args: &[String]) -> Result<(), String> {
    run(
        "request-path fuzzer",
        Command::new(cargo())
            .current_dir(root)
            .args(["run", "--profile", "release-unwind", "--package", "broker", "--example", "fuzz", "--"])
            .args(args),
    )
}

fn bench(root: &Path, args: &[String]) -> Result<(), String> {
    run(
        "broker benchmark",
        Command::new(cargo())
            .current_dir(root)
            .args(["run", "--release", "--package", "tests", "--bin", "bench", "--"])
            .args(args),
    )
}
