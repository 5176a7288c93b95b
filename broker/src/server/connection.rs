//! Client connections and what bounds them.
//!
//! Every limit here has Kafka's name (`broker --help` and the README list them):
//! - `max.connections`, `max.connections.per.ip`: a connection over either is closed as soon as
//!   it is accepted ([`ConnectionLimits`]);
//! - `connections.max.idle.ms`: a connection that sends no request for this long is closed;
//! - `socket.request.max.bytes`: a larger frame closes the connection before anything is read;
//! - `queued.max.request.bytes`: bytes of requests read and not yet answered, across all
//!   connections ([`RequestBytes`]); a frame that does not fit waits before its body is read
//!   (Kafka mutes the channel), so the broker never holds more;
//! - `socket.io.timeout.ms` (Gregor's own): a frame whose length arrived must complete, and a
//!   response must be taken by the peer, within it.
//!
//! A frame that does not decode gets what Kafka gives it ([`handle_frame`]): an error response
//! where the API has a top-level error code, otherwise a closed connection; either way one WARN
//! naming the peer, API and reason, rate-limited by [`WarnLimiter`].

use super::signal::Signal;
use super::{consumer_group_handlers, group_handlers, handlers, Broker};
use crate::protocol::{self, DecodeError, Request};
use crate::types::ErrorCode;
use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, FetchResponse, InitProducerIdResponse, RequestKind, ResponseKind,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Warnings about bad requests: at most this many per window, then one summary.
const WARNINGS_PER_WINDOW_MAX: u32 = 10;
const WARNING_WINDOW_MS: i64 = 10_000;

/// `max.connections` and `max.connections.per.ip`: how many client connections are open.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_connections: usize,
    max_per_ip: usize,
    /// Invariant: `total` is the sum of `per_ip`, and no entry is zero.
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    per_ip: BTreeMap<IpAddr, usize>,
}

/// An admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_connections: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits { max_connections, max_per_ip, open: Mutex::new(OpenConnections::default()) })
    }

    /// Takes a slot for a connection from `ip`, or says which limit it is over.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, String> {
        let mut open = self.open.lock().expect("connection limits lock poisoned");
        if open.total >= self.max_connections {
            return Err(format!("max.connections ({}) reached", self.max_connections));
        }
        let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            return Err(format!("max.connections.per.ip ({}) reached for {ip}", self.max_per_ip));
        }
        open.total += 1;
        open.per_ip.insert(ip, from_ip + 1);
        Ok(Admitted { limits: self.clone(), ip })
    }

    pub fn open(&self) -> usize {
        self.open.lock().expect("connection limits lock poisoned").total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("connection limits lock poisoned");
        open.total -= 1;
        let from_ip = open.per_ip.get_mut(&self.ip).expect("an admitted ip is counted");
        *from_ip -= 1;
        if *from_ip == 0 {
            open.per_ip.remove(&self.ip);
        }
    }
}

/// `queued.max.request.bytes`: one permit per byte of a request read and not yet answered.
pub struct RequestBytes {
    permits: Semaphore,
}

impl RequestBytes {
    pub fn new(max_bytes: usize) -> RequestBytes {
        RequestBytes { permits: Semaphore::new(max_bytes.min(Semaphore::MAX_PERMITS)) }
    }

    /// Waits until `size` bytes fit (`size <= u32::MAX`, checked by the config).
    async fn acquire(&self, size: usize) -> SemaphorePermit<'_> {
        let size = u32::try_from(size.max(1)).expect("socket.request.max.bytes fits in u32");
        self.permits.acquire_many(size).await.expect("the request-bytes semaphore is never closed")
    }
}

/// Rate-limited warnings: a flood of bad frames cannot fill the disk with log lines.
#[derive(Default)]
pub struct WarnLimiter {
    state: Mutex<WarnWindow>,
}

#[derive(Default)]
struct WarnWindow {
    start_ms: i64,
    emitted: u32,
    suppressed: u64,
}

impl WarnLimiter {
    /// Whether to log now; `Some(n)`: yes, and `n` warnings were suppressed before this one.
    pub fn allow(&self, now_ms: i64) -> Option<u64> {
        let mut window = self.state.lock().expect("warn limiter lock poisoned");
        if now_ms - window.start_ms >= WARNING_WINDOW_MS {
            window.start_ms = now_ms;
            window.emitted = 0;
        }
        if window.emitted >= WARNINGS_PER_WINDOW_MAX {
            window.suppressed += 1;
            return None;
        }
        window.emitted += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

/// What every connection shares: the broker and the limits.
pub struct Connections {
    pub broker: Arc<Broker>,
    pub limits: Arc<ConnectionLimits>,
    pub request_bytes: RequestBytes,
    pub warnings: WarnLimiter,
}

impl Connections {
    pub fn new(broker: Arc<Broker>) -> Arc<Connections> {
        let config = &broker.config;
        Arc::new(Connections {
            limits: ConnectionLimits::new(config.max_connections, config.max_connections_per_ip),
            request_bytes: RequestBytes::new(config.queued_max_request_bytes),
            warnings: WarnLimiter::default(),
            broker,
        })
    }

    /// One WARN about a peer's bad frame, unless the rate limit says no.
    fn warn(&self, peer: SocketAddr, api: &str, reason: &str) {
        if let Some(suppressed) = self.warnings.allow(crate::env::now_ms()) {
            tracing::warn!(%peer, api, reason, suppressed, "bad request");
        }
    }
}

pub async fn accept_loop(listener: TcpListener, connections: Arc<Connections>, shutdown: Signal<()>) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let admitted = match connections.limits.admit(peer.ip()) {
                    Ok(admitted) => admitted,
                    Err(reason) => {
                        connections.warn(peer, "-", &format!("connection refused: {reason}"));
                        drop(stream);
                        continue;
                    }
                };
                let connections = connections.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    serve_connection(&connections, stream, peer, shutdown).await;
                    drop(admitted);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Why a connection stops.
#[derive(Debug)]
enum Closed {
    /// The peer closed it (or shutdown began): nothing to report.
    Quietly,
    /// Ordinary housekeeping (an idle connection, a peer that went away mid-write): DEBUG.
    Routinely(String),
    /// A limit or a bad frame: reported once (rate-limited) with the API it concerned.
    Because { api: String, reason: String },
}

fn closed(api: impl Into<String>, reason: impl Into<String>) -> Closed {
    Closed::Because { api: api.into(), reason: reason.into() }
}

async fn serve_connection(connections: &Connections, stream: TcpStream, peer: SocketAddr, shutdown: Signal<()>) {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = tokio::io::BufReader::new(reader);
    let config = &connections.broker.config;
    let io_timeout = Duration::from_millis(config.socket_io_timeout_ms);
    // As Kafka shows a member's host in DescribeGroups.
    let client_host = format!("/{}", peer.ip());
    let outcome: Closed = loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.wait() => break Closed::Quietly,
            read = read_request(connections, &mut reader) => read,
        };
        let (frame, _permit) = match read {
            Ok(read) => read,
            Err(closed) => break closed,
        };
        let response = match handle_frame(&connections.broker, frame, &client_host).await {
            Ok(response) => response,
            Err(FrameRefused { api, reason, response }) => {
                connections.warn(peer, &api, &reason);
                match response {
                    Some(response) => Some(response),
                    None => break Closed::Quietly,
                }
            }
        };
        // A slow disk (simulated) delays the answer by the time its operations took.
        let disk_delay = connections.broker.disk.take_delay();
        if !disk_delay.is_zero() {
            tokio::time::sleep(disk_delay).await;
        }
        if let Some(response) = response {
            match tokio::time::timeout(io_timeout, protocol::write_frame(&mut writer, &response)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Closed::Routinely(format!("write failed: {e}")),
                Err(_) => {
                    break closed("-", format!("response not taken within socket.io.timeout.ms ({io_timeout:?})"))
                }
            }
        }
    };
    match outcome {
        Closed::Because { api, reason } => connections.warn(peer, &api, &format!("closing connection: {reason}")),
        Closed::Routinely(reason) => tracing::debug!(%peer, reason, "closing connection"),
        Closed::Quietly => {}
    }
}

/// Reads one request frame within the connection's limits. The returned permit holds the
/// frame's bytes against `queued.max.request.bytes` until the response is written.
async fn read_request<'a, R: AsyncRead + Unpin>(
    connections: &'a Connections,
    reader: &mut R,
) -> Result<(Bytes, SemaphorePermit<'a>), Closed> {
    let config = &connections.broker.config;
    let idle = Duration::from_millis(config.connections_max_idle_ms);
    let mut len_buf = [0u8; 4];
    match tokio::time::timeout(idle, reader.read_exact(&mut len_buf)).await {
        Err(_) => return Err(Closed::Routinely(format!("idle for connections.max.idle.ms ({idle:?})"))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Closed::Quietly),
        Ok(Err(e)) => return Err(Closed::Routinely(format!("read failed: {e}"))),
        Ok(Ok(_)) => {}
    }
    let len = i32::from_be_bytes(len_buf);
    let size = usize::try_from(len).map_err(|_| closed("-", format!("negative frame length {len}")))?;
    let max = config.socket_request_max_bytes;
    if size > max {
        return Err(closed("-", format!("frame of {size} bytes exceeds socket.request.max.bytes ({max})")));
    }
    let permit = connections.request_bytes.acquire(size).await;
    let io_timeout = Duration::from_millis(config.socket_io_timeout_ms);
    match tokio::time::timeout(io_timeout, protocol::read_body(reader, size)).await {
        Ok(Ok(frame)) => Ok((frame, permit)),
        Ok(Err(e)) => Err(closed("-", format!("frame of {size} bytes cut short: {e}"))),
        Err(_) => {
            Err(closed("-", format!("frame of {size} bytes not complete within socket.io.timeout.ms ({io_timeout:?})")))
        }
    }
}

/// A frame the broker will not handle: what to log, and the error response to send if the API
/// has a top-level error code (otherwise the connection closes).
#[derive(Debug)]
pub struct FrameRefused {
    pub api: String,
    pub reason: String,
    pub response: Option<Bytes>,
}

/// Decodes, handles and encodes one request from `client_host` (`/ip`, as group members are
/// described). `Ok(None)`: no response (acks=0).
pub async fn handle_frame(
    broker: &Arc<Broker>,
    frame: Bytes,
    client_host: &str,
) -> Result<Option<Bytes>, FrameRefused> {
    let (header, body) = match protocol::decode_request(frame) {
        Ok(Request::Known { header, body }) => (header, body),
        Ok(Request::UnsupportedVersion { api_key: ApiKey::ApiVersions, correlation_id, api_version }) => {
            tracing::debug!(api_version, "ApiVersions of an unknown version: answering v0 with UNSUPPORTED_VERSION");
            let body = ResponseKind::ApiVersions(handlers::api_versions(ErrorCode::UNSUPPORTED_VERSION));
            let response = protocol::encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
                .expect("an ApiVersions v0 response always encodes");
            return Ok(Some(response));
        }
        Ok(Request::UnsupportedVersion { api_key, api_version, correlation_id }) => {
            return Err(FrameRefused {
                api: format!("{api_key:?} v{api_version}"),
                reason: "version not supported (see ApiVersions)".to_string(),
                response: error_response(api_key, api_version, correlation_id, ErrorCode::UNSUPPORTED_VERSION),
            })
        }
        Err(DecodeError::MalformedBody { api, version, correlation_id, reason }) => {
            return Err(FrameRefused {
                api: format!("{api:?} v{version}"),
                reason,
                response: error_response(api, version, correlation_id, ErrorCode::INVALID_REQUEST),
            })
        }
        Err(e) => return Err(FrameRefused { api: e.api(), reason: e.to_string(), response: None }),
    };
    let version = header.request_api_version;
    let api_key = ApiKey::try_from(header.request_api_key).expect("checked by decode_request");
    let response = match *body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(handlers::api_versions(ErrorCode::NONE)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(handlers::metadata(broker, r, version).await),
        RequestKind::Produce(r) => match handlers::produce(broker, r, version).await {
            Some(response) => ResponseKind::Produce(response),
            None => return Ok(None),
        },
        RequestKind::Fetch(r) => {
            let client_id = header.client_id.as_ref().map(|c| c.to_string());
            ResponseKind::Fetch(handlers::fetch(broker, r, version, client_id.as_deref()).await)
        }
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(handlers::list_offsets(broker, r, version)),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(handlers::create_topics(broker, r, version).await),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(handlers::delete_topics(broker, r, version).await),
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(handlers::init_producer_id(broker, r).await),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(handlers::offset_for_leader_epoch(broker, r))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(group_handlers::find_coordinator(broker, r, version).await)
        }
        RequestKind::JoinGroup(r) => {
            let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
            ResponseKind::JoinGroup(group_handlers::join_group(broker, r, version, &client_id, client_host).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(group_handlers::sync_group(broker, r, version).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(group_handlers::heartbeat(broker, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(group_handlers::leave_group(broker, r, version)),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(group_handlers::offset_commit(broker, r, version).await)
        }
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(group_handlers::offset_fetch(broker, r, version)),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(group_handlers::list_groups(broker, r, version)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(group_handlers::describe_groups(broker, r, version))
        }
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(group_handlers::delete_groups(broker, r).await),
        RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(group_handlers::offset_delete(broker, r).await),
        RequestKind::ConsumerGroupHeartbeat(r) => {
            let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
            let response =
                consumer_group_handlers::consumer_group_heartbeat(broker, r, version, &client_id, client_host).await;
            ResponseKind::ConsumerGroupHeartbeat(response)
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            ResponseKind::ConsumerGroupDescribe(consumer_group_handlers::consumer_group_describe(broker, r))
        }
        other => unreachable!("decode_request decodes only advertised APIs, got {other:?}"),
    };
    protocol::encode_response(api_key, version, header.correlation_id, &response).map(Some).map_err(|e| {
        // A handler built a response its version cannot carry: a bug, reported, never a crash.
        FrameRefused {
            api: format!("{api_key:?} v{version}"),
            reason: format!("response does not encode: {e:#}"),
            response: None,
        }
    })
}

/// An error response carrying `code` at the top level, if this API and version have a
/// top-level error code (ApiVersions, InitProducerId, Fetch v7+) and the version can be
/// encoded; `None` otherwise (Kafka closes the connection then).
fn error_response(api_key: ApiKey, version: i16, correlation_id: i32, code: ErrorCode) -> Option<Bytes> {
    let body = match api_key {
        ApiKey::ApiVersions => ResponseKind::ApiVersions(ApiVersionsResponse::default().with_error_code(code.0)),
        ApiKey::InitProducerId => ResponseKind::InitProducerId(
            InitProducerIdResponse::default()
                .with_error_code(code.0)
                .with_producer_id(kafka_protocol::messages::ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        // Fetch has a top-level error code from v7 on (KIP-227).
        ApiKey::Fetch if version >= 7 => ResponseKind::Fetch(FetchResponse::default().with_error_code(code.0)),
        _ => return None,
    };
    let valid = api_key.valid_versions();
    if !(valid.min..=valid.max).contains(&version) {
        return None;
    }
    protocol::encode_response(api_key, version, correlation_id, &body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_over_either_limit_are_refused_and_slots_come_back_on_drop() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert!(limits.admit(a).unwrap_err().contains("max.connections.per.ip (2)"));
        let _third = limits.admit(b).unwrap();
        assert!(limits.admit(b).unwrap_err().contains("max.connections (3)"));
        drop(first);
        assert_eq!(limits.open(), 2);
        let _again = limits.admit(a).unwrap();
    }

    #[test]
    fn a_flood_of_warnings_is_cut_to_the_window_budget_and_counts_what_it_dropped() {
        let limiter = WarnLimiter::default();
        let allowed = (0..1_000).filter(|_| limiter.allow(5).is_some()).count();
        assert_eq!(allowed, WARNINGS_PER_WINDOW_MAX as usize);
        assert_eq!(limiter.allow(5 + WARNING_WINDOW_MS), Some(1_000 - u64::from(WARNINGS_PER_WINDOW_MAX)));
    }

    #[test]
    fn error_responses_exist_only_where_the_api_has_a_top_level_error_code() {
        assert!(error_response(ApiKey::Fetch, 12, 1, ErrorCode::INVALID_REQUEST).is_some());
        assert!(error_response(ApiKey::Fetch, 13, 1, ErrorCode::UNSUPPORTED_VERSION).is_some());
        assert!(error_response(ApiKey::Fetch, 6, 1, ErrorCode::INVALID_REQUEST).is_none());
        assert!(error_response(ApiKey::InitProducerId, 4, 1, ErrorCode::INVALID_REQUEST).is_some());
        assert!(error_response(ApiKey::Produce, 9, 1, ErrorCode::INVALID_REQUEST).is_none());
        assert!(error_response(ApiKey::Fetch, 99, 1, ErrorCode::UNSUPPORTED_VERSION).is_none());
    }
}
