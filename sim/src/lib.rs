//! Gregor's simulator: the real broker inside madsim, a workload that records what clients
//! saw, and checkers that judge it. Built with `--cfg madsim` (see `cargo sim`); the history,
//! checker, scenario, disk-model and fault-planning modules are plain logic and also build
//! (and unit-test) without it.

pub mod check;
pub mod config_draw;
pub mod disk;
pub mod group_assignors;
pub mod history;
pub mod nemesis;
pub mod observation;
pub mod scenario;
pub mod verdict;

#[cfg(madsim)]
pub mod client;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod group_client;
#[cfg(madsim)]
pub mod group_consumer_protocol;
#[cfg(madsim)]
pub mod hostile;
#[cfg(madsim)]
pub mod report;
#[cfg(madsim)]
pub mod run;
#[cfg(madsim)]
pub mod supervisor;
