//! The import rules of ARCHITECTURE.md, checked on the source: imports go one way (types ←
//! storage ← log ← controller/replay ← replication ← server), and nothing outside `server/`
//! (and the protocol's frame and client) touches tokio. A change that breaks either fails here.
#![allow(clippy::disallowed_methods)] // reads the source tree, not simulated

use std::path::{Path, PathBuf};

/// (module path under src/, modules it must not import).
const LAYERS: &[(&str, &[&str])] = &[
    ("types.rs", &["env", "storage", "log", "replay", "controller", "replication", "server", "protocol"]),
    ("env.rs", &["types", "storage", "log", "replay", "controller", "replication", "server", "protocol"]),
    ("storage", &["log", "replay", "controller", "replication", "server"]),
    ("log", &["replay", "controller", "replication", "server"]),
    ("replay.rs", &["storage", "log", "controller", "replication", "server"]),
    ("controller", &["replication", "server"]),
    ("group", &["storage", "log", "controller", "replication", "server"]),
    ("replication", &["server"]),
    ("planted.rs", &["server"]),
];

/// Modules that never use tokio (the deterministic core).
const WITHOUT_TOKIO: &[&str] =
    &["types.rs", "env.rs", "storage", "log", "replay.rs", "controller", "group", "replication", "planted.rs"];

fn source_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let entry = entry.expect("directory entry").path();
        files.extend(source_files(&entry).into_iter().filter(|f| f.extension().is_some_and(|e| e == "rs")));
    }
    files.sort();
    files
}

/// Lines of code (comments dropped) that mention `needle`, as `file:line`.
fn mentions(module: &str, needle: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(module);
    let mut found = Vec::new();
    for file in source_files(&root) {
        let text = std::fs::read_to_string(&file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains(needle) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn core_modules_import_only_downwards() {
    let mut broken = Vec::new();
    for (module, forbidden) in LAYERS {
        for target in *forbidden {
            broken.extend(mentions(module, &format!("crate::{target}")));
        }
    }
    assert!(broken.is_empty(), "imports against the layering:\n{}", broken.join("\n"));
}

#[test]
fn the_deterministic_core_never_uses_tokio() {
    let broken: Vec<String> = WITHOUT_TOKIO.iter().flat_map(|m| mentions(m, "tokio")).collect();
    assert!(broken.is_empty(), "tokio in the core:\n{}", broken.join("\n"));
}

#[test]
fn the_tidy_check_sees_a_planted_violation() {
    // The scanner itself: this file names `crate::server` on a code line, and must be found.
    let this = mentions("../tests/tidy.rs", "crate::server");
    assert!(!this.is_empty(), "the scanner found nothing");
}
