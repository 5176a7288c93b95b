//! The hostile-frame catalogue against a broker *process* on localhost:9092: librdkafka writes
//! records first; then huge counts at every position of every advertised request, every
//! truncation of every request, half-sent frames, idle connections and a connection flood past
//! `max.connections`. The process must stay up, close what it should within its deadlines, and
//! then serve kafka-python and librdkafka normally, with every record acknowledged before the
//! attack still readable.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real threads, processes, files and clocks: never simulated

use broker::protocol::hostile::{extreme_count_variants, sample_frames};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::rdkafka_util::{client_config, read_to_end};
use tests::{python, python_script, run_bounded, ChildBroker};

const IDLE_MS: u64 = 2_000;
const IO_TIMEOUT_MS: u64 = 1_000;
const MAX_CONNECTIONS: usize = 64;
const RECORDS_BEFORE: usize = 2_000;

#[derive(Debug, PartialEq)]
enum Answer {
    Frame,
    Closed,
    Silent,
}

/// Writes `bytes`, then waits up to `wait` for a response frame or the close.
fn exchange(stream: &mut TcpStream, bytes: &[u8], wait: Duration) -> Answer {
    if stream.write_all(bytes).and_then(|_| stream.flush()).is_err() {
        return Answer::Closed;
    }
    read_answer(stream, wait)
}

fn read_answer(stream: &mut TcpStream, wait: Duration) -> Answer {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Answer::Silent,
        Err(_) => return Answer::Closed,
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    match stream.read_exact(&mut body) {
        Ok(()) => Answer::Frame,
        Err(_) => Answer::Closed,
    }
}

fn framed(frame: &[u8]) -> Vec<u8> {
    let mut bytes = (frame.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(frame);
    bytes
}

/// Sends each frame on a connection, opening a new one whenever the broker closed the last.
/// Returns (answered, closed, silent).
fn send_all(addr: SocketAddr, frames: impl Iterator<Item = Vec<u8>>) -> (usize, usize, usize) {
    let (mut answered, mut closed, mut silent) = (0, 0, 0);
    let mut stream = TcpStream::connect(addr).unwrap();
    for frame in frames {
        match exchange(&mut stream, &frame, Duration::from_millis(500)) {
            Answer::Frame => answered += 1,
            answer => {
                if answer == Answer::Closed {
                    closed += 1;
                } else {
                    silent += 1;
                }
                stream = TcpStream::connect(addr).unwrap();
            }
        }
    }
    (answered, closed, silent)
}

#[test]
fn a_catalogue_of_hostile_frames_leaves_the_broker_serving_real_clients_with_all_data() {
    let broker_binary = env!("CARGO_BIN_EXE_gregor-broker");
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.1:9092".parse().unwrap();
    let overrides = [
        ("num.partitions", "2".to_string()),
        ("connections.max.idle.ms", IDLE_MS.to_string()),
        ("socket.io.timeout.ms", IO_TIMEOUT_MS.to_string()),
        ("max.connections", MAX_CONNECTIONS.to_string()),
        // A mutated JoinGroup that still decodes joins a group: without the initial delay its
        // answer comes at once instead of after the 500 ms the catalogue waits per frame.
        ("group.initial.rebalance.delay.ms", "0".to_string()),
    ];
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut broker = ChildBroker::start(broker_binary, addr, dir.path(), &overrides);
    let bootstrap = addr.to_string();

    // Data acknowledged before the attack.
    let producer: FutureProducer =
        client_config(&bootstrap).set("enable.idempotence", "true").set("acks", "all").create().unwrap();
    let mut acked = BTreeSet::new();
    for i in 0..RECORDS_BEFORE {
        let payload = format!("before-{i:05}");
        let delivery = futures::executor::block_on(
            producer.send(FutureRecord::<(), _>::to("before-attack").payload(&payload), Duration::from_secs(10)),
        )
        .expect("acknowledged");
        acked.insert((delivery.partition, delivery.offset, payload));
    }
    drop(producer);

    // Huge counts and lengths at every position of every advertised request.
    let samples = sample_frames("hostile-topic");
    let started = Instant::now();
    let extremes = samples.iter().flat_map(extreme_count_variants).map(|f| framed(&f));
    let (answered, closed, silent) = send_all(addr, extremes);
    eprintln!("extreme counts: {answered} answered, {closed} closed, {silent} silent, in {:?}", started.elapsed());
    assert!(closed > 1_000 && answered > 1_000, "both outcomes happen: {answered} answered, {closed} closed");
    // Every truncation of every request (the length prefix says what was sent).
    let truncated = samples.iter().flat_map(|s| (0..s.frame.len()).map(move |cut| framed(&s.frame[..cut])));
    let (answered, closed, silent) = send_all(addr, truncated);
    eprintln!("truncations: {answered} answered, {closed} closed, {silent} silent");
    assert!(broker.is_running(), "the broker process died");

    // Half-sent frames and idle connections are closed within their deadlines.
    let started = Instant::now();
    let mut half_sent: Vec<TcpStream> = (0..16)
        .map(|i| {
            let mut stream = TcpStream::connect(addr).unwrap();
            let frame = framed(&samples[i % samples.len()].frame);
            stream.write_all(&frame[..frame.len() / 2]).unwrap();
            stream
        })
        .collect();
    let mut idle: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for stream in &mut half_sent {
        assert_eq!(read_answer(stream, Duration::from_millis(IO_TIMEOUT_MS * 5)), Answer::Closed);
    }
    assert!(started.elapsed() < Duration::from_millis(IO_TIMEOUT_MS * 5), "half-sent frames closed late");
    for stream in &mut idle {
        assert_eq!(read_answer(stream, Duration::from_millis(IDLE_MS * 5)), Answer::Closed);
    }
    assert!(started.elapsed() >= Duration::from_millis(IDLE_MS), "idle connections closed early");

    // A connection flood past max.connections: the extra ones are closed at once.
    let api_versions = framed(&samples.iter().find(|s| s.api_key as i16 == 18 && s.version == 3).unwrap().frame);
    let mut flood: Vec<TcpStream> = (0..MAX_CONNECTIONS * 2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let outcomes: Vec<Answer> =
        flood.iter_mut().map(|stream| exchange(stream, &api_versions, Duration::from_secs(5))).collect();
    let served = outcomes.iter().filter(|a| **a == Answer::Frame).count();
    let refused = outcomes.iter().filter(|a| **a == Answer::Closed).count();
    assert!(served <= MAX_CONNECTIONS && refused >= MAX_CONNECTIONS, "{served} served, {refused} refused");
    drop(flood);
    assert!(broker.is_running(), "the broker process died");

    // Real clients, as usual: kafka-python round-trips, librdkafka reads everything from before.
    std::thread::sleep(Duration::from_millis(500)); // the flood's slots are freed asynchronously
    let output = run_bounded(
        Command::new(python()).arg(python_script("idempotent_round_trip.py")).args(["after-attack", "1000"]),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ok: 1000 records over 3 partitions"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read = read_to_end(&bootstrap, "before-attack", 2, Duration::from_secs(60));
    let stored: BTreeSet<(i32, i64, String)> =
        read.iter().map(|(p, o, _, v)| (*p, *o, String::from_utf8(v.clone()).unwrap())).collect();
    assert_eq!(stored, acked, "every record acknowledged before the attack, once, where it was acknowledged");
}
