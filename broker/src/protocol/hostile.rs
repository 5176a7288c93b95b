//! Hostile request frames: the fuzzer's corpus and mutations, shared by the unit tests, the
//! fuzz binary (`cargo fuzz-broker`), the live-broker catalogue test and the simulator's hostile
//! client.
//!
//! [`sample_frames`] builds one well-formed request for every API and version the broker
//! advertises, with every array non-empty so that each count position exists in the bytes.
//! [`extreme_count_variants`] then writes a huge count or length at *every* byte position of a
//! body (big-endian i16/i32 and unsigned varint forms), which hits each array, string and bytes
//! length without needing the schema. [`Mutator`] applies seeded random mutations (bit flips,
//! truncation, extreme integers, overlong varints, splices).
//!
//! A frame here is what follows the 4-byte length prefix: request header, then body.

use super::client::{encode_batch, BatchRecord};
use super::SUPPORTED_APIS;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;

/// One sample request: which API and version, and the frame (header + body).
#[derive(Clone, Debug)]
pub struct SampleFrame {
    pub api_key: ApiKey,
    pub version: i16,
    pub frame: Bytes,
    /// Where the body starts (after the request header).
    pub body_start: usize,
}

/// One well-formed request per advertised (API, version), naming only `topic` (so a hostile
/// client in the simulator never touches the workload's topics).
pub fn sample_frames(topic: &str) -> Vec<SampleFrame> {
    let mut out = Vec::new();
    for &(api_key, min, max) in SUPPORTED_APIS {
        for version in min..=max {
            let body = sample_body(api_key, version, topic);
            let (frame, body_start) = encode_request(api_key, version, 7, &body);
            out.push(SampleFrame { api_key, version, frame, body_start });
        }
    }
    out
}

/// Encodes a request header and body; returns the frame and where the body starts.
pub fn encode_request(api_key: ApiKey, version: i16, correlation_id: i32, body: &RequestKind) -> (Bytes, usize) {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("hostile")))
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("request header encodes");
    let body_start = buf.len();
    body.encode(&mut buf, version).expect("sample request encodes at its version");
    (buf.freeze(), body_start)
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The hostile client's group is named after its topic, so it never meets the workload's.
fn group(topic: &str) -> GroupId {
    GroupId(text(topic))
}

/// A request body with every collection non-empty, using only fields valid at `version`.
fn sample_body(api_key: ApiKey, version: i16, topic: &str) -> RequestKind {
    match api_key {
        ApiKey::Produce => {
            let batch = encode_batch(
                &[BatchRecord {
                    key: Some(Bytes::from_static(b"k")),
                    value: Some(Bytes::from_static(b"v")),
                    timestamp: 1,
                }],
                None,
                Compression::None,
            );
            RequestKind::Produce(ProduceRequest::default().with_acks(1).with_timeout_ms(1_000).with_topic_data(vec![
                    TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![
                        PartitionProduceData::default().with_index(0).with_records(Some(batch)),
                    ]),
                ]))
        }
        ApiKey::Fetch => {
            let request = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![
                    FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 16),
                ])]);
            let request = if version >= 7 {
                request.with_forgotten_topics_data(vec![ForgottenTopic::default()
                    .with_topic(name(topic))
                    .with_partitions(vec![1])])
            } else {
                request
            };
            RequestKind::Fetch(request)
        }
        ApiKey::ListOffsets => RequestKind::ListOffsets(
            ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1)])]),
        ),
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(topic)))]))
                .with_allow_auto_topic_creation(version < 4),
        ),
        ApiKey::ApiVersions => {
            let request = ApiVersionsRequest::default();
            RequestKind::ApiVersions(if version >= 3 {
                request
                    .with_client_software_name(StrBytes::from_static_str("hostile"))
                    .with_client_software_version(StrBytes::from_static_str("1.0"))
            } else {
                request
            })
        }
        ApiKey::CreateTopics => RequestKind::CreateTopics(
            CreateTopicsRequest::default().with_timeout_ms(1_000).with_validate_only(true).with_topics(vec![
                CreatableTopic::default()
                    .with_name(name(topic))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(vec![BrokerId(1)])])
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("1000")))]),
            ]),
        ),
        ApiKey::DeleteTopics => {
            let request = DeleteTopicsRequest::default().with_timeout_ms(1_000);
            RequestKind::DeleteTopics(if version >= 6 {
                request.with_topics(vec![DeleteTopicState::default().with_name(Some(name(topic)))])
            } else {
                request.with_topic_names(vec![name(topic)])
            })
        }
        ApiKey::InitProducerId => {
            RequestKind::InitProducerId(InitProducerIdRequest::default().with_transaction_timeout_ms(60_000))
        }
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(
            OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(if version >= 3 { -1 } else { -2 }))
                .with_topics(vec![OffsetForLeaderTopic::default().with_topic(name(topic)).with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(0),
                ])]),
        ),
        ApiKey::FindCoordinator => {
            let request = FindCoordinatorRequest::default();
            RequestKind::FindCoordinator(if version >= 4 {
                request.with_coordinator_keys(vec![text(topic)])
            } else {
                request.with_key(text(topic))
            })
        }
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                // One group per version: v0 members (whose rebalance timeout is their 10 s
                // session) never hold up the short rebalances of the others.
                .with_group_id(group(&format!("{topic}-v{version}")))
                .with_session_timeout_ms(10_000)
                // Short, so that a rebalance that waits for earlier (silent) hostile members
                // ends before the catalogue gives up on the answer.
                .with_rebalance_timeout_ms(if version >= 1 { 100 } else { -1 })
                .with_protocol_type(text("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(text("range"))
                    .with_metadata(Bytes::from_static(b"metadata"))]),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(group(topic))
                .with_generation_id(1)
                .with_member_id(text("member"))
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(text("member"))
                    .with_assignment(Bytes::from_static(b"assignment"))]),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(group(topic))
                .with_generation_id(1)
                .with_member_id(text("member")),
        ),
        ApiKey::LeaveGroup => {
            let request = LeaveGroupRequest::default().with_group_id(group(topic));
            RequestKind::LeaveGroup(if version >= 3 {
                request.with_members(vec![MemberIdentity::default().with_member_id(text("member"))])
            } else {
                request.with_member_id(text("member"))
            })
        }
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(group(topic))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default().with_name(name(topic)).with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(0)
                        .with_committed_metadata(Some(text(""))),
                ])]),
        ),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(if version >= 8 {
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(group(topic))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(name(topic))
                    .with_partition_indexes(vec![0])]))])
        } else {
            OffsetFetchRequest::default().with_group_id(group(topic)).with_topics(Some(vec![
                OffsetFetchRequestTopic::default().with_name(name(topic)).with_partition_indexes(vec![0]),
            ]))
        }),
        ApiKey::ListGroups => {
            let request = ListGroupsRequest::default();
            RequestKind::ListGroups(if version >= 4 {
                request.with_states_filter(vec![text("Stable")])
            } else {
                request
            })
        }
        ApiKey::DescribeGroups => {
            RequestKind::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![group(topic)]))
        }
        ApiKey::DeleteGroups => {
            RequestKind::DeleteGroups(DeleteGroupsRequest::default().with_groups_names(vec![group(topic)]))
        }
        ApiKey::OffsetDelete => {
            RequestKind::OffsetDelete(OffsetDeleteRequest::default().with_group_id(group(topic)).with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(0),
                    ]),
            ]))
        }
        ApiKey::ConsumerGroupHeartbeat => RequestKind::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(group(&format!("{topic}-848")))
                .with_member_id(text("hostile-member"))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(1_000)
                .with_subscribed_topic_names(Some(vec![name(topic)]))
                .with_topic_partitions(Some(vec![consumer_group_heartbeat_request::TopicPartitions::default()
                    .with_topic_id(uuid::Uuid::from_u128(7))
                    .with_partitions(vec![])])),
        ),
        ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(
            ConsumerGroupDescribeRequest::default().with_group_ids(vec![group(&format!("{topic}-848"))]),
        ),
        other => unreachable!("{other:?} is not advertised; add a sample when it is"),
    }
}

/// Extreme values written over counts and lengths.
const EXTREME_I32: [i32; 3] = [i32::MAX, i32::MIN, 0x0100_0000];
const EXTREME_I16: [i16; 2] = [i16::MAX, i16::MIN];
/// Unsigned varints: u32::MAX, an overlong 6-byte encoding, and a 5-byte 2^31.
const EXTREME_VARINTS: [&[u8]; 3] =
    [&[0xff, 0xff, 0xff, 0xff, 0x0f], &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &[0x80, 0x80, 0x80, 0x80, 0x08]];

/// For every byte position of the body: the frame with a huge i32, a huge i16, and (replacing
/// the byte there) a huge or overlong varint. Every count or length in the body is one of these
/// positions, so each gets a huge value in some variant.
pub fn extreme_count_variants(sample: &SampleFrame) -> impl Iterator<Item = Bytes> + '_ {
    let frame = &sample.frame;
    (sample.body_start..frame.len()).flat_map(move |at| {
        let mut variants = Vec::new();
        for value in EXTREME_I32 {
            if at + 4 <= frame.len() {
                variants.push(overwrite(frame, at, &value.to_be_bytes()));
            }
        }
        for value in EXTREME_I16 {
            if at + 2 <= frame.len() {
                variants.push(overwrite(frame, at, &value.to_be_bytes()));
            }
        }
        for varint in EXTREME_VARINTS {
            let mut bytes = BytesMut::from(&frame[..at]);
            bytes.extend_from_slice(varint);
            bytes.extend_from_slice(&frame[at + 1..]);
            variants.push(bytes.freeze());
        }
        variants
    })
}

fn overwrite(frame: &[u8], at: usize, with: &[u8]) -> Bytes {
    let mut bytes = BytesMut::from(frame);
    bytes[at..at + with.len()].copy_from_slice(with);
    bytes.freeze()
}

/// Seeded random mutations of sample frames. Deterministic for a seed (SplitMix64), so a
/// failing fuzz case replays.
pub struct Mutator {
    state: u64,
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One to three mutations of `sample`; the header (API key and version) is kept most of the
    /// time so that the body decoders see the damage.
    pub fn mutate(&mut self, sample: &SampleFrame, other: &SampleFrame) -> Bytes {
        let mut bytes = BytesMut::from(&sample.frame[..]);
        let keep_header = self.below(8) != 0;
        let from = if keep_header { sample.body_start.min(bytes.len()) } else { 0 };
        for _ in 0..1 + self.below(3) {
            self.mutate_once(&mut bytes, from, other);
        }
        bytes.freeze()
    }

    fn mutate_once(&mut self, bytes: &mut BytesMut, from: usize, other: &SampleFrame) {
        let len = bytes.len();
        if len <= from {
            bytes.extend_from_slice(&other.frame[..self.below(other.frame.len() + 1)]);
            return;
        }
        let at = from + self.below(len - from);
        match self.below(8) {
            0 => {
                for _ in 0..1 + self.below(8) {
                    let at = from + self.below(len - from);
                    bytes[at] ^= 1 << self.below(8);
                }
            }
            1 => bytes.truncate(at),
            2 if at + 4 <= len => {
                let value = EXTREME_I32[self.below(EXTREME_I32.len())];
                bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            3 if at + 2 <= len => {
                let value = [EXTREME_I16[self.below(2)], -1, 0][self.below(3)];
                bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
            }
            4 => {
                let varint = EXTREME_VARINTS[self.below(EXTREME_VARINTS.len())];
                let tail = bytes.split_off(at + 1);
                bytes.truncate(at);
                bytes.extend_from_slice(varint);
                bytes.extend_from_slice(&tail);
            }
            5 => {
                // Splice: our head, another sample's tail.
                let cut = self.below(other.frame.len());
                bytes.truncate(at);
                bytes.extend_from_slice(&other.frame[cut..]);
            }
            6 => {
                let end = (at + 1 + self.below(16)).min(len);
                let tail = bytes.split_off(end);
                bytes.truncate(at);
                bytes.extend_from_slice(&tail);
            }
            _ => {
                let tail = bytes.split_off(at);
                for _ in 0..1 + self.below(8) {
                    bytes.extend_from_slice(&[self.next_u64() as u8]);
                }
                bytes.extend_from_slice(&tail);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_request, Request};

    #[test]
    fn every_sample_decodes_as_itself() {
        let samples = sample_frames("hostile-topic");
        let advertised: usize = SUPPORTED_APIS.iter().map(|&(_, min, max)| (max - min + 1) as usize).sum();
        assert_eq!(samples.len(), advertised);
        for sample in samples {
            match decode_request(sample.frame.clone()) {
                Ok(Request::Known { header, .. }) => {
                    assert_eq!(
                        (header.request_api_key, header.request_api_version),
                        (sample.api_key as i16, sample.version)
                    )
                }
                other => panic!("{:?} v{}: {other:?}", sample.api_key, sample.version),
            }
        }
    }

    #[test]
    fn the_eighteen_byte_metadata_frame_is_a_decode_error() {
        // 0000000e 0003 0001 00000007 ffff 7fffffff: Metadata v1, no client id, 2^31-1 topics.
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 7, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]);
        let error = decode_request(frame).unwrap_err();
        assert!(error.to_string().contains("Array count of 2147483647"), "{error}");
    }

    #[test]
    fn a_huge_count_at_every_position_of_every_advertised_request_never_allocates_it() {
        // Under the upstream decoder some of these ask the allocator for 2^31 elements and
        // abort the test process; patched, each decodes or is an error.
        let mut variants = 0;
        let mut refused = 0;
        for sample in sample_frames("hostile-topic") {
            for frame in extreme_count_variants(&sample) {
                variants += 1;
                if decode_request(frame).is_err() {
                    refused += 1;
                }
            }
        }
        assert!(variants > 10_000, "{variants}");
        assert!(refused > variants / 2, "{refused} of {variants}");
    }

    #[test]
    fn a_frame_of_millions_of_tiny_elements_is_refused_before_it_becomes_gigabytes() {
        // Metadata v1 with 2M null topic names: 4 MB on the wire, ~160 MB decoded.
        let count = 2_000_000i32;
        let mut frame = BytesMut::from(&[0, 3, 0, 1, 0, 0, 0, 7, 0xff, 0xff][..]);
        frame.extend_from_slice(&count.to_be_bytes());
        frame.extend_from_slice(&vec![0xff; 2 * count as usize]);
        let error = decode_request(frame.freeze()).unwrap_err();
        assert!(error.to_string().contains("exceed what one request may hold"), "{error}");
        // Below the budget the same shape decodes.
        let count = 1_000i32;
        let mut frame = BytesMut::from(&[0, 3, 0, 1, 0, 0, 0, 7, 0xff, 0xff][..]);
        frame.extend_from_slice(&count.to_be_bytes());
        frame.extend_from_slice(&vec![0xff; 2 * count as usize]);
        assert!(decode_request(frame.freeze()).is_ok());
    }

    #[test]
    fn overlong_varints_are_refused() {
        // ApiVersions v3 is flexible: its body starts with a compact string length (a varint).
        let sample =
            sample_frames("t").into_iter().find(|s| s.api_key == ApiKey::ApiVersions && s.version == 3).unwrap();
        let with_varint = |varint: &[u8]| {
            let mut bytes = BytesMut::from(&sample.frame[..sample.body_start]);
            bytes.extend_from_slice(varint);
            bytes.freeze()
        };
        let overlong = decode_request(with_varint(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x00])).unwrap_err();
        assert!(overlong.to_string().contains("longer than 5 bytes"), "{overlong}");
        let huge = decode_request(with_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f])).unwrap_err();
        assert!(huge.to_string().contains("Not enough bytes"), "{huge}");
    }

    #[test]
    fn mutations_replay_from_their_seed() {
        let samples = sample_frames("t");
        let run = |seed| {
            let mut m = Mutator::new(seed);
            (0..100)
                .map(|i| m.mutate(&samples[i % samples.len()], &samples[(i * 7) % samples.len()]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    mod slice {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// The fast tier's slice of the fuzzer: mutations of every advertised request, and
            /// arbitrary bodies behind every advertised header, decode or are errors.
            #[test]
            fn any_mutation_of_any_advertised_request_decodes_or_is_an_error(
                seed in any::<u64>(),
                pick in any::<(usize, usize)>(),
                body in prop::collection::vec(any::<u8>(), 0..512),
            ) {
                let samples = sample_frames("t");
                let (sample, other) = (&samples[pick.0 % samples.len()], &samples[pick.1 % samples.len()]);
                let mut mutator = Mutator::new(seed);
                for _ in 0..16 {
                    let _ = decode_request(mutator.mutate(sample, other));
                }
                let mut frame = BytesMut::from(&sample.frame[..sample.body_start]);
                frame.extend_from_slice(&body);
                let _ = decode_request(frame.freeze());
            }
        }
    }
}
