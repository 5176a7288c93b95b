//! The simulator's layering, checked on the source: checkers see only history and observation
//! types (never the run, the world, the nemesis or the clients), and only the report (which
//! formats a run's outcome) and the command line depend on `run`.
#![allow(clippy::disallowed_methods)] // reads the source tree, not simulated

use std::path::Path;

fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines().enumerate().map(|(n, l)| (n + 1, l.split("//").next().unwrap_or("").to_string())).collect()
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("source directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    files
}

#[test]
fn checkers_see_only_history_and_observations() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let forbidden = ["crate::run", "crate::cluster", "crate::client", "crate::nemesis", "madsim", "tokio"];
    let mut broken = Vec::new();
    for file in files(&src.join("check")) {
        for (n, code) in code_lines(&file) {
            if let Some(needle) = forbidden.iter().find(|f| code.contains(**f)) {
                broken.push(format!("{}:{n}: uses {needle}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn nothing_but_the_report_depends_on_the_run() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    let mut all = files(&src);
    all.extend(files(&src.join("check")));
    all.extend(files(&src.join("nemesis")));
    for file in all {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if matches!(name, "run.rs" | "report.rs" | "main.rs") {
            continue;
        }
        for (n, code) in code_lines(&file) {
            if code.contains("crate::run") {
                broken.push(format!("{}:{n}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
