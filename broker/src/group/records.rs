//! The records of `__consumer_offsets`, in Kafka's own format, so that a group's committed state
//! reads the same as Kafka's (tools that decode the topic understand it).
//!
//! A record's key says what it is about, its value what is true now; a null value (tombstone)
//! says it is gone. Keys (`int16` version first):
//! - versions 0 and 1: an offset commit, `(group, topic, partition)`;
//! - version 2: a group's metadata, `(group)`.
//!
//! Values: `OffsetCommitValue` (written at v3: offset, leader epoch, metadata, commit
//! timestamp; read v0–v3) and `GroupMetadataValue` (written at v3: protocol type, generation,
//! protocol, leader, state timestamp, members with their subscription and assignment; read
//! v0–v3). Nothing in a stored record is trusted: every length is checked against the bytes
//! left before anything is allocated.

use super::consumer_records::{ConsumerRecord, CONSUMER_KEY_TYPES};
use crate::types::TopicPartition;
use bytes::{BufMut, Bytes, BytesMut};

/// A committed offset, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// The leader epoch of the record at `offset - 1` as the consumer saw it; -1 = unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One member of a group's stored generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the generation's protocol (opaque to the broker).
    pub subscription: Bytes,
    /// What the leader assigned the member (opaque to the broker).
    pub assignment: Bytes,
}

/// A group's generation, as stored when it completes (or empties).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// When the group entered its current state (for offset retention of empty groups).
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// One record of `__consumer_offsets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupRecord {
    /// `value: None` removes the commit (a tombstone).
    Offset { group_id: String, tp: TopicPartition, value: Option<OffsetValue> },
    /// `value: None` removes the group (a tombstone).
    Group { group_id: String, value: Option<GroupValue> },
    /// A KIP-848 consumer group's state (key types 3 to 8).
    Consumer { group_id: String, record: ConsumerRecord },
}

impl GroupRecord {
    pub fn group_id(&self) -> &str {
        match self {
            GroupRecord::Offset { group_id, .. }
            | GroupRecord::Group { group_id, .. }
            | GroupRecord::Consumer { group_id, .. } => group_id,
        }
    }

    /// The record's key and value bytes (`None` = tombstone).
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        match self {
            GroupRecord::Offset { group_id, tp, value } => {
                key.put_i16(1);
                put_string(&mut key, group_id);
                put_string(&mut key, &tp.topic);
                key.put_i32(tp.partition);
                (key.freeze(), value.as_ref().map(encode_offset))
            }
            GroupRecord::Group { group_id, value } => {
                key.put_i16(2);
                put_string(&mut key, group_id);
                (key.freeze(), value.as_ref().map(encode_group))
            }
            GroupRecord::Consumer { group_id, record } => record.encode(group_id),
        }
    }

    /// Parses a stored record.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<GroupRecord, String> {
        let mut k = Reader::new(key);
        let record = match k.i16()? {
            0 | 1 => {
                let group_id = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                let value = value.map(decode_offset).transpose()?;
                GroupRecord::Offset { group_id, tp: TopicPartition::new(topic, partition), value }
            }
            2 => {
                let group_id = k.string()?;
                let value = value.map(decode_group).transpose()?;
                GroupRecord::Group { group_id, value }
            }
            key_type if CONSUMER_KEY_TYPES.contains(&key_type) => {
                let (group_id, record) = ConsumerRecord::decode(key_type, &mut k, value)?;
                GroupRecord::Consumer { group_id, record }
            }
            version => return Err(format!("unknown key version {version}")),
        };
        k.finish("key")?;
        Ok(record)
    }
}

fn encode_offset(v: &OffsetValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_string(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp_ms);
    b.freeze()
}

fn decode_offset(bytes: &[u8]) -> Result<OffsetValue, String> {
    let mut r = Reader::new(bytes);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!("unknown offset value version {version}"));
    }
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp_ms = r.i64()?;
    if version == 1 {
        r.i64()?; // expire timestamp: retention is the broker's config since KIP-211
    }
    r.finish("offset value")?;
    Ok(OffsetValue { offset, leader_epoch, metadata, commit_timestamp_ms })
}

fn encode_group(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    put_string(&mut b, &v.protocol_type);
    b.put_i32(v.generation_id);
    put_nullable_string(&mut b, v.protocol.as_deref());
    put_nullable_string(&mut b, v.leader.as_deref());
    b.put_i64(v.state_timestamp_ms);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_string(&mut b, &m.member_id);
        put_nullable_string(&mut b, m.group_instance_id.as_deref());
        put_string(&mut b, &m.client_id);
        put_string(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

fn decode_group(bytes: &[u8]) -> Result<GroupValue, String> {
    let mut r = Reader::new(bytes);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!("unknown group value version {version}"));
    }
    let protocol_type = r.string()?;
    let generation_id = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.count(MEMBER_BYTES_MIN)?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 { r.nullable_string()? } else { None };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        let rebalance_timeout_ms = if version >= 1 { rebalance_timeout_ms } else { session_timeout_ms };
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    r.finish("group value")?;
    Ok(GroupValue { protocol_type, generation_id, protocol, leader, state_timestamp_ms, members })
}

/// The fewest bytes one stored member takes (three empty strings, two timeouts, two empty byte
/// arrays): a count above `bytes left / this` is a lie and is refused before allocating.
const MEMBER_BYTES_MIN: usize = 2 + 2 + 2 + 4 + 4 + 4 + 4;

pub(super) fn put_string(b: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    b.put_i16(bytes.len() as i16);
    b.put_slice(bytes);
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, bytes: &[u8]) {
    b.put_i32(bytes.len() as i32);
    b.put_slice(bytes);
}

/// A reader that refuses any length or count the remaining bytes cannot hold.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!("needs {n} bytes, {} left", self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(super) fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    pub(super) fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub(super) fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    pub(super) fn nullable_string(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| "a string is not UTF-8".to_string())
    }

    pub(super) fn string(&mut self) -> Result<String, String> {
        self.nullable_string()?.ok_or_else(|| "a required string is null".to_string())
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }

    /// An array count, refused if the bytes left cannot hold that many elements of at least
    /// `element_bytes_min` bytes.
    fn count(&mut self, element_bytes_min: usize) -> Result<usize, String> {
        let count = self.i32()?;
        let count = usize::try_from(count).map_err(|_| format!("negative count {count}"))?;
        if count > self.bytes.len() / element_bytes_min {
            return Err(format!("count {count} cannot fit in {} bytes", self.bytes.len()));
        }
        Ok(count)
    }

    pub(super) fn finish(&self, what: &str) -> Result<(), String> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes left over after the {what}", self.bytes.len()))
        }
    }
}

/// The `__consumer_offsets` partition that holds `group_id`: Kafka's
/// `abs(groupId.hashCode) % offsets.topic.num.partitions`, with Java's `String.hashCode` over
/// UTF-16 code units, so a group lands on the partition it would in Kafka.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    assert!(partitions > 0, "offsets.topic.num.partitions must be positive");
    let hash = group_id.encode_utf16().fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    // Kafka's Utils.abs: the absolute value, and 0 for i32::MIN (whose absolute value does not fit).
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_value() -> GroupValue {
        GroupValue {
            protocol_type: "consumer".to_string(),
            generation_id: 7,
            protocol: Some("range".to_string()),
            leader: Some("c-1".to_string()),
            state_timestamp_ms: 1_000,
            members: vec![MemberValue {
                member_id: "c-1".to_string(),
                group_instance_id: Some("instance-a".to_string()),
                client_id: "c".to_string(),
                client_host: "/127.0.0.1".to_string(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"assign"),
            }],
        }
    }

    #[test]
    fn records_round_trip_including_tombstones() {
        let records = [
            GroupRecord::Offset {
                group_id: "g".to_string(),
                tp: TopicPartition::new("orders", 3),
                value: Some(OffsetValue {
                    offset: 42,
                    leader_epoch: 2,
                    metadata: "m".to_string(),
                    commit_timestamp_ms: 9,
                }),
            },
            GroupRecord::Offset { group_id: "g".to_string(), tp: TopicPartition::new("orders", 3), value: None },
            GroupRecord::Group { group_id: "g".to_string(), value: Some(group_value()) },
            GroupRecord::Group { group_id: "g".to_string(), value: None },
        ];
        for record in records {
            let (key, value) = record.encode();
            assert_eq!(GroupRecord::decode(&key, value.as_deref()).unwrap(), record);
        }
    }

    /// Bytes as Kafka 2.x writes them: an offset commit key v1 with a value v1 (with the expire
    /// timestamp that retention no longer uses).
    #[test]
    fn kafkas_older_offset_value_versions_are_read() {
        let mut key = BytesMut::new();
        key.put_i16(1);
        put_string(&mut key, "g");
        put_string(&mut key, "t");
        key.put_i32(0);
        let mut value = BytesMut::new();
        value.put_i16(1);
        value.put_i64(5);
        put_string(&mut value, "");
        value.put_i64(100);
        value.put_i64(200);
        let record = GroupRecord::decode(&key, Some(&value)).unwrap();
        let GroupRecord::Offset { value: Some(v), .. } = record else { panic!("{record:?}") };
        assert_eq!((v.offset, v.leader_epoch, v.commit_timestamp_ms), (5, -1, 100));
    }

    #[test]
    fn lying_lengths_and_counts_are_refused_before_allocating() {
        let (key, value) = GroupRecord::Group { group_id: "g".to_string(), value: Some(group_value()) }.encode();
        let mut value = value.unwrap().to_vec();
        // The member count sits after version, "consumer", generation, "range", "c-1", timestamp.
        let at = 2 + (2 + 8) + 4 + (2 + 5) + (2 + 3) + 8;
        value[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(GroupRecord::decode(&key, Some(&value)).unwrap_err().contains("cannot fit"));
        assert!(GroupRecord::decode(&[0, 9], None).unwrap_err().contains("unknown key version"));
        assert!(GroupRecord::decode(&[0, 2, 0x7f, 0xff], None).unwrap_err().contains("needs"));
        let (key, _) = GroupRecord::Group { group_id: "g".to_string(), value: None }.encode();
        let mut longer = key.to_vec();
        longer.push(0);
        assert!(GroupRecord::decode(&longer, None).unwrap_err().contains("left over"));
    }

    /// Values computed as Kafka does: `Utils.abs("...".hashCode()) % 50`.
    #[test]
    fn groups_land_on_the_partition_kafka_would_choose() {
        assert_eq!(partition_for("order-processing-group", 50), 22);
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("my-group", 50), 12);
    }
}
