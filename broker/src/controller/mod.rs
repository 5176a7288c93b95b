//! Cluster metadata as a log of records, and the image built by replaying them (the KRaft
//! model), plus the controller that decides what the records say.
//!
//! Flow: a broker asks the controller (over [`rpc`]); [`core::Controller`] validates and decides,
//! producing [`MetadataRecord`]s; the records are appended durably to the [`MetadataLog`]; only
//! then does [`MetadataImage::replay`] apply them — on the controller, and on every broker as
//! the records reach it in responses. Startup replays the whole log, so recovery and normal
//! operation take the same path.
//!
//! Today one controller holds the log on its own disk. `Controller::commit` is the one place
//! records become durable: the KRaft issue replaces it with a quorum append.

pub mod core;
pub mod image;
pub mod log;
pub mod rpc;

pub use self::core::{
    validate_topic_name, AlterPartition, ApiError, Controller, ControllerConfig, CreatedTopic, NewTopic, ReplicaLog,
};
pub use image::{BrokerImage, MetadataImage, MetadataRecord, PartitionImage, TopicImage, NO_LEADER};
pub use log::MetadataLog;
