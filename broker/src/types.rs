//! Newtypes for the ids and offsets that flow through the broker.
//!
//! Kafka's wire protocol carries all of these as plain integers; inside the broker they are
//! kept apart by type so an offset can never be passed where an epoch is expected.

use std::fmt;

/// A position in a partition's log. Offsets are dense: every record has one, batches cover a
/// contiguous range `[base_offset, last_offset]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

impl Offset {
    pub const ZERO: Offset = Offset(0);
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies an idempotent (or transactional) producer. `-1` on the wire means "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerId(pub i64);

impl ProducerId {
    pub const NONE: ProducerId = ProducerId(-1);
    pub fn is_some(self) -> bool {
        self.0 >= 0
    }
}

/// Bumped on each InitProducerId for the same producer id; older epochs are fenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerEpoch(pub i16);

impl ProducerEpoch {
    pub const NONE: ProducerEpoch = ProducerEpoch(-1);
}

/// The epoch of a partition's leadership; stamped on every batch the leader appends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub i32);

/// A broker (or controller) node id, `node.id` in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub i32);

/// A topic name plus partition index: the unit of storage and of leadership.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }

    /// The directory name Kafka uses for this partition's log: `<topic>-<partition>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A Kafka error code (the protocol's `error_code` fields). The one type for every code the
/// broker and the controller answer with; the wire carries `.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    pub const UNKNOWN_SERVER_ERROR: ErrorCode = ErrorCode(-1);
    pub const NONE: ErrorCode = ErrorCode(0);
    pub const OFFSET_OUT_OF_RANGE: ErrorCode = ErrorCode(1);
    pub const CORRUPT_MESSAGE: ErrorCode = ErrorCode(2);
    pub const UNKNOWN_TOPIC_OR_PARTITION: ErrorCode = ErrorCode(3);
    pub const LEADER_NOT_AVAILABLE: ErrorCode = ErrorCode(5);
    pub const NOT_LEADER_OR_FOLLOWER: ErrorCode = ErrorCode(6);
    pub const REQUEST_TIMED_OUT: ErrorCode = ErrorCode(7);
    pub const MESSAGE_TOO_LARGE: ErrorCode = ErrorCode(10);
    pub const OFFSET_METADATA_TOO_LARGE: ErrorCode = ErrorCode(12);
    pub const NETWORK_EXCEPTION: ErrorCode = ErrorCode(13);
    pub const COORDINATOR_LOAD_IN_PROGRESS: ErrorCode = ErrorCode(14);
    pub const COORDINATOR_NOT_AVAILABLE: ErrorCode = ErrorCode(15);
    pub const NOT_COORDINATOR: ErrorCode = ErrorCode(16);
    pub const INVALID_TOPIC_EXCEPTION: ErrorCode = ErrorCode(17);
    pub const NOT_ENOUGH_REPLICAS: ErrorCode = ErrorCode(19);
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: ErrorCode = ErrorCode(20);
    pub const INVALID_REQUIRED_ACKS: ErrorCode = ErrorCode(21);
    pub const ILLEGAL_GENERATION: ErrorCode = ErrorCode(22);
    pub const INCONSISTENT_GROUP_PROTOCOL: ErrorCode = ErrorCode(23);
    pub const INVALID_GROUP_ID: ErrorCode = ErrorCode(24);
    pub const UNKNOWN_MEMBER_ID: ErrorCode = ErrorCode(25);
    pub const INVALID_SESSION_TIMEOUT: ErrorCode = ErrorCode(26);
    pub const REBALANCE_IN_PROGRESS: ErrorCode = ErrorCode(27);
    pub const INVALID_COMMIT_OFFSET_SIZE: ErrorCode = ErrorCode(28);
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(35);
    pub const TOPIC_ALREADY_EXISTS: ErrorCode = ErrorCode(36);
    pub const INVALID_PARTITIONS: ErrorCode = ErrorCode(37);
    pub const INVALID_REPLICATION_FACTOR: ErrorCode = ErrorCode(38);
    pub const INVALID_REPLICA_ASSIGNMENT: ErrorCode = ErrorCode(39);
    pub const INVALID_CONFIG: ErrorCode = ErrorCode(40);
    pub const INVALID_REQUEST: ErrorCode = ErrorCode(42);
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: ErrorCode = ErrorCode(43);
    pub const POLICY_VIOLATION: ErrorCode = ErrorCode(44);
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: ErrorCode = ErrorCode(45);
    pub const INVALID_PRODUCER_EPOCH: ErrorCode = ErrorCode(47);
    pub const KAFKA_STORAGE_ERROR: ErrorCode = ErrorCode(56);
    pub const UNKNOWN_PRODUCER_ID: ErrorCode = ErrorCode(59);
    pub const NON_EMPTY_GROUP: ErrorCode = ErrorCode(68);
    pub const GROUP_ID_NOT_FOUND: ErrorCode = ErrorCode(69);
    pub const FETCH_SESSION_ID_NOT_FOUND: ErrorCode = ErrorCode(70);
    pub const FENCED_LEADER_EPOCH: ErrorCode = ErrorCode(74);
    pub const UNKNOWN_LEADER_EPOCH: ErrorCode = ErrorCode(75);
    pub const STALE_BROKER_EPOCH: ErrorCode = ErrorCode(77);
    pub const OFFSET_NOT_AVAILABLE: ErrorCode = ErrorCode(78);
    pub const MEMBER_ID_REQUIRED: ErrorCode = ErrorCode(79);
    pub const GROUP_MAX_SIZE_REACHED: ErrorCode = ErrorCode(81);
    pub const FENCED_INSTANCE_ID: ErrorCode = ErrorCode(82);
    pub const GROUP_SUBSCRIBED_TO_TOPIC: ErrorCode = ErrorCode(86);
    pub const INVALID_RECORD: ErrorCode = ErrorCode(87);
    pub const INVALID_UPDATE_VERSION: ErrorCode = ErrorCode(95);
    pub const UNKNOWN_TOPIC_ID: ErrorCode = ErrorCode(100);
    pub const INCONSISTENT_CLUSTER_ID: ErrorCode = ErrorCode(104);
    pub const INELIGIBLE_REPLICA: ErrorCode = ErrorCode(107);
    pub const FENCED_MEMBER_EPOCH: ErrorCode = ErrorCode(110);
    pub const UNRELEASED_INSTANCE_ID: ErrorCode = ErrorCode(111);
    pub const UNSUPPORTED_ASSIGNOR: ErrorCode = ErrorCode(112);
    pub const STALE_MEMBER_EPOCH: ErrorCode = ErrorCode(113);
    pub const INVALID_REGULAR_EXPRESSION: ErrorCode = ErrorCode(128);

    pub fn is_none(self) -> bool {
        self == ErrorCode::NONE
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A refused request: a Kafka error code and a message for the client.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::error::ResponseError;

    /// Every named code is the one Kafka gives that name (UNKNOWN_LEADER_EPOCH was once 79,
    /// which clients read as MEMBER_ID_REQUIRED).
    #[test]
    fn error_codes_match_kafkas_numbering() {
        let named = [
            (ErrorCode::UNKNOWN_SERVER_ERROR, ResponseError::UnknownServerError),
            (ErrorCode::OFFSET_OUT_OF_RANGE, ResponseError::OffsetOutOfRange),
            (ErrorCode::CORRUPT_MESSAGE, ResponseError::CorruptMessage),
            (ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, ResponseError::UnknownTopicOrPartition),
            (ErrorCode::LEADER_NOT_AVAILABLE, ResponseError::LeaderNotAvailable),
            (ErrorCode::NOT_LEADER_OR_FOLLOWER, ResponseError::NotLeaderOrFollower),
            (ErrorCode::REQUEST_TIMED_OUT, ResponseError::RequestTimedOut),
            (ErrorCode::MESSAGE_TOO_LARGE, ResponseError::MessageTooLarge),
            (ErrorCode::OFFSET_METADATA_TOO_LARGE, ResponseError::OffsetMetadataTooLarge),
            (ErrorCode::NETWORK_EXCEPTION, ResponseError::NetworkException),
            (ErrorCode::COORDINATOR_LOAD_IN_PROGRESS, ResponseError::CoordinatorLoadInProgress),
            (ErrorCode::COORDINATOR_NOT_AVAILABLE, ResponseError::CoordinatorNotAvailable),
            (ErrorCode::NOT_COORDINATOR, ResponseError::NotCoordinator),
            (ErrorCode::INVALID_TOPIC_EXCEPTION, ResponseError::InvalidTopicException),
            (ErrorCode::NOT_ENOUGH_REPLICAS, ResponseError::NotEnoughReplicas),
            (ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND, ResponseError::NotEnoughReplicasAfterAppend),
            (ErrorCode::INVALID_REQUIRED_ACKS, ResponseError::InvalidRequiredAcks),
            (ErrorCode::ILLEGAL_GENERATION, ResponseError::IllegalGeneration),
            (ErrorCode::INCONSISTENT_GROUP_PROTOCOL, ResponseError::InconsistentGroupProtocol),
            (ErrorCode::INVALID_GROUP_ID, ResponseError::InvalidGroupId),
            (ErrorCode::FENCED_MEMBER_EPOCH, ResponseError::FencedMemberEpoch),
            (ErrorCode::UNRELEASED_INSTANCE_ID, ResponseError::UnreleasedInstanceId),
            (ErrorCode::UNSUPPORTED_ASSIGNOR, ResponseError::UnsupportedAssignor),
            (ErrorCode::STALE_MEMBER_EPOCH, ResponseError::StaleMemberEpoch),
            (ErrorCode::INVALID_REGULAR_EXPRESSION, ResponseError::InvalidRegularExpression),
            (ErrorCode::UNKNOWN_MEMBER_ID, ResponseError::UnknownMemberId),
            (ErrorCode::INVALID_SESSION_TIMEOUT, ResponseError::InvalidSessionTimeout),
            (ErrorCode::REBALANCE_IN_PROGRESS, ResponseError::RebalanceInProgress),
            (ErrorCode::INVALID_COMMIT_OFFSET_SIZE, ResponseError::InvalidCommitOffsetSize),
            (ErrorCode::UNSUPPORTED_VERSION, ResponseError::UnsupportedVersion),
            (ErrorCode::TOPIC_ALREADY_EXISTS, ResponseError::TopicAlreadyExists),
            (ErrorCode::INVALID_PARTITIONS, ResponseError::InvalidPartitions),
            (ErrorCode::INVALID_REPLICATION_FACTOR, ResponseError::InvalidReplicationFactor),
            (ErrorCode::INVALID_REPLICA_ASSIGNMENT, ResponseError::InvalidReplicaAssignment),
            (ErrorCode::INVALID_CONFIG, ResponseError::InvalidConfig),
            (ErrorCode::INVALID_REQUEST, ResponseError::InvalidRequest),
            (ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT, ResponseError::UnsupportedForMessageFormat),
            (ErrorCode::POLICY_VIOLATION, ResponseError::PolicyViolation),
            (ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, ResponseError::OutOfOrderSequenceNumber),
            (ErrorCode::INVALID_PRODUCER_EPOCH, ResponseError::InvalidProducerEpoch),
            (ErrorCode::KAFKA_STORAGE_ERROR, ResponseError::KafkaStorageError),
            (ErrorCode::UNKNOWN_PRODUCER_ID, ResponseError::UnknownProducerId),
            (ErrorCode::NON_EMPTY_GROUP, ResponseError::NonEmptyGroup),
            (ErrorCode::GROUP_ID_NOT_FOUND, ResponseError::GroupIdNotFound),
            (ErrorCode::FETCH_SESSION_ID_NOT_FOUND, ResponseError::FetchSessionIdNotFound),
            (ErrorCode::FENCED_LEADER_EPOCH, ResponseError::FencedLeaderEpoch),
            (ErrorCode::UNKNOWN_LEADER_EPOCH, ResponseError::UnknownLeaderEpoch),
            (ErrorCode::STALE_BROKER_EPOCH, ResponseError::StaleBrokerEpoch),
            (ErrorCode::OFFSET_NOT_AVAILABLE, ResponseError::OffsetNotAvailable),
            (ErrorCode::MEMBER_ID_REQUIRED, ResponseError::MemberIdRequired),
            (ErrorCode::GROUP_MAX_SIZE_REACHED, ResponseError::GroupMaxSizeReached),
            (ErrorCode::FENCED_INSTANCE_ID, ResponseError::FencedInstanceId),
            (ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC, ResponseError::GroupSubscribedToTopic),
            (ErrorCode::INVALID_RECORD, ResponseError::InvalidRecord),
            (ErrorCode::UNKNOWN_TOPIC_ID, ResponseError::UnknownTopicId),
            (ErrorCode::INCONSISTENT_CLUSTER_ID, ResponseError::InconsistentClusterId),
            (ErrorCode::INELIGIBLE_REPLICA, ResponseError::IneligibleReplica),
            (ErrorCode::INVALID_UPDATE_VERSION, ResponseError::InvalidUpdateVersion),
        ];
        for (ours, kafka) in named {
            assert_eq!(ours.0, kafka.code(), "{kafka:?}");
        }
    }
}
