//! Listeners, connections, config and the broker state.
//!
//! Entry points:
//! - [`start`] opens the data directory (recovering every log), binds the listener and starts
//!   serving; it returns a [`BrokerHandle`] with the bound address (so tests can use port 0)
//!   and a way to shut down cleanly.
//! - [`cli_main`] is the `broker` binary: flags and `server.properties` into a
//!   [`BrokerConfig`], then [`start`], then wait for Ctrl-C or SIGTERM.
//!
//! Each connection is one task that reads a request, handles it, writes the response, and only
//! then reads the next: responses go out in request order, as Kafka guarantees per connection.

pub mod config;
pub mod handlers;
pub mod state;

pub use config::BrokerConfig;
pub use state::Broker;

use crate::protocol::{self, Request};
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::storage::Disk;

/// How long shutdown waits for open connections to finish their current request.
const SHUTDOWN_DRAIN_MS_MAX: u64 = 5_000;
/// Housekeeping (flush.ms, segment.ms) runs at least this often.
const HOUSEKEEPING_INTERVAL_MS_MAX: i64 = 1_000;
const HOUSEKEEPING_INTERVAL_MS_MIN: i64 = 10;

/// A running broker.
pub struct BrokerHandle {
    /// The address the listener is bound to (the real port when the config asked for port 0).
    pub local_addr: SocketAddr,
    pub broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    open_connections: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BrokerHandle {
    /// Stops accepting, lets open connections finish their current request, then flushes and
    /// closes every log.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_MS_MAX);
        while self.open_connections.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.broker.close()?;
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

/// Opens the data directory in `config.log_dir` on `disk` (recovering every log), binds the
/// listener and serves until [`BrokerHandle::shutdown`].
pub async fn start(config: BrokerConfig, disk: Arc<dyn Disk>) -> anyhow::Result<BrokerHandle> {
    for ignored in &config.ignored {
        tracing::info!(key = ignored, "configuration key accepted but has no effect in Gregor");
    }
    let listener = TcpListener::bind(&config.listener)
        .await
        .map_err(|e| anyhow::anyhow!("binding listener {}: {e}", config.listener))?;
    let local_addr = listener.local_addr()?;
    let advertised = config.advertised_address(local_addr);
    let broker = Arc::new(Broker::open(config, disk, advertised)?);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let open_connections = Arc::new(AtomicUsize::new(0));
    let accept = tokio::spawn(accept_loop(listener, broker.clone(), shutdown_rx.clone(), open_connections.clone()));
    let housekeeping = tokio::spawn(housekeeping_loop(broker.clone(), shutdown_rx));
    tracing::info!(%local_addr, advertised = ?broker.advertised, node_id = broker.config.node_id, "Gregor broker listening");
    Ok(BrokerHandle { local_addr, broker, shutdown, open_connections, tasks: vec![accept, housekeeping] })
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    open_connections: Arc<AtomicUsize>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                open_connections.fetch_add(1, Ordering::SeqCst);
                let broker = broker.clone();
                let shutdown = shutdown.clone();
                let open_connections = open_connections.clone();
                tokio::spawn(async move {
                    serve_connection(broker, stream, peer, shutdown).await;
                    open_connections.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn housekeeping_loop(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let retention_interval = broker.config.retention_check_interval_ms;
    let mut next_retention = state::now_ms() + retention_interval;
    loop {
        let interval = broker
            .shortest_flush_interval_ms()
            .unwrap_or(HOUSEKEEPING_INTERVAL_MS_MAX)
            .clamp(HOUSEKEEPING_INTERVAL_MS_MIN, HOUSEKEEPING_INTERVAL_MS_MAX);
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(interval as u64)) => {}
        }
        let now = state::now_ms();
        let retention_due = now >= next_retention;
        if retention_due {
            next_retention = now + retention_interval;
        }
        broker.housekeeping(now, retention_due);
    }
}

async fn serve_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = tokio::io::BufReader::new(reader);
    let max_bytes = broker.config.socket_request_max_bytes;
    loop {
        let frame = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            frame = protocol::read_frame(&mut reader, max_bytes) => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(protocol::FrameError::Closed) => return,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                return;
            }
        };
        let response = match handle_frame(&broker, frame).await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection after a bad request");
                return;
            }
        };
        // A slow disk (simulated) delays the answer by the time its operations took.
        let disk_delay = broker.disk.take_delay();
        if !disk_delay.is_zero() {
            tokio::time::sleep(disk_delay).await;
        }
        if let Some(response) = response {
            if let Err(e) = protocol::write_frame(&mut writer, &response).await {
                tracing::debug!(%peer, error = %e, "write failed; closing connection");
                return;
            }
        }
    }
}

/// Decodes, handles and encodes one request. `Ok(None)`: no response (acks=0).
/// `Err`: the connection must be closed (malformed request, unsupported API).
pub async fn handle_frame(broker: &Broker, frame: Bytes) -> anyhow::Result<Option<Bytes>> {
    let (header, body) = match protocol::decode_request(frame)? {
        Request::Known { header, body } => (header, body),
        Request::UnsupportedVersion { api_key: ApiKey::ApiVersions, correlation_id, api_version } => {
            tracing::debug!(api_version, "ApiVersions of an unknown version: answering v0 with UNSUPPORTED_VERSION");
            let body = ResponseKind::ApiVersions(handlers::api_versions(handlers::code::UNSUPPORTED_VERSION));
            return Ok(Some(protocol::encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)?));
        }
        Request::UnsupportedVersion { api_key, api_version, .. } => {
            anyhow::bail!("{api_key:?} v{api_version} is not supported (see ApiVersions)");
        }
    };
    let version = header.request_api_version;
    let api_key = ApiKey::try_from(header.request_api_key).expect("checked by decode_request");
    let response = match *body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(handlers::api_versions(handlers::code::NONE)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(handlers::metadata(broker, r, version)),
        RequestKind::Produce(r) => match handlers::produce(broker, r, version) {
            Some(response) => ResponseKind::Produce(response),
            None => return Ok(None),
        },
        RequestKind::Fetch(r) => ResponseKind::Fetch(handlers::fetch(broker, r, version).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(handlers::list_offsets(broker, r, version)),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(handlers::create_topics(broker, r, version)),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(handlers::delete_topics(broker, r, version)),
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(handlers::init_producer_id(broker, r)),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(handlers::offset_for_leader_epoch(broker, r))
        }
        other => anyhow::bail!("no handler for {other:?}"),
    };
    Ok(Some(protocol::encode_response(api_key, version, header.correlation_id, &response)?))
}

/// The `broker` binary: `broker [--config FILE | FILE] [--override key=value]...`.
#[cfg(not(madsim))]
pub fn cli_main() -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let config = match parse_args(std::env::args().skip(1))? {
        Some(config) => config,
        None => return Ok(()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let handle = start(config, Arc::new(crate::storage::real::RealDisk)).await?;
        wait_for_signal().await;
        handle.shutdown().await
    })
}

#[cfg(not(madsim))]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

const USAGE: &str = "usage: broker [--config server.properties | server.properties] [--override key=value]...

Starts a Gregor broker. With no arguments it listens on 127.0.0.1:9092 and keeps data in ./data.
Keys are Kafka's server.properties keys (node.id, listeners, advertised.listeners, log.dirs,
num.partitions, auto.create.topics.enable, message.max.bytes, log.segment.bytes, log.roll.ms,
log.flush.interval.messages, log.flush.interval.ms, log.retention.bytes, log.retention.hours|minutes|ms,
log.retention.check.interval.ms, socket.request.max.bytes, min.insync.replicas, ...).";

/// Parses the command line. `Ok(None)` when `--help` was asked for (usage printed).
pub fn parse_args(args: impl Iterator<Item = String>) -> anyhow::Result<Option<BrokerConfig>> {
    let mut config_file = None;
    let mut overrides = Vec::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--config" | "-c" => {
                config_file = Some(args.next().ok_or_else(|| anyhow::anyhow!("--config needs a file\n\n{USAGE}"))?)
            }
            "--override" | "-o" => {
                overrides.push(args.next().ok_or_else(|| anyhow::anyhow!("--override needs key=value\n\n{USAGE}"))?)
            }
            other if other.starts_with("--override=") => overrides.push(other["--override=".len()..].to_string()),
            other if !other.starts_with('-') && config_file.is_none() => config_file = Some(other.to_string()),
            other => anyhow::bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let mut config = match config_file {
        Some(path) => {
            #[allow(clippy::disallowed_methods)] // the CLI runs only for real, never simulated
            let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
            BrokerConfig::from_properties(&text, &path)?
        }
        None => BrokerConfig::default(),
    };
    for item in overrides {
        let (key, value) =
            item.split_once('=').ok_or_else(|| anyhow::anyhow!("--override expects key=value, got `{item}`"))?;
        config.set(key.trim(), value.trim())?;
    }
    Ok(Some(config))
}
