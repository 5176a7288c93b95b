//! The records of a KIP-848 consumer group in `__consumer_offsets`, in Kafka 4.0's format
//! (`group-coordinator/src/main/resources/common/message/ConsumerGroup*.json`):
//!
//! | key type | record | value |
//! | --- | --- | --- |
//! | 3 | group metadata `(group)` | the group epoch |
//! | 4 | partition metadata `(group)` | the subscribed topics that exist: id, name, partitions |
//! | 5 | member metadata `(group, member)` | subscription, client, rebalance timeout, assignor |
//! | 6 | target assignment metadata `(group)` | the epoch the target assignment was computed at |
//! | 7 | target assignment member `(group, member)` | the partitions the target gives the member |
//! | 8 | current member assignment `(group, member)` | member epoch, state, owned and revoking partitions |
//!
//! Keys are non-flexible (`int16` type, then `int16`-length strings); values are version 0,
//! flexible (compact strings and arrays, a tagged-field section after every struct). A null
//! value is a tombstone. Nothing read is trusted: every count is checked against the bytes left.

use super::records::{put_string, Reader};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet};

/// Partitions by topic id.
pub type Assignment = BTreeMap<u128, BTreeSet<i32>>;

/// A subscribed topic as the group last saw it (record 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    pub topic_id: u128,
    pub name: String,
    pub partitions: i32,
}

/// What a member asked for (record 5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberMetadata {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Sorted, without duplicates.
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
}

/// Where a member's reconciliation stands (Kafka's `MemberState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemberState {
    /// It owns its target at its epoch (or all of it that is free).
    #[default]
    Stable,
    /// It must give partitions up (acknowledge their revocation) before it moves on.
    UnrevokedPartitions,
    /// Partitions of its target are still owned by others; it gets them once they are free.
    UnreleasedPartitions,
    /// Read from a record with a state this version does not know.
    Unknown,
}

impl MemberState {
    pub fn code(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
            MemberState::Unknown => 127,
        }
    }

    fn from_code(code: i8) -> Self {
        match code {
            0 => MemberState::Stable,
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Unknown,
        }
    }
}

/// A member's epoch and partitions (record 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentAssignment {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    /// What it owns. Invariant (across members): a partition is in at most one member's
    /// `assigned` or `pending_revocation`.
    pub assigned: Assignment,
    /// What it still owns but must give up.
    pub pending_revocation: Assignment,
}

impl Default for CurrentAssignment {
    fn default() -> Self {
        CurrentAssignment {
            member_epoch: 0,
            previous_member_epoch: -1,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
        }
    }
}

/// One consumer-group record; `None` values are tombstones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerRecord {
    /// 3: the group epoch.
    Metadata(Option<i32>),
    /// 4: the subscribed topics that exist.
    SubscriptionMetadata(Option<Vec<TopicMetadata>>),
    /// 5.
    Member { member_id: String, value: Option<MemberMetadata> },
    /// 6: the target assignment's epoch.
    TargetEpoch(Option<i32>),
    /// 7.
    TargetMember { member_id: String, value: Option<Assignment> },
    /// 8.
    CurrentMember { member_id: String, value: Option<CurrentAssignment> },
}

/// Key types of consumer-group records.
pub const CONSUMER_KEY_TYPES: std::ops::RangeInclusive<i16> = 3..=8;

impl ConsumerRecord {
    pub fn key_type(&self) -> i16 {
        match self {
            ConsumerRecord::Metadata(_) => 3,
            ConsumerRecord::SubscriptionMetadata(_) => 4,
            ConsumerRecord::Member { .. } => 5,
            ConsumerRecord::TargetEpoch(_) => 6,
            ConsumerRecord::TargetMember { .. } => 7,
            ConsumerRecord::CurrentMember { .. } => 8,
        }
    }

    fn member_id(&self) -> Option<&str> {
        match self {
            ConsumerRecord::Member { member_id, .. }
            | ConsumerRecord::TargetMember { member_id, .. }
            | ConsumerRecord::CurrentMember { member_id, .. } => Some(member_id),
            _ => None,
        }
    }

    pub fn encode(&self, group_id: &str) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        key.put_i16(self.key_type());
        put_string(&mut key, group_id);
        if let Some(member_id) = self.member_id() {
            put_string(&mut key, member_id);
        }
        let value = match self {
            ConsumerRecord::Metadata(epoch) | ConsumerRecord::TargetEpoch(epoch) => epoch.map(|e| {
                let mut b = value_header();
                b.put_i32(e);
                end_struct(&mut b);
                b
            }),
            ConsumerRecord::SubscriptionMetadata(topics) => topics.as_ref().map(|topics| {
                let mut b = value_header();
                put_array_len(&mut b, topics.len());
                for t in topics {
                    b.put_u128(t.topic_id);
                    put_compact_string(&mut b, Some(&t.name));
                    b.put_i32(t.partitions);
                    put_array_len(&mut b, 0); // PartitionMetadata: racks, unused since Kafka 4.0
                    end_struct(&mut b);
                }
                end_struct(&mut b);
                b
            }),
            ConsumerRecord::Member { value, .. } => value.as_ref().map(encode_member),
            ConsumerRecord::TargetMember { value, .. } => value.as_ref().map(|a| {
                let mut b = value_header();
                put_assignment(&mut b, a);
                end_struct(&mut b);
                b
            }),
            ConsumerRecord::CurrentMember { value, .. } => value.as_ref().map(|c| {
                let mut b = value_header();
                b.put_i32(c.member_epoch);
                b.put_i32(c.previous_member_epoch);
                b.put_i8(c.state.code());
                put_assignment(&mut b, &c.assigned);
                put_assignment(&mut b, &c.pending_revocation);
                end_struct(&mut b);
                b
            }),
        };
        (key.freeze(), value.map(BytesMut::freeze))
    }

    /// Parses a record whose key type (already read from `key`) is in [`CONSUMER_KEY_TYPES`];
    /// returns the group id and the record.
    pub(super) fn decode(key_type: i16, key: &mut Reader, value: Option<&[u8]>) -> Result<(String, Self), String> {
        let group_id = key.string()?;
        let member_id = if matches!(key_type, 5 | 7 | 8) { Some(key.string()?) } else { None };
        let mut v = value.map(|bytes| Flex(Reader::new(bytes)));
        if let Some(v) = v.as_mut() {
            let version = v.0.i16()?;
            if version != 0 {
                return Err(format!("unknown consumer-group value version {version} (key type {key_type})"));
            }
        }
        let record = match (key_type, v.as_mut()) {
            (3, v) => ConsumerRecord::Metadata(v.map(|v| v.0.i32()).transpose()?),
            (6, v) => ConsumerRecord::TargetEpoch(v.map(|v| v.0.i32()).transpose()?),
            (4, v) => ConsumerRecord::SubscriptionMetadata(v.map(decode_topics).transpose()?),
            (5, v) => ConsumerRecord::Member {
                member_id: member_id.expect("read above"),
                value: v.map(decode_member).transpose()?,
            },
            (7, v) => ConsumerRecord::TargetMember {
                member_id: member_id.expect("read above"),
                value: v.map(Flex::assignment).transpose()?,
            },
            (8, v) => ConsumerRecord::CurrentMember {
                member_id: member_id.expect("read above"),
                value: v.map(decode_current).transpose()?,
            },
            (other, _) => return Err(format!("key type {other} is not a consumer-group record")),
        };
        if let Some(mut v) = v {
            v.tagged_fields()?;
            v.0.finish("consumer-group value")?;
        }
        Ok((group_id, record))
    }
}

fn value_header() -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b
}

/// An empty tagged-field section: the end of a flexible struct.
fn end_struct(b: &mut BytesMut) {
    put_uvarint(b, 0);
}

fn put_uvarint(b: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn put_array_len(b: &mut BytesMut, len: usize) {
    put_uvarint(b, u32::try_from(len + 1).expect("bounded by the group's limits"));
}

fn put_compact_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_uvarint(b, 0),
        Some(s) => {
            put_array_len(b, s.len());
            b.put_slice(s.as_bytes());
        }
    }
}

fn put_assignment(b: &mut BytesMut, assignment: &Assignment) {
    put_array_len(b, assignment.len());
    for (topic_id, partitions) in assignment {
        b.put_u128(*topic_id);
        put_array_len(b, partitions.len());
        for p in partitions {
            b.put_i32(*p);
        }
        end_struct(b);
    }
}

fn encode_member(m: &MemberMetadata) -> BytesMut {
    let mut b = value_header();
    put_compact_string(&mut b, m.instance_id.as_deref());
    put_compact_string(&mut b, m.rack_id.as_deref());
    put_compact_string(&mut b, Some(&m.client_id));
    put_compact_string(&mut b, Some(&m.client_host));
    put_array_len(&mut b, m.subscribed_topic_names.len());
    for name in &m.subscribed_topic_names {
        put_compact_string(&mut b, Some(name));
    }
    put_compact_string(&mut b, m.subscribed_topic_regex.as_deref());
    b.put_i32(m.rebalance_timeout_ms);
    put_compact_string(&mut b, m.server_assignor.as_deref());
    end_struct(&mut b);
    b
}

/// The flexible-version reads, over the bounded reader.
struct Flex<'a>(Reader<'a>);

impl Flex<'_> {
    fn uvarint(&mut self) -> Result<u32, String> {
        let mut value = 0u32;
        for i in 0..5 {
            let byte = self.0.take(1)?[0];
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 5 bytes".to_string())
    }

    /// A compact array's length (`None`: null), refused if the bytes left cannot hold that many
    /// elements of at least `element_bytes_min` bytes.
    fn array_len(&mut self, element_bytes_min: usize) -> Result<Option<usize>, String> {
        let Some(len) = (self.uvarint()? as usize).checked_sub(1) else { return Ok(None) };
        let left = self.0.remaining();
        if len > left / element_bytes_min.max(1) {
            return Err(format!("count {len} cannot fit in {left} bytes"));
        }
        Ok(Some(len))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, String> {
        let Some(len) = self.array_len(1)? else { return Ok(None) };
        let bytes = self.0.take(len)?;
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| "a string is not UTF-8".to_string())
    }

    fn string(&mut self) -> Result<String, String> {
        self.nullable_string()?.ok_or_else(|| "a required string is null".to_string())
    }

    fn uuid(&mut self) -> Result<u128, String> {
        Ok(u128::from_be_bytes(self.0.take(16)?.try_into().expect("16 bytes")))
    }

    /// Skips a tagged-field section (fields this version does not read).
    fn tagged_fields(&mut self) -> Result<(), String> {
        let count = self.uvarint()? as usize; // a plain count, not length + 1
        if count > self.0.remaining() / 2 {
            return Err(format!("{count} tagged fields cannot fit in {} bytes", self.0.remaining()));
        }
        for _ in 0..count {
            self.uvarint()?; // tag
            let size = self.uvarint()? as usize;
            self.0.take(size)?;
        }
        Ok(())
    }

    fn assignment(&mut self) -> Result<Assignment, String> {
        let topics = self.array_len(16 + 1 + 1)?.ok_or("a null assignment")?;
        let mut assignment = Assignment::new();
        for _ in 0..topics {
            let topic_id = self.uuid()?;
            let count = self.array_len(4)?.ok_or("a null partition list")?;
            let mut partitions = BTreeSet::new();
            for _ in 0..count {
                partitions.insert(self.0.i32()?);
            }
            self.tagged_fields()?;
            assignment.insert(topic_id, partitions);
        }
        Ok(assignment)
    }
}

fn decode_topics(v: &mut Flex) -> Result<Vec<TopicMetadata>, String> {
    let count = v.array_len(16 + 1 + 4 + 1 + 1)?.ok_or("null topics")?;
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let topic_id = v.uuid()?;
        let name = v.string()?;
        let partitions = v.0.i32()?;
        let racks = v.array_len(4 + 1 + 1)?.unwrap_or(0);
        for _ in 0..racks {
            v.0.i32()?;
            let names = v.array_len(1)?.unwrap_or(0);
            for _ in 0..names {
                v.string()?;
            }
            v.tagged_fields()?;
        }
        v.tagged_fields()?;
        topics.push(TopicMetadata { topic_id, name, partitions });
    }
    Ok(topics)
}

fn decode_member(v: &mut Flex) -> Result<MemberMetadata, String> {
    let instance_id = v.nullable_string()?;
    let rack_id = v.nullable_string()?;
    let client_id = v.string()?;
    let client_host = v.string()?;
    let count = v.array_len(1)?.ok_or("null subscribed topic names")?;
    let mut subscribed_topic_names = Vec::with_capacity(count);
    for _ in 0..count {
        subscribed_topic_names.push(v.string()?);
    }
    Ok(MemberMetadata {
        instance_id,
        rack_id,
        client_id,
        client_host,
        subscribed_topic_names,
        subscribed_topic_regex: v.nullable_string()?,
        rebalance_timeout_ms: v.0.i32()?,
        server_assignor: v.nullable_string()?,
    })
}

fn decode_current(v: &mut Flex) -> Result<CurrentAssignment, String> {
    Ok(CurrentAssignment {
        member_epoch: v.0.i32()?,
        previous_member_epoch: v.0.i32()?,
        state: MemberState::from_code(v.0.take(1)?[0] as i8),
        assigned: v.assignment()?,
        pending_revocation: v.assignment()?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::records::GroupRecord;
    use super::*;

    fn assignment(parts: &[(u128, &[i32])]) -> Assignment {
        parts.iter().map(|(t, ps)| (*t, ps.iter().copied().collect())).collect()
    }

    fn round_trip(record: ConsumerRecord) {
        let grouped = GroupRecord::Consumer { group_id: "g".to_string(), record };
        let (key, value) = grouped.encode();
        assert_eq!(GroupRecord::decode(&key, value.as_deref()).unwrap(), grouped);
    }

    #[test]
    fn every_consumer_group_record_round_trips_including_tombstones() {
        let member = MemberMetadata {
            instance_id: Some("i".to_string()),
            rack_id: None,
            client_id: "rdkafka".to_string(),
            client_host: "/127.0.0.1".to_string(),
            subscribed_topic_names: vec!["a".to_string(), "b".to_string()],
            subscribed_topic_regex: Some(String::new()),
            rebalance_timeout_ms: 300_000,
            server_assignor: None,
        };
        let current = CurrentAssignment {
            member_epoch: 5,
            previous_member_epoch: 4,
            state: MemberState::UnrevokedPartitions,
            assigned: assignment(&[(7, &[0, 2])]),
            pending_revocation: assignment(&[(7, &[1]), (9, &[])]),
        };
        let topics = vec![TopicMetadata { topic_id: 7, name: "a".to_string(), partitions: 3 }];
        for record in [
            ConsumerRecord::Metadata(Some(3)),
            ConsumerRecord::Metadata(None),
            ConsumerRecord::SubscriptionMetadata(Some(topics)),
            ConsumerRecord::SubscriptionMetadata(None),
            ConsumerRecord::Member { member_id: "m".to_string(), value: Some(member) },
            ConsumerRecord::Member { member_id: "m".to_string(), value: None },
            ConsumerRecord::TargetEpoch(Some(3)),
            ConsumerRecord::TargetMember { member_id: "m".to_string(), value: Some(assignment(&[(7, &[0])])) },
            ConsumerRecord::TargetMember { member_id: "m".to_string(), value: None },
            ConsumerRecord::CurrentMember { member_id: "m".to_string(), value: Some(current) },
            ConsumerRecord::CurrentMember { member_id: "m".to_string(), value: None },
        ] {
            round_trip(record);
        }
    }

    /// Bytes derived by hand from Kafka's JSON schemas: key type 8, then the value's version,
    /// epochs, state, and compact arrays with a tagged-field byte after each struct.
    #[test]
    fn a_current_assignment_is_laid_out_as_kafka_lays_it_out() {
        let record = ConsumerRecord::CurrentMember {
            member_id: "m".to_string(),
            value: Some(CurrentAssignment {
                member_epoch: 2,
                previous_member_epoch: 1,
                state: MemberState::Stable,
                assigned: assignment(&[(1, &[4])]),
                pending_revocation: Assignment::new(),
            }),
        };
        let (key, value) = record.encode("g");
        assert_eq!(&key[..], &[0, 8, 0, 1, b'g', 0, 1, b'm']);
        let mut expected = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 2];
        expected.extend_from_slice(&1u128.to_be_bytes());
        expected.extend_from_slice(&[2, 0, 0, 0, 4, 0, 1, 0]);
        assert_eq!(&value.unwrap()[..], &expected[..]);
    }

    #[test]
    fn lying_counts_and_unknown_tagged_fields_are_handled_before_allocating() {
        let (key, _) = ConsumerRecord::TargetMember { member_id: "m".to_string(), value: None }.encode("g");
        // A topic count of 2^28 in five bytes.
        let lying = [0u8, 0, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert!(GroupRecord::decode(&key, Some(&lying)).unwrap_err().contains("cannot fit"));
        // A tagged field this version does not know is skipped.
        let (key, value) = ConsumerRecord::Metadata(Some(9)).encode("g");
        let mut value = value.unwrap().to_vec();
        value.pop();
        value.extend_from_slice(&[1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        let decoded = GroupRecord::decode(&key, Some(&value)).unwrap();
        assert_eq!(
            decoded,
            GroupRecord::Consumer { group_id: "g".to_string(), record: ConsumerRecord::Metadata(Some(9)) }
        );
    }
}
