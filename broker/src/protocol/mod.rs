//! Kafka wire framing and request decoding over the `kafka-protocol` crate.
//!
//! A frame is a 4-byte big-endian length and that many bytes. A request frame holds a request
//! header (whose version depends on the API and its version) and a body; a response frame holds
//! a response header (ApiVersions always uses header v0) and a body.
//!
//! [`SUPPORTED_APIS`] is the single source of truth for what the broker advertises: every API
//! and version listed is implemented by `server::handlers` and decodable by `kafka-protocol`.

pub mod client;
pub mod hostile;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::types::decode_with_element_budget;
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The APIs and version ranges the broker implements, as advertised in ApiVersions.
///
/// Chosen so that kafka-python infers a modern broker (it keys features off these ranges) and
/// librdkafka gets what it needs; nothing below `kafka-protocol`'s decodable minimum, and no
/// version that needs topic ids (Fetch/Produce >= 13) or KIP-890 part 2.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
];

const _: () = assert!(SUPPORTED_APIS.len() == 22);

/// Array elements one request may hold in all (nested arrays included), whatever its size: a
/// decoded element takes up to ~40 times its bytes on the wire, so without this one
/// `socket.request.max.bytes` frame could become gigabytes. Far above what clients send (a
/// produce or fetch for thousands of partitions, a CreateTopics of 10,000 partitions with their
/// replica lists).
pub const REQUEST_ELEMENTS_MAX: usize = 1_000_000;

/// The version range the broker serves for `api_key`, if any.
pub fn supported_range(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS.iter().find(|(key, _, _)| *key == api_key).map(|&(_, min, max)| (min, max))
}

/// Why a frame could not be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request header")]
    Truncated(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("malformed {api:?} v{version} request header: {reason}")]
    MalformedHeader { api: ApiKey, version: i16, reason: String },
    /// The header decoded, so the client can be answered (where the API has an error code).
    #[error("malformed {api:?} v{version} request: {reason}")]
    MalformedBody { api: ApiKey, version: i16, correlation_id: i32, reason: String },
}

impl DecodeError {
    /// The API a bad frame claimed to be, for the log.
    pub fn api(&self) -> String {
        match self {
            DecodeError::Truncated(_) => "-".to_string(),
            DecodeError::UnknownApiKey(key) => format!("api key {key}"),
            DecodeError::MalformedHeader { api, version, .. } | DecodeError::MalformedBody { api, version, .. } => {
                format!("{api:?} v{version}")
            }
        }
    }
}

/// A decoded request, or an ApiVersions request of a version we do not know (KIP-511: answer
/// it with UNSUPPORTED_VERSION and a v0 body).
#[derive(Debug)]
pub enum Request {
    Known { header: RequestHeader, body: Box<RequestKind> },
    UnsupportedVersion { api_key: ApiKey, api_version: i16, correlation_id: i32 },
}

/// Decodes one request frame (without its length prefix).
pub fn decode_request(frame: Bytes) -> Result<Request, DecodeError> {
    let len = frame.len();
    if len < 8 {
        return Err(DecodeError::Truncated(len));
    }
    let mut peek = &frame[..];
    let raw_key = peek.get_i16();
    let api_version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey(raw_key))?;
    let served = supported_range(api_key).is_some_and(|(min, max)| (min..=max).contains(&api_version));
    if !served {
        return Ok(Request::UnsupportedVersion { api_key, api_version, correlation_id });
    }
    let mut buf = frame;
    let header_version = api_key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut buf, header_version).map_err(|reason| DecodeError::MalformedHeader {
        api: api_key,
        version: api_version,
        reason: format!("{reason:#}"),
    })?;
    let malformed =
        |reason: String| DecodeError::MalformedBody { api: api_key, version: api_version, correlation_id, reason };
    let body = decode_with_element_budget(REQUEST_ELEMENTS_MAX, || RequestKind::decode(api_key, &mut buf, api_version))
        .map_err(|reason| malformed(format!("{reason:#}").trim_end().to_string()))?;
    Ok(Request::Known { header, body: Box::new(body) })
}

/// Encodes a response frame (with its length prefix).
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0); // length, patched below
                    // ApiVersions responses always use header v0 so that a client that sent a version the
                    // broker does not know can still read the error (KIP-511).
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(api_version) };
    ResponseHeader::default().with_correlation_id(correlation_id).encode(&mut buf, header_version)?;
    body.encode(&mut buf, api_version)?;
    let len = i32::try_from(buf.len() - 4)?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one length-prefixed frame. `Closed` on a clean EOF between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, max_bytes: usize) -> Result<Bytes, FrameError> {
    let mut len_buf = [0u8; 4];
    match reader.read_exact(&mut len_buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let len = i32::from_be_bytes(len_buf);
    let size = usize::try_from(len).map_err(|_| FrameError::NegativeLength(len))?;
    if size > max_bytes {
        return Err(FrameError::TooLarge { size, max: max_bytes });
    }
    Ok(read_body(reader, size).await?)
}

/// A frame body is read in pieces of at least this many bytes; the buffer grows only as bytes
/// arrive, so a length prefix alone never allocates the length it claims.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Reads exactly `size` bytes, growing the buffer only as they arrive (never past `size`).
pub async fn read_body<R: AsyncRead + Unpin>(reader: &mut R, size: usize) -> std::io::Result<Bytes> {
    let mut body = BytesMut::with_capacity(size.min(READ_CHUNK_BYTES));
    while body.len() < size {
        let missing = size - body.len();
        if body.capacity() == body.len() {
            body.reserve(body.len().max(READ_CHUNK_BYTES).min(missing));
        }
        let n = (&mut *reader).take(missing as u64).read_buf(&mut body).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(body.freeze())
}

/// Writes an already length-prefixed frame and flushes it (the simulator sends only on flush).
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> std::io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};

    fn request_frame(api_key: ApiKey, version: i16, body: &RequestKind) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .encode(&mut buf, api_key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn every_advertised_version_is_decodable_by_kafka_protocol() {
        for &(api_key, min, max) in SUPPORTED_APIS {
            let valid = api_key.valid_versions();
            assert!(min >= valid.min && max <= valid.max, "{api_key:?} {min}..={max} outside {valid}");
        }
    }

    #[test]
    fn metadata_request_round_trips_through_decode() {
        let frame = request_frame(ApiKey::Metadata, 9, &RequestKind::Metadata(MetadataRequest::default()));
        match decode_request(frame).unwrap() {
            Request::Known { header, body } => {
                assert_eq!(header.correlation_id, 42);
                assert!(matches!(*body, RequestKind::Metadata(_)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn api_versions_newer_than_known_is_flagged_not_rejected() {
        let frame = request_frame(ApiKey::ApiVersions, 3, &RequestKind::ApiVersions(ApiVersionsRequest::default()));
        let mut bytes = BytesMut::from(&frame[..]);
        bytes[2..4].copy_from_slice(&99i16.to_be_bytes());
        match decode_request(bytes.freeze()).unwrap() {
            Request::UnsupportedVersion { api_key: ApiKey::ApiVersions, api_version: 99, correlation_id: 42 } => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn garbage_frames_are_errors_not_panics() {
        assert!(matches!(decode_request(Bytes::from_static(b"\x00")), Err(DecodeError::Truncated(1))));
        assert!(matches!(
            decode_request(Bytes::from_static(b"\x7f\x00\x00\x00\x00\x00\x00\x01")),
            Err(DecodeError::UnknownApiKey(_))
        ));
        // Metadata v9 header then a truncated body.
        let frame = request_frame(ApiKey::Metadata, 9, &RequestKind::Metadata(MetadataRequest::default()));
        let cut = frame.slice(..frame.len() - 2);
        assert!(matches!(decode_request(cut), Err(DecodeError::MalformedBody { correlation_id: 42, .. })));
    }

    #[tokio::test]
    async fn a_body_is_read_in_pieces_and_a_short_one_is_an_error() {
        let data = vec![7u8; 200_000];
        let mut reader = &data[..];
        let body = read_body(&mut reader, 150_000).await.unwrap();
        assert_eq!(body.len(), 150_000);
        assert_eq!(reader.len(), 50_000, "reads no further than the frame");
        let mut short = &data[..10];
        assert!(read_body(&mut short, 11).await.is_err());
    }

    #[test]
    fn api_versions_response_uses_header_v0() {
        let body = ResponseKind::ApiVersions(ApiVersionsResponse::default());
        let frame = encode_response(ApiKey::ApiVersions, 3, 7, &body).unwrap();
        // length(4) + correlation id(4) and no tagged-field byte before the body's error code.
        assert_eq!(&frame[4..8], &7i32.to_be_bytes());
        assert_eq!(&frame[8..10], &0i16.to_be_bytes());
    }
}

#[cfg(test)]
mod snapshots {
    use super::SUPPORTED_APIS;

    /// The advertised API table as a golden file: changing what clients see is a reviewed diff.
    #[test]
    fn advertised_api_versions() {
        let table: String =
            SUPPORTED_APIS.iter().map(|(key, min, max)| format!("{key:?}: v{min}..=v{max}\n")).collect();
        insta::assert_snapshot!(table);
    }
}
