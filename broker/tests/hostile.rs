//! Hostile input over the wire, against one in-process broker: each bad frame gets an error or
//! a closed connection, every named limit is enforced, and the broker keeps serving everyone
//! else. (The catalogue against a broker *process* with real clients is `tests/tests/real_hostile.rs`.)
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real files in a temp dir: these tests never run simulated

mod common;

use broker::protocol::client::Connection;
use broker::protocol::hostile::{encode_request, extreme_count_variants, sample_frames, Mutator};
use broker::server;
use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one frame (length prefix added) on a raw socket.
async fn send_frame(stream: &mut TcpStream, frame: &[u8]) {
    let mut bytes = (frame.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(frame);
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();
}

/// What comes back on a raw socket within `wait`: a response frame, or the connection closed.
#[derive(Debug)]
enum Answer {
    Frame(Bytes),
    Closed,
    Nothing,
}

async fn answer(stream: &mut TcpStream, wait: Duration) -> Answer {
    let read = async {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return Answer::Closed;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        match stream.read_exact(&mut body).await {
            Ok(_) => Answer::Frame(Bytes::from(body)),
            Err(_) => Answer::Closed,
        }
    };
    tokio::time::timeout(wait, read).await.unwrap_or(Answer::Nothing)
}

/// A valid client still gets served.
async fn still_serves(addr: &str) {
    let mut conn = Connection::connect(addr, "survivor").await.unwrap();
    conn.request_timeout = Duration::from_secs(10);
    match conn.send(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default())).await.unwrap() {
        ResponseKind::Metadata(m) => assert_eq!(m.brokers.len(), 1),
        other => panic!("{other:?}"),
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_eighteen_byte_metadata_frame_closes_only_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start_in(dir.path(), &[]).await;
    let addr = broker.local_addr.to_string();
    let mut bystander = Connection::connect(&addr, "bystander").await.unwrap();
    let mut attacker = TcpStream::connect(&addr).await.unwrap();
    attacker.write_all(&hex("0000000e000300010000000 7ffff7fffffff")).await.unwrap();
    attacker.flush().await.unwrap();
    assert!(matches!(answer(&mut attacker, WAIT).await, Answer::Closed));
    // The connection opened before the attack still works, and so do new ones.
    bystander.request_timeout = WAIT;
    bystander.send(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default())).await.unwrap();
    still_serves(&addr).await;
    broker.shutdown().await.unwrap();
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

#[tokio::test]
async fn a_malformed_body_gets_invalid_request_where_the_api_has_an_error_code_and_a_close_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start_in(dir.path(), &[]).await;
    let addr = broker.local_addr.to_string();
    for (api_key, version, expect_answer) in [
        (ApiKey::InitProducerId, 4, true),
        (ApiKey::Fetch, 12, true),
        (ApiKey::Produce, 9, false),
        (ApiKey::Metadata, 9, false),
    ] {
        let sample = sample_frames("t").into_iter().find(|s| s.api_key == api_key && s.version == version).unwrap();
        // The header, then a body cut to one byte.
        let frame = &sample.frame[..sample.body_start + 1];
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        send_frame(&mut stream, frame).await;
        match (answer(&mut stream, WAIT).await, expect_answer) {
            (Answer::Frame(mut frame), true) => {
                let header_version = api_key.response_header_version(version);
                let header = ResponseHeader::decode(&mut frame, header_version).unwrap();
                assert_eq!(header.correlation_id, 7);
                let error_code = match ResponseKind::decode(api_key, &mut frame, version).unwrap() {
                    ResponseKind::InitProducerId(r) => r.error_code,
                    ResponseKind::Fetch(r) => r.error_code,
                    other => panic!("{other:?}"),
                };
                assert_eq!(error_code, 42, "INVALID_REQUEST for {api_key:?}");
            }
            (Answer::Closed, false) => {}
            (other, _) => panic!("{api_key:?} v{version}: {other:?}"),
        }
    }
    still_serves(&addr).await;
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_version_the_broker_does_not_serve_gets_unsupported_version_or_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start_in(dir.path(), &[]).await;
    let addr = broker.local_addr.to_string();
    let fetch_v13 = encode_request(ApiKey::Fetch, 13, 9, &RequestKind::Fetch(FetchRequest::default())).0;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    send_frame(&mut stream, &fetch_v13).await;
    let Answer::Frame(mut frame) = answer(&mut stream, WAIT).await else { panic!("Fetch v13 must be answered") };
    ResponseHeader::decode(&mut frame, ApiKey::Fetch.response_header_version(13)).unwrap();
    let ResponseKind::Fetch(response) = ResponseKind::decode(ApiKey::Fetch, &mut frame, 13).unwrap() else { panic!() };
    assert_eq!(response.error_code, 35);
    let produce_v10 = encode_request(ApiKey::Produce, 10, 9, &RequestKind::Produce(ProduceRequest::default())).0;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    send_frame(&mut stream, &produce_v10).await;
    assert!(matches!(answer(&mut stream, WAIT).await, Answer::Closed));
    still_serves(&addr).await;
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn half_sent_frames_idle_connections_and_oversized_frames_are_closed_within_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start_in(
        dir.path(),
        &[("socket.io.timeout.ms", "300"), ("connections.max.idle.ms", "600"), ("socket.request.max.bytes", "4096")],
    )
    .await;
    let addr = broker.local_addr.to_string();
    // A length prefix of 100 and 10 bytes of body, then silence.
    let mut half_sent = TcpStream::connect(&addr).await.unwrap();
    half_sent.write_all(&[0, 0, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).await.unwrap();
    half_sent.flush().await.unwrap();
    let started = Instant::now();
    assert!(matches!(answer(&mut half_sent, WAIT).await, Answer::Closed));
    assert!(started.elapsed() < Duration::from_secs(3), "closed after {:?}", started.elapsed());
    // An idle connection.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    assert!(matches!(answer(&mut idle, WAIT).await, Answer::Closed));
    assert!(started.elapsed() >= Duration::from_millis(500), "closed too early: {:?}", started.elapsed());
    // A frame over socket.request.max.bytes is refused from its length alone.
    let mut oversized = TcpStream::connect(&addr).await.unwrap();
    oversized.write_all(&5000u32.to_be_bytes()).await.unwrap();
    oversized.flush().await.unwrap();
    assert!(matches!(answer(&mut oversized, Duration::from_millis(250)).await, Answer::Closed));
    still_serves(&addr).await;
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_past_max_connections_and_per_ip_are_refused_until_one_closes() {
    for key in ["max.connections", "max.connections.per.ip"] {
        let dir = tempfile::tempdir().unwrap();
        let broker = common::start_in(dir.path(), &[(key, "3")]).await;
        let addr = broker.local_addr.to_string();
        let mut open = Vec::new();
        for _ in 0..3 {
            let mut conn = Connection::connect(&addr, "holder").await.unwrap();
            conn.request_timeout = WAIT;
            conn.send(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default())).await.unwrap();
            open.push(conn);
        }
        let mut flood = Vec::new();
        for _ in 0..20 {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            let (frame, _) =
                encode_request(ApiKey::ApiVersions, 3, 1, &RequestKind::ApiVersions(ApiVersionsRequest::default()));
            send_frame(&mut stream, &frame).await;
            flood.push(stream);
        }
        for stream in &mut flood {
            assert!(matches!(answer(stream, WAIT).await, Answer::Closed), "{key}");
        }
        drop(open.pop());
        // The freed slot is taken back (the broker notices the close asynchronously).
        let deadline = Instant::now() + WAIT;
        loop {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            let (frame, _) =
                encode_request(ApiKey::ApiVersions, 3, 1, &RequestKind::ApiVersions(ApiVersionsRequest::default()));
            send_frame(&mut stream, &frame).await;
            if let Answer::Frame(_) = answer(&mut stream, WAIT).await {
                break;
            }
            assert!(Instant::now() < deadline, "{key}: a slot never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        broker.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_request_waits_while_queued_request_bytes_are_held_by_a_half_sent_frame() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start_in(
        dir.path(),
        &[("socket.request.max.bytes", "1000"), ("queued.max.request.bytes", "1000"), ("socket.io.timeout.ms", "800")],
    )
    .await;
    let addr = broker.local_addr.to_string();
    let mut holder = TcpStream::connect(&addr).await.unwrap();
    holder.write_all(&[0, 0, 3, 0xe8, 0, 18]).await.unwrap(); // 1000 bytes announced, 2 sent
    holder.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut waiter = TcpStream::connect(&addr).await.unwrap();
    let (frame, _) =
        encode_request(ApiKey::ApiVersions, 3, 1, &RequestKind::ApiVersions(ApiVersionsRequest::default()));
    send_frame(&mut waiter, &frame).await;
    assert!(matches!(answer(&mut waiter, WAIT).await, Answer::Frame(_)));
    // Answered only once the holder's deadline released its 1000 bytes.
    assert!(started.elapsed() >= Duration::from_millis(500), "answered after {:?}", started.elapsed());
    assert!(matches!(answer(&mut holder, WAIT).await, Answer::Closed));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn create_topics_asking_for_more_than_one_operation_may_write_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start_in(dir.path(), &[]).await;
    let addr = broker.local_addr.to_string();
    let mut conn = Connection::connect(&addr, "admin").await.unwrap();
    conn.request_timeout = WAIT;
    let topic = |name: &str, partitions: i32, factor: i16| {
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(factor)
    };
    let request = CreateTopicsRequest::default().with_timeout_ms(5_000).with_topics(vec![
        topic("huge", i32::MAX, 1),
        topic("wide", 1, i16::MAX),
        topic("fits", 4, 1),
    ]);
    let ResponseKind::CreateTopics(response) =
        conn.send(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(request)).await.unwrap()
    else {
        panic!()
    };
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![44, 38, 0], "POLICY_VIOLATION, INVALID_REPLICATION_FACTOR, created");
    still_serves(&addr).await;
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_extreme_count_and_thousands_of_mutations_through_the_request_path_leave_the_broker_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start_in(dir.path(), &[]).await;
    let shared = broker.broker.clone().unwrap();
    let samples = sample_frames("hostile-topic");
    let mut frames = 0usize;
    let mut refused = 0usize;
    for sample in &samples {
        for frame in extreme_count_variants(sample).step_by(3) {
            frames += 1;
            refused += usize::from(!matches!(handle(&shared, frame).await, Handled::Answered));
        }
    }
    let mut mutator = Mutator::new(0x6e5e);
    for _ in 0..3_000 {
        let sample = &samples[mutator.below(samples.len())];
        let other = &samples[mutator.below(samples.len())];
        let frame = mutator.mutate(sample, other);
        frames += 1;
        refused += usize::from(!matches!(handle(&shared, frame).await, Handled::Answered));
    }
    assert!(refused > 0 && refused < frames, "{refused} of {frames}");
    still_serves(&broker.local_addr.to_string()).await;
    broker.shutdown().await.unwrap();
}

enum Handled {
    Answered,
    Refused,
    /// Still waiting (a mutated fetch may long-poll for its `max_wait_ms`): dropped.
    Waiting,
}

async fn handle(broker: &Arc<broker::server::Broker>, frame: Bytes) -> Handled {
    match tokio::time::timeout(Duration::from_millis(200), server::handle_frame(broker, frame, "/hostile")).await {
        Ok(Ok(_)) => Handled::Answered,
        Ok(Err(_)) => Handled::Refused,
        Err(_) => Handled::Waiting,
    }
}
