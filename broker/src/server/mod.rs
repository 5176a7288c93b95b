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
pub mod connection;
pub mod consumer_group_handlers;
pub mod controller_rpc;
pub mod group_handlers;
pub mod groups;
#[cfg(not(madsim))]
pub mod groups_cli;
pub mod halt;
pub mod handlers;
pub mod replication;
pub mod signal;
pub mod state;

pub use config::BrokerConfig;
pub use connection::handle_frame;
pub use halt::Halt;
pub use state::Broker;

use crate::controller::{Controller, ControllerConfig, MetadataLog};
use crate::env::now_ms;
use crate::replication::Due;
use connection::Connections;
use signal::Signal;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

use crate::storage::Disk;

/// How long shutdown waits for open connections to finish their current request.
const SHUTDOWN_DRAIN_MS_MAX: u64 = 5_000;
/// Housekeeping (flush.ms, segment.ms) runs at least this often.
const HOUSEKEEPING_INTERVAL_MS_MAX: i64 = 1_000;
const HOUSEKEEPING_INTERVAL_MS_MIN: i64 = 10;

/// A running node: a broker, a controller, or both.
pub struct BrokerHandle {
    /// The PLAINTEXT listener's address (the real port when the config asked for port 0); for a
    /// controller-only node, the controller listener's.
    pub local_addr: SocketAddr,
    /// The controller listener's address, on a node with the controller role.
    pub controller_addr: Option<SocketAddr>,
    pub broker: Option<Arc<Broker>>,
    pub controller: Option<Arc<Mutex<Controller>>>,
    shutdown: Signal<()>,
    /// Pulled on a fatal disk error: whoever runs the node must then end the process (see
    /// [`halt`]).
    pub halt: Halt,
    /// Client connections and their limits (broker role only).
    pub connections: Option<Arc<Connections>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BrokerHandle {
    /// Stops accepting, lets open connections finish their current request, then flushes and
    /// closes every log.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        self.shutdown.raise(());
        for task in self.tasks {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_MS_MAX);
        let open = || self.connections.as_ref().map_or(0, |c| c.limits.open());
        while open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(broker) = &self.broker {
            broker.close()?;
        }
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

/// Starts the roles `config.roles` names: the controller (metadata log in
/// `<log.dirs>/__cluster_metadata-0`, controller listener) and/or the broker (PLAINTEXT
/// listener; partition logs opened and recovered as the controller's metadata assigns them).
/// Serves until [`BrokerHandle::shutdown`].
pub async fn start(config: BrokerConfig, disk: Arc<dyn Disk>) -> anyhow::Result<BrokerHandle> {
    start_observed(config, disk, |_| {}).await
}

/// [`start`], handing the broker to `opened` as soon as it exists (before it registers and
/// serves): the simulator reads its observation tap from then on, also when the start fails.
pub async fn start_observed(
    config: BrokerConfig,
    disk: Arc<dyn Disk>,
    opened: impl FnOnce(Arc<Broker>),
) -> anyhow::Result<BrokerHandle> {
    config.check()?;
    for ignored in &config.ignored {
        tracing::info!(key = ignored, "configuration key accepted but has no effect in Gregor");
    }
    disk.create_dir_all(&config.log_dir)?;
    state::sync_parent(&*disk, &config.log_dir)?;
    let shutdown = Signal::default();
    let halt = Halt::default();
    let mut tasks = Vec::new();
    let mut controller = None;
    let mut controller_addr = None;
    if config.roles.controller {
        let address = config.controller_listener.clone().unwrap_or_else(|| {
            let host = config.listener.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
            format!("{host}:0")
        });
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|e| anyhow::anyhow!("binding controller listener {address}: {e}"))?;
        controller_addr = Some(listener.local_addr()?);
        let metadata_dir = config.log_dir.join("__cluster_metadata-0");
        let (log, records) = MetadataLog::open(&*disk, &metadata_dir)?;
        let cluster_id = state::load_or_create_cluster_id(&*disk, &metadata_dir)?;
        let controller_config = ControllerConfig {
            session_timeout_ms: config.session_timeout_ms,
            default_replication_factor: config.default_replication_factor,
            num_partitions: config.num_partitions,
            unclean_leader_election: config.unclean_leader_election,
            min_insync_replicas: config.min_insync_replicas,
        };
        let shared = Arc::new(Mutex::new(Controller::new(log, records, cluster_id, controller_config, now_ms())?));
        tasks.push(tokio::spawn(controller_rpc::serve(listener, shared.clone(), halt.clone(), shutdown.clone())));
        tracing::info!(address = %controller_addr.expect("bound"), node_id = config.node_id, "Gregor controller listening");
        controller = Some(shared);
    }
    let mut connections = None;
    let mut broker = None;
    let mut local_addr = controller_addr;
    if config.roles.broker {
        let controller_address = match (&config.controller_voter, controller_addr) {
            (Some((_, address)), _) if !config.roles.controller => address.clone(),
            (_, Some(bound)) => bound.to_string(),
            (Some((_, address)), None) => address.clone(),
            (None, None) => unreachable!("checked by BrokerConfig::check"),
        };
        let listener = TcpListener::bind(&config.listener)
            .await
            .map_err(|e| anyhow::anyhow!("binding listener {}: {e}", config.listener))?;
        let bound = listener.local_addr()?;
        local_addr = Some(bound);
        let advertised = config.advertised_address(bound);
        let shared = Arc::new(Broker::open(config, disk, advertised, controller_address, halt.clone())?);
        opened(shared.clone());
        tasks.push(tokio::spawn(housekeeping_loop(shared.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(replication::controller_link(shared.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(replication::isr_loop(shared.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(groups::group_loop(shared.clone(), shutdown.clone())));
        // Clients are served once the broker is part of the cluster, as in Kafka: before that
        // it knows no topics and leads nothing.
        // A fatal disk error while waiting (opening logs, or the controller's own log) ends
        // the start: the caller exits the process.
        tokio::select! {
            biased;
            reason = halt.halted() => anyhow::bail!("halted while starting: {reason}"),
            _ = wait_until_unfenced(&shared) => {}
        }
        let shared_connections = Connections::new(shared.clone());
        tasks.push(tokio::spawn(connection::accept_loop(listener, shared_connections.clone(), shutdown.clone())));
        connections = Some(shared_connections);
        tracing::info!(%bound, advertised = ?shared.advertised, node_id = shared.node_id, "Gregor broker listening");
        broker = Some(shared);
    }
    Ok(BrokerHandle {
        local_addr: local_addr.expect("at least one role"),
        controller_addr,
        broker,
        controller,
        shutdown,
        halt,
        connections,
        tasks,
    })
}

/// Like a Kafka broker at startup: wait until registered with the controller, caught up with the
/// metadata and unfenced (so the partitions it leads are known) before calling startup done.
async fn wait_until_unfenced(broker: &Broker) {
    const LOG_EVERY_MS: u64 = 5_000;
    let mut waited_ms = 0;
    loop {
        {
            let meta = broker.meta();
            if meta.broker_epoch.is_some() && meta.image.is_live(broker.node_id) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited_ms += 10;
        if waited_ms % LOG_EVERY_MS == 0 {
            tracing::warn!(
                controller = broker.controller_address,
                waited_ms,
                "still waiting to be registered and unfenced by the controller"
            );
        }
    }
}

async fn housekeeping_loop(broker: Arc<Broker>, shutdown: Signal<()>) {
    let retention_interval = broker.config.retention_check_interval_ms;
    let mut next_retention = now_ms() + retention_interval;
    let clean_interval = broker.config.cleaner_backoff_ms;
    let mut next_clean = now_ms() + clean_interval;
    loop {
        let interval = broker
            .shortest_flush_interval_ms()
            .unwrap_or(HOUSEKEEPING_INTERVAL_MS_MAX)
            .clamp(HOUSEKEEPING_INTERVAL_MS_MIN, HOUSEKEEPING_INTERVAL_MS_MAX);
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_millis(interval as u64)) => {}
        }
        let now = now_ms();
        let retention_due = now >= next_retention;
        if retention_due {
            next_retention = now + retention_interval;
        }
        let clean_due = broker.config.cleaner_enable && now >= next_clean;
        if clean_due {
            next_clean = now + clean_interval;
        }
        broker.housekeeping(now, Due { retention: retention_due, clean: clean_due });
    }
}

/// The `broker` binary: `broker [--config FILE | FILE] [--override key=value]...`, or
/// `broker groups ...` (see `groups_cli`).
#[cfg(not(madsim))]
pub fn cli_main() -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("groups") {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return runtime.block_on(groups_cli::run(&args[1..]));
    }
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
        tokio::select! {
            biased;
            reason = handle.halt.halted() => {
                // Like Kafka's Exit.halt: no clean shutdown, nothing more is written; the next
                // start recovers every log.
                eprintln!("gregor: fatal disk error, exiting: {reason}");
                std::process::exit(1);
            }
            _ = wait_for_signal() => handle.shutdown().await,
        }
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
       broker groups --bootstrap-server HOST:PORT (--list | --describe (--group GROUP | --all-groups))

Starts a Gregor node. With no arguments it is one broker and its controller (process.roles=broker,controller),
listens on 127.0.0.1:9092 and keeps data in ./data. A cluster: one node with process.roles=controller (or both)
and listeners=CONTROLLER://host:port, brokers with process.roles=broker and controller.quorum.voters=id@host:port.
Keys are Kafka's server.properties keys (node.id, process.roles, controller.quorum.voters, listeners, advertised.listeners, log.dirs,
num.partitions, auto.create.topics.enable, message.max.bytes, log.segment.bytes, log.roll.ms,
log.flush.interval.messages, log.flush.interval.ms, log.retention.bytes, log.retention.hours|minutes|ms,
log.retention.check.interval.ms, socket.request.max.bytes, default.replication.factor, min.insync.replicas,
unclean.leader.election.enable, replica.lag.time.max.ms, broker.heartbeat.interval.ms, broker.session.timeout.ms, ...).";

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
