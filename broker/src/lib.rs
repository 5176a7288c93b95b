//! Gregor's broker: a Kafka-compatible event-streaming broker.
//!
//! The same code runs for real (tokio, the host disk) and inside the madsim simulator
//! (simulated network and time, a simulated disk). See `ARCHITECTURE.md` for the code map.

pub mod controller;
pub mod env;
pub mod fail_stop;
pub mod group;
pub mod log;
pub mod planted;
pub mod protocol;
pub mod replay;
pub mod replication;
pub mod server;
pub mod storage;
pub mod types;
