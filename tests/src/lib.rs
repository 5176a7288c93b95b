//! Helpers shared by the integration tests and the benchmark: a broker in this process or in a
//! child process, bounded subprocesses, and the Python interpreter set up by `cargo xtest`.
#![allow(clippy::disallowed_methods)] // real threads, processes and files: never simulated

use broker::server::{self, BrokerConfig, BrokerHandle};
use broker::storage::real::RealDisk;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A broker running on its own tokio runtime in this process, with a fresh data directory.
pub struct InProcessBroker {
    runtime: tokio::runtime::Runtime,
    handle: Option<BrokerHandle>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl InProcessBroker {
    /// Starts a broker listening on `listener` (e.g. `127.0.0.1:0`) with extra config keys.
    pub fn start(listener: &str, overrides: &[(&str, &str)]) -> InProcessBroker {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = BrokerConfig::default();
        config.set("listeners", &format!("PLAINTEXT://{listener}")).unwrap();
        config.set("log.dirs", dir.path().to_str().unwrap()).unwrap();
        for (key, value) in overrides {
            config.set(key, value).unwrap();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let handle = runtime.block_on(server::start(config, Arc::new(RealDisk))).expect("broker starts");
        let addr = handle.local_addr;
        InProcessBroker { runtime, handle: Some(handle), dir, addr }
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            self.runtime.block_on(handle.shutdown()).expect("clean shutdown");
        }
    }
}

impl Drop for InProcessBroker {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = self.runtime.block_on(handle.shutdown());
        }
    }
}

/// With `RUST_LOG` set (e.g. `RUST_LOG=debug`), the in-process broker and librdkafka (through
/// the `log` crate: see `GREGOR_RDKAFKA_DEBUG`) log to the test's output. The child-process
/// broker always logs to stderr, at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The broker binary as a child process (so a test can kill -9 it).
pub struct ChildBroker {
    child: Child,
    pub addr: SocketAddr,
}

impl ChildBroker {
    pub fn start(binary: &str, addr: SocketAddr, data_dir: &Path, overrides: &[(&str, &str)]) -> ChildBroker {
        let mut command = Command::new(binary);
        command.arg("--override").arg(format!("listeners=PLAINTEXT://{addr}"));
        command.arg("--override").arg(format!("log.dirs={}", data_dir.display()));
        for (key, value) in overrides {
            command.arg("--override").arg(format!("{key}={value}"));
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("broker binary starts");
        wait_for_port(addr, Duration::from_secs(30));
        ChildBroker { child, addr }
    }

    /// Any node (controller, broker or both) from explicit `--override` keys; waits until
    /// something listens on `wait_for`.
    pub fn start_node(
        binary: &str,
        wait_for: SocketAddr,
        data_dir: &Path,
        overrides: &[(&str, String)],
    ) -> ChildBroker {
        let mut command = Command::new(binary);
        command.arg("--override").arg(format!("log.dirs={}", data_dir.display()));
        for (key, value) in overrides {
            command.arg("--override").arg(format!("{key}={value}"));
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("node binary starts");
        wait_for_port(wait_for, Duration::from_secs(30));
        ChildBroker { child, addr: wait_for }
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGKILL: no shutdown hook runs, nothing is flushed.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A controller (node 100) and brokers 1..=n as child processes, as the README starts a
/// cluster on one machine; each node with its own port and data directory.
pub struct ChildCluster {
    pub controller: ChildBroker,
    pub brokers: std::collections::BTreeMap<i32, ChildBroker>,
    _dirs: Vec<tempfile::TempDir>,
}

impl ChildCluster {
    /// `every_node` goes to the controller and the brokers; `brokers_only` to the brokers.
    pub fn start(binary: &str, brokers: i32, every_node: &[(&str, String)], brokers_only: &[(&str, String)]) -> Self {
        let dirs: Vec<tempfile::TempDir> = (0..=brokers).map(|_| tempfile::tempdir().expect("temp dir")).collect();
        let controller_addr = free_port();
        let mut settings = every_node.to_vec();
        settings.extend([
            ("node.id", "100".to_string()),
            ("process.roles", "controller".to_string()),
            ("listeners", format!("CONTROLLER://{controller_addr}")),
        ]);
        let controller = ChildBroker::start_node(binary, controller_addr, dirs[0].path(), &settings);
        let mut started = std::collections::BTreeMap::new();
        for node in 1..=brokers {
            let addr = free_port();
            let mut settings = every_node.to_vec();
            settings.extend_from_slice(brokers_only);
            settings.extend([
                ("node.id", node.to_string()),
                ("process.roles", "broker".to_string()),
                ("listeners", format!("PLAINTEXT://{addr}")),
                ("controller.quorum.voters", format!("100@{controller_addr}")),
            ]);
            started.insert(node, ChildBroker::start_node(binary, addr, dirs[node as usize].path(), &settings));
        }
        ChildCluster { controller, brokers: started, _dirs: dirs }
    }

    /// Every broker's address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.brokers.values().map(|b| b.addr.to_string()).collect::<Vec<_>>().join(",")
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Python interpreter of the venv that `cargo xtest` sets up.
pub fn python() -> PathBuf {
    match std::env::var_os("GREGOR_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => panic!("GREGOR_PYTHON is not set: run the real-client tier with `cargo xtest real`, which creates the venv with kafka-python"),
    }
}

/// kcat, as `cargo xtest` provides it (the one on the PATH, or Debian's, unpacked in `.kcat`).
pub fn kcat() -> PathBuf {
    match std::env::var_os("GREGOR_KCAT") {
        Some(path) => PathBuf::from(path),
        None => panic!("GREGOR_KCAT is not set: run the real-client tier with `cargo xtest real`, which provides kcat"),
    }
}

/// A script in `tests/python`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

/// Runs a command, killing it if it runs longer than `timeout` (then the test fails).
pub fn run_bounded(command: &mut Command, timeout: Duration) -> Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "{command:?} ran longer than {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command that does not end by itself (a consumer loop) until its stdout satisfies
/// `done`, lets it run `settle` longer (say, for an auto-commit), then kills it (SIGKILL, as a
/// crash would) and returns its stdout. Panics if `done` does not hold within `timeout`.
pub fn run_until(command: &mut Command, done: impl Fn(&str) -> bool, settle: Duration, timeout: Duration) -> String {
    let mut child =
        command.env("PYTHONUNBUFFERED", "1").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let collect = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let reader = std::thread::spawn(move || {
            let Some(mut pipe) = pipe else { return };
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (buffer, reader)
    };
    use std::io::Read;
    let (stdout, out_reader) = collect(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let (stderr, err_reader) = collect(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let text = |buffer: &Arc<std::sync::Mutex<Vec<u8>>>| String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned();
    let deadline = Instant::now() + timeout;
    let mut satisfied = false;
    while Instant::now() < deadline {
        if done(&text(&stdout)) {
            satisfied = true;
            std::thread::sleep(settle);
            break;
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = (out_reader.join(), err_reader.join());
    let (out, err) = (text(&stdout), text(&stderr));
    assert!(satisfied, "{command:?} did not get there within {timeout:?}\nstdout:\n{out}\nstderr:\n{err}");
    out
}

#[cfg(not(madsim))]
pub mod rdkafka_util;
