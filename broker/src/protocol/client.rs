//! A minimal Kafka protocol client: one connection, one request at a time, each with its own
//! timeout (the simulator never times a connection out by itself). Used by the integration
//! tests and by the simulator's workload client.

use super::{read_frame, write_frame};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// One record for [`encode_batch`].
#[derive(Clone, Debug, Default)]
pub struct BatchRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub timestamp: i64,
}

/// The producer fields of a batch: id, epoch and the sequence of its first record.
#[derive(Clone, Copy, Debug)]
pub struct BatchProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Encodes one v2 record batch as a Kafka producer would: offsets 0.., the producer fields (or
/// -1 for a plain producer), compressed with `compression`.
pub fn encode_batch(records: &[BatchRecord], producer: Option<BatchProducer>, compression: Compression) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.map_or(-1, |p| p.producer_id),
            producer_epoch: producer.map_or(-1, |p| p.producer_epoch),
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch whenever `offset - sequence` changes, and takes
            // the batch's base sequence from its first record: -1, 0, 1, .. for a plain producer.
            sequence: producer.map_or(i as i32 - 1, |p| p.base_sequence.wrapping_add(i as i32)),
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression })
        .expect("records encode");
    buf.freeze()
}

/// Responses larger than this are treated as a protocol error.
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection: {0}")]
    Connection(String),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// One client connection.
pub struct Connection<S> {
    stream: S,
    next_correlation_id: i32,
    client_id: String,
    /// Per-request timeout (Kafka's `request.timeout.ms`).
    pub request_timeout: Duration,
}

impl Connection<TcpStream> {
    pub async fn connect(addr: &str, client_id: &str) -> Result<Self, ClientError> {
        let stream =
            TcpStream::connect(addr).await.map_err(|e| ClientError::Connection(format!("connect {addr}: {e}")))?;
        Ok(Connection::new(stream, client_id))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, client_id: &str) -> Self {
        Connection {
            stream,
            next_correlation_id: 0,
            client_id: client_id.to_string(),
            request_timeout: Duration::from_secs(30),
        }
    }

    fn encode(&mut self, api_key: ApiKey, version: i16, body: &RequestKind) -> Result<(i32, Bytes), ClientError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        let protocol = |e: anyhow::Error| ClientError::Protocol(format!("encoding {api_key:?} v{version}: {e:#}"));
        RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())))
            .encode(&mut buf, api_key.request_header_version(version))
            .map_err(protocol)?;
        body.encode(&mut buf, version).map_err(protocol)?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok((correlation_id, buf.freeze()))
    }

    /// Sends a request and waits (at most `request_timeout`) for its response.
    pub async fn send(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: RequestKind,
    ) -> Result<ResponseKind, ClientError> {
        let correlation_id = self.write_request(api_key, version, body).await?;
        self.read_response(api_key, version, correlation_id).await
    }

    /// Pipelining, first half: writes a request and returns its correlation id without waiting.
    /// Responses come back in request order; read them with [`Connection::read_response`].
    pub async fn write_request(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: RequestKind,
    ) -> Result<i32, ClientError> {
        let (correlation_id, frame) = self.encode(api_key, version, &body)?;
        let timeout = self.request_timeout;
        tokio::time::timeout(timeout, write_frame(&mut self.stream, &frame))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|e| ClientError::Connection(format!("write: {e}")))?;
        Ok(correlation_id)
    }

    /// Pipelining, second half: reads the next response, which must answer `correlation_id`.
    pub async fn read_response(
        &mut self,
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> Result<ResponseKind, ClientError> {
        let timeout = self.request_timeout;
        let read = async {
            let mut response = read_frame(&mut self.stream, RESPONSE_BYTES_MAX)
                .await
                .map_err(|e| ClientError::Connection(format!("read: {e}")))?;
            let header_version =
                if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
            let header = ResponseHeader::decode(&mut response, header_version)
                .map_err(|e| ClientError::Protocol(format!("{e:#}")))?;
            if header.correlation_id != correlation_id {
                return Err(ClientError::Protocol(format!(
                    "correlation id {} for request {correlation_id}",
                    header.correlation_id
                )));
            }
            // A peer's answer (a leader's fetch response, say) is held to the same element
            // budget as a request.
            kafka_protocol::protocol::types::decode_with_element_budget(super::REQUEST_ELEMENTS_MAX, || {
                ResponseKind::decode(api_key, &mut response, version)
            })
            .map_err(|e| ClientError::Protocol(format!("decoding {api_key:?} v{version}: {e:#}")))
        };
        tokio::time::timeout(timeout, read).await.map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub async fn send_without_response(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: RequestKind,
    ) -> Result<(), ClientError> {
        let (_, frame) = self.encode(api_key, version, &body)?;
        let timeout = self.request_timeout;
        tokio::time::timeout(timeout, write_frame(&mut self.stream, &frame))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|e| ClientError::Connection(format!("write: {e}")))
    }

    /// Writes raw bytes (tests of malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        write_frame(&mut self.stream, bytes).await.map_err(|e| ClientError::Connection(format!("write: {e}")))
    }

    /// Reads one raw response frame (without its length prefix).
    pub async fn read_raw(&mut self) -> Result<Bytes, ClientError> {
        let timeout = self.request_timeout;
        tokio::time::timeout(timeout, read_frame(&mut self.stream, RESPONSE_BYTES_MAX))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|e| ClientError::Connection(format!("read: {e}")))
    }
}
