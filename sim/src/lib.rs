//! Gregor's simulator: the real broker inside madsim, a workload that records what clients
//! saw, and checkers that judge it. Built with `--cfg madsim` (see `cargo sim`); the history
//! and checker modules are plain logic and also build without it.

pub mod check;
pub mod history;
pub mod scenario;
