//! Replication decisions, synchronous and without IO: one replica's state (role, ISR, high
//! watermark, the acks=all purgatory) in [`partition`], and the follower's truncation step in
//! [`follower`]. The server's fetcher, ISR loop and request handlers drive them under each
//! partition's mutex.

pub mod follower;
pub mod partition;

pub use partition::{AcksAllWait, AppendRefusal, Due, IsrProposal, Partition, ReplicaState, Transition};
