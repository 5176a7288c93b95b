//! Record batch (v2, magic 2) parsing and validation.
//!
//! Layout of the 61-byte header (big-endian):
//!
//! | bytes | field | covered by the CRC |
//! | --- | --- | --- |
//! | 0..8 | baseOffset (assigned by the broker) | no |
//! | 8..12 | batchLength (bytes after this field) | no |
//! | 12..16 | partitionLeaderEpoch (assigned by the broker) | no |
//! | 16 | magic | no |
//! | 17..21 | crc (CRC-32C of bytes 21..end) | - |
//! | 21..23 | attributes (compression 0-2, timestamp type 3, transactional 4, control 5) | yes |
//! | 23..27 | lastOffsetDelta | yes |
//! | 27..35 | baseTimestamp | yes |
//! | 35..43 | maxTimestamp | yes |
//! | 43..51 | producerId | yes |
//! | 51..53 | producerEpoch | yes |
//! | 53..57 | baseSequence | yes |
//! | 57..61 | recordCount | yes |
//! | 61.. | records (compressed as a whole if attributes say so) | yes |

use super::LogError;
use std::io::Read;

pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` counts: baseOffset and batchLength itself.
pub const LOG_OVERHEAD_BYTES: usize = 12;
const CRC_START: usize = 21;
/// A decompressed batch larger than this is refused (a zip bomb, not a batch).
const DECOMPRESSED_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The fields of a batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total bytes of the batch, header included.
    pub size: usize,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// The sequence of the last record, wrapping at `i32::MAX` as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses the header at the start of `bytes` (at least [`BATCH_HEADER_BYTES`] long). Checks
/// only that the length field is sane; nothing about the body.
pub fn parse_header(bytes: &[u8]) -> Result<BatchHeader, LogError> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(LogError::CorruptMessage(format!(
            "{} bytes is shorter than a batch header ({BATCH_HEADER_BYTES})",
            bytes.len()
        )));
    }
    let batch_length = i32_at(bytes, 8);
    let magic = bytes[16] as i8;
    if magic != 2 {
        return Err(LogError::UnsupportedMessageFormat(magic));
    }
    if batch_length < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return Err(LogError::CorruptMessage(format!("batch length {batch_length} is shorter than a batch header")));
    }
    Ok(BatchHeader {
        base_offset: i64_at(bytes, 0),
        size: batch_length as usize + LOG_OVERHEAD_BYTES,
        partition_leader_epoch: i32_at(bytes, 12),
        magic,
        crc: u32::from_be_bytes(bytes[17..21].try_into().expect("4 bytes")),
        attributes: i16_at(bytes, 21),
        last_offset_delta: i32_at(bytes, 23),
        base_timestamp: i64_at(bytes, 27),
        max_timestamp: i64_at(bytes, 35),
        producer_id: i64_at(bytes, 43),
        producer_epoch: i16_at(bytes, 51),
        base_sequence: i32_at(bytes, 53),
        record_count: i32_at(bytes, 57),
    })
}

/// Whether the CRC-32C over bytes 21..end matches the header. `batch` is exactly one batch.
pub fn crc_matches(batch: &[u8]) -> bool {
    batch.len() >= BATCH_HEADER_BYTES
        && crc32c::crc32c(&batch[CRC_START..]) == u32::from_be_bytes(batch[17..21].try_into().expect("4 bytes"))
}

/// What validation learned about a batch from a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatedBatch {
    pub header: BatchHeader,
    /// The largest record timestamp and the offset delta of the first record that has it.
    pub max_timestamp: i64,
    pub offset_delta_of_max_timestamp: i32,
    /// Whether some record has no key (a compacted topic refuses the batch).
    pub has_null_key: bool,
}

/// Validates one batch from a producer: exactly one whole batch, magic 2, CRC-32C, size limit,
/// record count and record framing (after decompression).
pub fn validate_batch(bytes: &[u8], max_message_bytes: usize) -> Result<ValidatedBatch, LogError> {
    let header = parse_header(bytes)?;
    if header.size > bytes.len() {
        return Err(LogError::CorruptMessage(format!(
            "batch claims {} bytes but {} were sent",
            header.size,
            bytes.len()
        )));
    }
    if header.size < bytes.len() {
        return Err(LogError::InvalidRecord(format!(
            "a produce request must carry exactly one record batch per partition; found {} extra bytes after the first",
            bytes.len() - header.size
        )));
    }
    if header.size > max_message_bytes {
        return Err(LogError::MessageTooLarge { size: header.size, max: max_message_bytes });
    }
    if !crc_matches(bytes) {
        return Err(LogError::CorruptMessage(format!("CRC-32C mismatch (header says {:#010x})", header.crc)));
    }
    if header.record_count <= 0 {
        return Err(LogError::CorruptMessage(format!("record count {} must be positive", header.record_count)));
    }
    if header.last_offset_delta != header.record_count - 1 {
        return Err(LogError::CorruptMessage(format!(
            "lastOffsetDelta {} does not match {} records",
            header.last_offset_delta, header.record_count
        )));
    }
    if header.is_control() {
        return Err(LogError::InvalidRecord("producers may not write control batches".to_string()));
    }
    let body = decompress(header.compression(), &bytes[BATCH_HEADER_BYTES..])?;
    let mut max = (i64::MIN, 0);
    let mut has_null_key = false;
    walk_records(&header, &body, Deltas::Dense, |record| {
        if record.timestamp > max.0 {
            max = (record.timestamp, record.offset_delta);
        }
        has_null_key |= record.key.is_none();
    })?;
    Ok(ValidatedBatch { header, max_timestamp: max.0, offset_delta_of_max_timestamp: max.1, has_null_key })
}

/// Validates one stored batch, as a follower gets it from its leader: exactly one whole batch,
/// magic 2, CRC-32C, record framing. A stored batch may have been compacted (records removed,
/// offset deltas with gaps, no records at all), so the deltas need only increase within
/// `0..=lastOffsetDelta`. Returns its header.
pub fn validate_stored_batch(bytes: &[u8]) -> Result<BatchHeader, LogError> {
    let header = parse_header(bytes)?;
    if header.size != bytes.len() {
        return Err(LogError::CorruptMessage(format!(
            "batch claims {} bytes but is {} bytes long",
            header.size,
            bytes.len()
        )));
    }
    if !crc_matches(bytes) {
        return Err(LogError::CorruptMessage(format!("CRC-32C mismatch (header says {:#010x})", header.crc)));
    }
    if header.record_count < 0 || header.last_offset_delta < 0 {
        return Err(LogError::CorruptMessage(format!(
            "record count {} and lastOffsetDelta {} must not be negative",
            header.record_count, header.last_offset_delta
        )));
    }
    let body = decompress(header.compression(), &bytes[BATCH_HEADER_BYTES..])?;
    walk_records(&header, &body, Deltas::Compacted, |_| {})?;
    Ok(header)
}

/// The records of a stored batch, for the log cleaner: decompresses the body and returns it
/// with where each record lies in it. Checks the framing as [`validate_stored_batch`] does.
pub fn stored_records(batch: &[u8]) -> Result<(BatchHeader, Vec<u8>, Vec<RecordView>), LogError> {
    let header = parse_header(batch)?;
    let body = decompress(header.compression(), &batch[BATCH_HEADER_BYTES..header.size.min(batch.len())])?;
    let mut views = Vec::with_capacity(header.record_count.clamp(0, 1 << 16) as usize);
    walk_records(&header, &body, Deltas::Compacted, |record| views.push(record))?;
    Ok((header, body, views))
}

/// The batch `header` describes, holding only `records` (whole records copied from its body,
/// in order; their offset and timestamp deltas still hold, relative to the same base), stored
/// uncompressed. Base offset, lastOffsetDelta, timestamps and producer fields are kept, as
/// Kafka's cleaner keeps them: a consumer moves past the batch by its lastOffsetDelta, and the
/// producer's sequence range stays what it was.
pub fn rebuild(header: &BatchHeader, records: &[u8], record_count: i32) -> Vec<u8> {
    const COMPRESSION_BITS: i16 = 0x07;
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    out.extend_from_slice(&header.base_offset.to_be_bytes());
    let batch_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32;
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&header.partition_leader_epoch.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]); // CRC, below
    out.extend_from_slice(&(header.attributes & !COMPRESSION_BITS).to_be_bytes());
    out.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&header.base_timestamp.to_be_bytes());
    out.extend_from_slice(&header.max_timestamp.to_be_bytes());
    out.extend_from_slice(&header.producer_id.to_be_bytes());
    out.extend_from_slice(&header.producer_epoch.to_be_bytes());
    out.extend_from_slice(&header.base_sequence.to_be_bytes());
    out.extend_from_slice(&record_count.to_be_bytes());
    out.extend_from_slice(records);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(crc_matches(&out));
    out
}

/// A batch with no records covering `base_offset ..= base_offset + last_offset_delta`: what
/// the cleaner leaves where it removed whole batches, so that batches stay contiguous in
/// offsets (every reader and recovery check the log by that) and a consumer moves past it.
pub fn empty_batch(base_offset: i64, last_offset_delta: i32, leader_epoch: i32, max_timestamp: i64) -> Vec<u8> {
    let header = BatchHeader {
        base_offset,
        size: BATCH_HEADER_BYTES,
        partition_leader_epoch: leader_epoch,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta,
        base_timestamp: max_timestamp,
        max_timestamp,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: 0,
    };
    rebuild(&header, &[], 0)
}

/// Decompresses a batch body (identity for uncompressed batches).
pub fn decompress(compression: i16, body: &[u8]) -> Result<Vec<u8>, LogError> {
    let corrupt =
        |codec: &str, e: std::io::Error| LogError::CorruptMessage(format!("{codec} body does not decompress: {e}"));
    let limit = DECOMPRESSED_BYTES_MAX as u64 + 1;
    let mut out = Vec::new();
    match compression {
        0 => return Ok(body.to_vec()),
        1 => flate2::read::GzDecoder::new(body).take(limit).read_to_end(&mut out).map_err(|e| corrupt("gzip", e))?,
        2 => return decompress_snappy(body),
        3 => lz4::Decoder::new(body)
            .map_err(|e| corrupt("lz4", e))?
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| corrupt("lz4", e))?,
        4 => zstd::stream::read::Decoder::new(body)
            .map_err(|e| corrupt("zstd", e))?
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| corrupt("zstd", e))?,
        other => return Err(LogError::CorruptMessage(format!("unknown compression codec {other}"))),
    };
    if out.len() > DECOMPRESSED_BYTES_MAX {
        return Err(LogError::CorruptMessage(format!("decompresses to more than {DECOMPRESSED_BYTES_MAX} bytes")));
    }
    Ok(out)
}

/// Snappy as Kafka clients send it: xerial framing (Java) or a raw block (others).
fn decompress_snappy(body: &[u8]) -> Result<Vec<u8>, LogError> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER_BYTES: usize = 16;
    let raw = |block: &[u8]| {
        let len = snap::raw::decompress_len(block).map_err(|e| LogError::CorruptMessage(format!("snappy: {e}")))?;
        if len > DECOMPRESSED_BYTES_MAX {
            return Err(LogError::CorruptMessage(format!("snappy block decompresses to {len} bytes")));
        }
        snap::raw::Decoder::new().decompress_vec(block).map_err(|e| LogError::CorruptMessage(format!("snappy: {e}")))
    };
    if !body.starts_with(XERIAL_MAGIC) {
        return raw(body);
    }
    let mut out = Vec::new();
    let mut at = XERIAL_HEADER_BYTES.min(body.len());
    while at < body.len() {
        if at + 4 > body.len() {
            return Err(LogError::CorruptMessage("snappy: truncated xerial block length".to_string()));
        }
        let len = u32::from_be_bytes(body[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 4;
        let block = body
            .get(at..at + len)
            .ok_or_else(|| LogError::CorruptMessage("snappy: truncated xerial block".to_string()))?;
        out.extend(raw(block)?);
        if out.len() > DECOMPRESSED_BYTES_MAX {
            return Err(LogError::CorruptMessage("snappy: decompresses too large".to_string()));
        }
        at += len;
    }
    Ok(out)
}

/// A cursor over record bytes with Kafka's zig-zag varints.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn varlong(&mut self) -> Result<i64, LogError> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| LogError::CorruptMessage("record truncated inside a varint".to_string()))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(LogError::CorruptMessage("varint longer than 10 bytes".to_string()))
    }

    fn varint(&mut self) -> Result<i32, LogError> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| LogError::CorruptMessage(format!("varint {v} out of range")))
    }

    fn skip(&mut self, n: usize) -> Result<(), LogError> {
        if self.at + n > self.bytes.len() {
            return Err(LogError::CorruptMessage("record field runs past the record".to_string()));
        }
        self.at += n;
        Ok(())
    }

    /// A length-prefixed field: where it lies, or `None` for null (length -1).
    fn bytes_field(&mut self) -> Result<Option<std::ops::Range<usize>>, LogError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(LogError::CorruptMessage(format!("negative field length {n}"))),
            n => {
                let start = self.at;
                self.skip(n as usize)?;
                Ok(Some(start..self.at))
            }
        }
    }
}

/// How record offset deltas must run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deltas {
    /// A producer's batch: 0, 1, ..., n-1, with lastOffsetDelta n-1.
    Dense,
    /// A stored batch, perhaps compacted: strictly increasing within `0..=lastOffsetDelta`.
    Compacted,
}

/// One record of a batch body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView {
    pub offset_delta: i32,
    pub timestamp: i64,
    /// Where the key lies in the body; `None` for a null key.
    pub key: Option<std::ops::Range<usize>>,
    /// A null value: a tombstone in a compacted topic.
    pub value_is_null: bool,
    /// The whole record (its length prefix included) in the body.
    pub bytes: std::ops::Range<usize>,
}

/// Walks every record of `body` (`header.record_count` of them): framing, offset deltas as
/// `deltas` says, exact byte count; `visit` sees each.
fn walk_records(
    header: &BatchHeader,
    body: &[u8],
    deltas: Deltas,
    mut visit: impl FnMut(RecordView),
) -> Result<(), LogError> {
    let mut cursor = Cursor { bytes: body, at: 0 };
    let mut previous_delta = -1;
    for index in 0..header.record_count {
        let start = cursor.at;
        let length = cursor.varint()?;
        if length <= 0 {
            return Err(LogError::CorruptMessage(format!("record length {length}")));
        }
        let end = cursor.at + length as usize;
        if end > body.len() {
            return Err(LogError::CorruptMessage(format!("record {index} runs past the batch")));
        }
        cursor.skip(1)?; // attributes
        let timestamp_delta = cursor.varlong()?;
        let offset_delta = cursor.varint()?;
        let fits = match deltas {
            Deltas::Dense => offset_delta == index,
            Deltas::Compacted => offset_delta > previous_delta && offset_delta <= header.last_offset_delta,
        };
        if !fits {
            return Err(LogError::CorruptMessage(format!(
                "record {index} has offset delta {offset_delta} after {previous_delta} (lastOffsetDelta {})",
                header.last_offset_delta
            )));
        }
        previous_delta = offset_delta;
        let key = cursor.bytes_field()?;
        let value = cursor.bytes_field()?;
        let headers = cursor.varint()?;
        if headers < 0 {
            return Err(LogError::CorruptMessage(format!("negative header count {headers}")));
        }
        for _ in 0..headers {
            cursor.bytes_field()?;
            cursor.bytes_field()?;
        }
        if cursor.at != end {
            return Err(LogError::CorruptMessage(format!("record {index} length {length} does not match its fields")));
        }
        visit(RecordView {
            offset_delta,
            timestamp: header.base_timestamp.wrapping_add(timestamp_delta),
            key,
            value_is_null: value.is_none(),
            bytes: start..end,
        });
    }
    if cursor.at != body.len() {
        return Err(LogError::CorruptMessage(format!(
            "{} bytes after the last of {} records",
            body.len() - cursor.at,
            header.record_count
        )));
    }
    Ok(())
}

/// Record timestamps and offset deltas of a stored batch, for ListOffsets by timestamp.
pub fn record_timestamps(batch: &[u8]) -> Result<Vec<(i32, i64)>, LogError> {
    let header = parse_header(batch)?;
    let body = decompress(header.compression(), &batch[BATCH_HEADER_BYTES..header.size.min(batch.len())])?;
    let mut cursor = Cursor { bytes: &body, at: 0 };
    let mut out = Vec::with_capacity(header.record_count.max(0) as usize);
    for _ in 0..header.record_count {
        let length = cursor.varint()?;
        let end = cursor.at + length.max(0) as usize;
        cursor.skip(1)?;
        let timestamp_delta = cursor.varlong()?;
        let offset_delta = cursor.varint()?;
        out.push((offset_delta, header.base_timestamp.wrapping_add(timestamp_delta)));
        cursor.at = end.min(body.len());
    }
    Ok(out)
}

/// Attribute bit 3: the batch's timestamps are LogAppendTime (set by a broker, not a producer).
const TIMESTAMP_TYPE_LOG_APPEND_TIME: i16 = 0x08;

/// Makes a client batch's header say what its records say, as Kafka's LogValidator does
/// (`setMaxTimestamp(CREATE_TIME, max)`): maxTimestamp the largest record timestamp, timestamp
/// type CreateTime. Recomputes the CRC only if something changed (for every well-behaved
/// client nothing does, and the batch is stored byte for byte as sent). The time index and
/// ListOffsets trust the header's maxTimestamp, so it must not lie.
pub fn normalize_timestamps(batch: &mut [u8], validated: &ValidatedBatch) -> bool {
    let header = &validated.header;
    let attributes = header.attributes & !TIMESTAMP_TYPE_LOG_APPEND_TIME;
    if header.max_timestamp == validated.max_timestamp && attributes == header.attributes {
        return false;
    }
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&validated.max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(crc_matches(batch));
    true
}

/// Stamps the broker-assigned fields (outside the CRC) into a batch.
pub fn assign_offsets(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::client::{encode_batch, BatchProducer, BatchRecord};
    use bytes::Bytes;
    use kafka_protocol::records::Compression;

    pub fn encode(values: &[&str], compression: Compression) -> Vec<u8> {
        let records: Vec<BatchRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| BatchRecord {
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(v.to_string())),
                timestamp: 1000 + (i as i64 % 3),
            })
            .collect();
        encode_batch(&records, Some(BatchProducer { producer_id: 7, producer_epoch: 1, base_sequence: 0 }), compression)
            .to_vec()
    }

    #[test]
    fn valid_batches_of_every_codec_are_accepted() {
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let batch = encode(&["a", "bb", "ccc", "dddd"], compression);
            let v = validate_batch(&batch, 1 << 20).unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!(v.header.record_count, 4);
            assert_eq!(v.header.producer_id, 7);
            assert_eq!(v.header.last_sequence(), 3);
            assert_eq!((v.max_timestamp, v.offset_delta_of_max_timestamp), (1002, 2));
            assert_eq!(record_timestamps(&batch).unwrap().len(), 4);
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_under_the_crc_is_caught() {
        let batch = encode(&["hello", "world"], Compression::None);
        for at in CRC_START..batch.len() {
            let mut bad = batch.clone();
            bad[at] ^= 0x01;
            assert!(matches!(validate_batch(&bad, 1 << 20), Err(LogError::CorruptMessage(_))), "byte {at}");
        }
        // The broker-assigned fields are outside the CRC.
        let mut stamped = batch.clone();
        assign_offsets(&mut stamped, 12345, 9);
        assert!(validate_batch(&stamped, 1 << 20).is_ok());
    }

    #[test]
    fn wrong_lengths_counts_and_magic_are_refused() {
        let batch = encode(&["x"], Compression::None);
        assert!(matches!(validate_batch(&batch[..batch.len() - 1], 1 << 20), Err(LogError::CorruptMessage(_))));
        let mut two = batch.clone();
        two.extend_from_slice(&batch);
        assert!(matches!(validate_batch(&two, 1 << 20), Err(LogError::InvalidRecord(_))));
        let mut magic1 = batch.clone();
        magic1[16] = 1;
        assert!(matches!(validate_batch(&magic1, 1 << 20), Err(LogError::UnsupportedMessageFormat(1))));
        assert!(matches!(validate_batch(&batch, 10), Err(LogError::MessageTooLarge { .. })));
        // A record count that disagrees with the records (CRC recomputed so only the count is wrong).
        let mut count = batch.clone();
        count[57..61].copy_from_slice(&2i32.to_be_bytes());
        count[23..27].copy_from_slice(&1i32.to_be_bytes());
        let crc = crc32c::crc32c(&count[CRC_START..]);
        count[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate_batch(&count, 1 << 20), Err(LogError::CorruptMessage(_))));
    }

    /// `batch` with its body replaced by `body` and `compression`, length and CRC made right.
    fn with_body(batch: &[u8], compression: i16, body: &[u8]) -> Vec<u8> {
        let mut out = batch[..BATCH_HEADER_BYTES].to_vec();
        out.extend_from_slice(body);
        let attributes = (i16_at(&out, 21) & !0x07) | compression;
        out[21..23].copy_from_slice(&attributes.to_be_bytes());
        let batch_length = (out.len() - LOG_OVERHEAD_BYTES) as i32;
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn snappy_is_accepted_in_xerial_framing_with_many_blocks_and_as_a_raw_block() {
        // Java clients (and kafka-protocol) frame snappy the xerial way, in 32 KiB blocks.
        let big: Vec<String> = (0..40).map(|i| format!("{i:04}").repeat(400)).collect();
        let values: Vec<&str> = big.iter().map(String::as_str).collect();
        let framed = encode(&values, Compression::Snappy);
        assert!(framed[BATCH_HEADER_BYTES..].starts_with(b"\x82SNAPPY\x00"));
        assert_eq!(validate_batch(&framed, 1 << 20).unwrap().header.record_count, 40);
        // Other clients send one raw snappy block.
        let plain = decompress(2, &framed[BATCH_HEADER_BYTES..]).unwrap();
        let raw = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        let raw_batch = with_body(&framed, 2, &raw);
        assert_eq!(validate_batch(&raw_batch, 1 << 20).unwrap().header.record_count, 40);
        assert_eq!(record_timestamps(&raw_batch).unwrap().len(), 40);
    }

    fn compress(codec: i16, plain: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match codec {
            1 => {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(plain).unwrap();
                encoder.finish().unwrap()
            }
            2 => snap::raw::Encoder::new().compress_vec(plain).unwrap(),
            3 => {
                let mut encoder = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                encoder.write_all(plain).unwrap();
                let (out, result) = encoder.finish();
                result.unwrap();
                out
            }
            4 => zstd::encode_all(plain, 0).unwrap(),
            other => panic!("codec {other}"),
        }
    }

    #[test]
    fn a_compressed_body_that_does_not_decompress_or_parse_is_corrupt() {
        for (compression, codec) in
            [(Compression::Gzip, 1), (Compression::Snappy, 2), (Compression::Lz4, 3), (Compression::Zstd, 4)]
        {
            let batch = encode(&["a", "bb", "ccc"], compression);
            // Garbage under a correct CRC: the client computed the checksum over garbage.
            let garbage = with_body(&batch, codec, &[0x5a; 40]);
            assert!(
                matches!(validate_batch(&garbage, 1 << 20), Err(LogError::CorruptMessage(_))),
                "{compression:?}: garbage accepted"
            );
            // A body that decompresses but holds one record fewer than the header says.
            let plain = decompress(codec, &batch[BATCH_HEADER_BYTES..]).unwrap();
            let short = with_body(&batch, codec, &compress(codec, &plain[..plain.len() - 1]));
            assert!(matches!(validate_batch(&short, 1 << 20), Err(LogError::CorruptMessage(_))), "{compression:?}");
            let whole = with_body(&batch, codec, &compress(codec, &plain));
            assert!(validate_batch(&whole, 1 << 20).is_ok(), "{compression:?}: the recompressed original is fine");
        }
    }

    #[test]
    fn a_last_offset_delta_that_disagrees_with_the_count_is_corrupt() {
        let batch = encode(&["a", "b"], Compression::None);
        let mut bad = batch.clone();
        bad[23..27].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&bad[CRC_START..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate_batch(&bad, 1 << 20), Err(LogError::CorruptMessage(_))));
    }

    #[test]
    fn last_sequence_wraps_like_kafka() {
        let batch = encode(&["a", "b", "c"], Compression::None);
        let mut header = parse_header(&batch).unwrap();
        header.base_sequence = i32::MAX - 1;
        assert_eq!(header.last_sequence(), 0, "MAX-1, MAX, 0");
    }
}
