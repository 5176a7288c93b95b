//! The broker over the wire, with a protocol-level client: what a Kafka client sees, including
//! bad input. Each test starts a broker on port 0 with a fresh data directory.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real files in a temp dir: these tests never run simulated

mod common;

use common::{batch, create_topic, fetch, name, produce, values_of};

use broker::protocol::client::{encode_batch, BatchRecord, Connection};
use broker::server::BrokerHandle;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::Compression;
use std::time::Duration;
use tokio::net::TcpStream;

struct TestBroker {
    handle: Option<BrokerHandle>,
    dir: tempfile::TempDir,
}

impl TestBroker {
    async fn start(overrides: &[(&str, &str)]) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let handle = common::start_in(dir.path(), overrides).await;
        TestBroker { handle: Some(handle), dir }
    }

    fn addr(&self) -> String {
        self.handle.as_ref().unwrap().local_addr.to_string()
    }

    async fn connect(&self) -> Connection<TcpStream> {
        let mut conn = Connection::connect(&self.addr(), "server-test").await.unwrap();
        conn.request_timeout = Duration::from_secs(20);
        conn
    }

    /// Clean shutdown, then a new broker on the same directory.
    async fn restart(&mut self, overrides: &[(&str, &str)]) {
        self.handle.take().unwrap().shutdown().await.unwrap();
        self.handle = Some(common::start_in(self.dir.path(), overrides).await);
    }
}

async fn list_offset(conn: &mut Connection<TcpStream>, topic: &str, timestamp: i64) -> (i16, i64) {
    let request =
        ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp)])]);
    match conn.send(ApiKey::ListOffsets, 7, RequestKind::ListOffsets(request)).await.unwrap() {
        ResponseKind::ListOffsets(r) => (r.topics[0].partitions[0].error_code, r.topics[0].partitions[0].offset),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn records_produced_are_fetched_back_in_order_with_every_compression() {
    let broker = TestBroker::start(&[]).await;
    let mut conn = broker.connect().await;
    assert_eq!(create_topic(&mut conn, "events", 1, &[]).await, 0);
    let mut expected = Vec::new();
    for (round, compression) in
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
            .into_iter()
            .enumerate()
    {
        let values: Vec<String> = (0..3).map(|i| format!("r{round}-v{i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let (error, base_offset) = produce(&mut conn, "events", 0, 1, batch(&refs, None, compression)).await;
        assert_eq!(error, 0, "{compression:?}");
        assert_eq!(base_offset, round as i64 * 3);
        expected.extend(values.into_iter().enumerate().map(|(i, v)| (round as i64 * 3 + i as i64, v)));
    }
    let data = fetch(&mut conn, "events", 0, 0, 0, 0).await;
    assert_eq!(data.error_code, 0);
    assert_eq!(data.high_watermark, 15);
    assert_eq!(values_of(&data.records), expected);
    assert_eq!(list_offset(&mut conn, "events", -2).await, (0, 0));
    assert_eq!(list_offset(&mut conn, "events", -1).await, (0, 15));
    assert_eq!(list_offset(&mut conn, "events", 1_700_000_000_001).await, (0, 1));
}

#[tokio::test]
async fn idempotent_retry_gets_the_original_offset_and_a_gap_is_refused() {
    let broker = TestBroker::start(&[]).await;
    let mut conn = broker.connect().await;
    let producer_id = match conn
        .send(
            ApiKey::InitProducerId,
            4,
            RequestKind::InitProducerId(
                InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            ),
        )
        .await
        .unwrap()
    {
        ResponseKind::InitProducerId(r) => {
            assert_eq!(r.error_code, 0);
            r.producer_id.0
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(create_topic(&mut conn, "idem", 1, &[]).await, 0);
    let first = batch(&["a", "b"], Some((producer_id, 0, 0)), Compression::None);
    assert_eq!(produce(&mut conn, "idem", 0, -1, first.clone()).await, (0, 0));
    assert_eq!(
        produce(&mut conn, "idem", 0, -1, batch(&["c"], Some((producer_id, 0, 2)), Compression::None)).await,
        (0, 2)
    );
    // The retry of the first batch is answered with its original offset and not stored again.
    assert_eq!(produce(&mut conn, "idem", 0, -1, first).await, (0, 0));
    // Sequence 5 after 2: a gap.
    assert_eq!(
        produce(&mut conn, "idem", 0, -1, batch(&["x"], Some((producer_id, 0, 5)), Compression::None)).await.0,
        45
    );
    assert_eq!(list_offset(&mut conn, "idem", -1).await, (0, 3));
}

#[tokio::test]
async fn a_corrupt_or_oversized_batch_is_refused_and_never_stored() {
    let broker = TestBroker::start(&[("message.max.bytes", "2000")]).await;
    let mut conn = broker.connect().await;
    assert_eq!(create_topic(&mut conn, "strict", 1, &[]).await, 0);
    let mut corrupt = BytesMut::from(&batch(&["hello"], None, Compression::None)[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(produce(&mut conn, "strict", 0, 1, corrupt.freeze()).await.0, 2, "CORRUPT_MESSAGE");
    let big = "x".repeat(5000);
    assert_eq!(
        produce(&mut conn, "strict", 0, 1, batch(&[&big], None, Compression::None)).await.0,
        10,
        "MESSAGE_TOO_LARGE"
    );
    assert_eq!(list_offset(&mut conn, "strict", -1).await, (0, 0));
    assert_eq!(produce(&mut conn, "strict", 0, 1, batch(&["fine"], None, Compression::None)).await, (0, 0));
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let broker = TestBroker::start(&[("socket.request.max.bytes", "4096")]).await;
    // Garbage body after a valid-looking Metadata header.
    let mut bad = broker.connect().await;
    bad.send_raw(&[0, 0, 0, 10, 0, 3, 0, 9, 0, 0, 0, 1, 0xff, 0xff]).await.unwrap();
    assert!(bad.read_raw().await.is_err(), "the broker closes a connection that sent garbage");
    // A frame larger than socket.request.max.bytes.
    let mut huge = broker.connect().await;
    huge.send_raw(&100_000i32.to_be_bytes()).await.unwrap();
    assert!(huge.read_raw().await.is_err());
    // A negative length.
    let mut negative = broker.connect().await;
    negative.send_raw(&(-5i32).to_be_bytes()).await.unwrap();
    assert!(negative.read_raw().await.is_err());
    // The broker still serves everyone else.
    let mut good = broker.connect().await;
    assert_eq!(create_topic(&mut good, "after-garbage", 1, &[]).await, 0);
}

#[tokio::test]
async fn api_versions_of_an_unknown_version_is_answered_with_v0_and_unsupported_version() {
    let broker = TestBroker::start(&[]).await;
    let mut conn = broker.connect().await;
    // ApiVersions v99, correlation id 7, client id "x".
    conn.send_raw(&[0, 0, 0, 11, 0, 18, 0, 99, 0, 0, 0, 7, 0, 1, b'x']).await.unwrap();
    let mut frame = conn.read_raw().await.unwrap();
    let header = ResponseHeader::decode(&mut frame, 0).unwrap();
    assert_eq!(header.correlation_id, 7);
    let body = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(body.error_code, 35);
    assert!(body.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16 && k.max_version == 9));
}

#[tokio::test]
async fn a_compacted_topic_keeps_the_newest_value_of_each_key_across_a_restart() {
    let overrides = [("log.cleaner.backoff.ms", "100")];
    let mut broker = TestBroker::start(&overrides).await;
    let mut conn = broker.connect().await;
    let configs = [("cleanup.policy", "compact"), ("segment.bytes", "100"), ("min.cleanable.dirty.ratio", "0.01")];
    assert_eq!(create_topic(&mut conn, "compacted", 1, &configs).await, 0);
    let keyed = |key: Option<String>, value: String| {
        let record = BatchRecord { key: key.map(Bytes::from), value: Some(Bytes::from(value)), timestamp: 1 };
        encode_batch(&[record], None, Compression::None)
    };
    for i in 0..30 {
        let (error, offset) =
            produce(&mut conn, "compacted", 0, -1, keyed(Some(format!("k{}", i % 3)), format!("v{i}"))).await;
        assert_eq!((error, offset), (0, i));
    }
    let (error, _) = produce(&mut conn, "compacted", 0, -1, keyed(None, "no key".to_string())).await;
    assert_eq!(error, 87, "INVALID_RECORD: a compacted topic needs keys");
    // One batch per segment: the last (29) is the active segment, never cleaned; below it the
    // newest of each key stays (k2's newest sealed one is 26).
    let expected: Vec<(i64, String)> = (26..30).map(|i| (i, format!("v{i}"))).collect();
    let mut found = Vec::new();
    for _ in 0..200 {
        found = values_of(&fetch(&mut conn, "compacted", 0, 0, 0, 0).await.records);
        if found == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found, expected, "the cleaner compacted the sealed segments");
    broker.restart(&overrides).await;
    let mut conn = broker.connect().await;
    let partition = fetch(&mut conn, "compacted", 0, 0, 0, 0).await;
    assert_eq!((values_of(&partition.records), partition.high_watermark), (expected, 30));
    // A consumer positioned inside what was removed reads on from the next record.
    assert_eq!(values_of(&fetch(&mut conn, "compacted", 0, 5, 0, 0).await.records)[0].0, 26);
}

#[tokio::test]
async fn create_topics_refuses_what_one_broker_cannot_honour() {
    let broker = TestBroker::start(&[]).await;
    let mut conn = broker.connect().await;
    assert_eq!(create_topic(&mut conn, "ok", 2, &[("retention.ms", "60000")]).await, 0);
    assert_eq!(create_topic(&mut conn, "ok", 2, &[]).await, 36, "TOPIC_ALREADY_EXISTS");
    assert_eq!(create_topic(&mut conn, "bad name!", 1, &[]).await, 17, "INVALID_TOPIC_EXCEPTION");
    assert_eq!(create_topic(&mut conn, "zero", 0, &[]).await, 37, "INVALID_PARTITIONS");
    assert_eq!(create_topic(&mut conn, "shredded", 1, &[("cleanup.policy", "shred")]).await, 40, "INVALID_CONFIG");
    assert_eq!(create_topic(&mut conn, "typo", 1, &[("retention.msx", "1")]).await, 40, "INVALID_CONFIG");
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("rf3"))
        .with_num_partitions(1)
        .with_replication_factor(3)]);
    match conn.send(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(request)).await.unwrap() {
        ResponseKind::CreateTopics(r) => assert_eq!(r.topics[0].error_code, 38, "INVALID_REPLICATION_FACTOR"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn acks_all_below_min_insync_replicas_is_refused() {
    let broker = TestBroker::start(&[]).await;
    let mut conn = broker.connect().await;
    assert_eq!(create_topic(&mut conn, "safe", 1, &[("min.insync.replicas", "2")]).await, 0);
    assert_eq!(
        produce(&mut conn, "safe", 0, -1, batch(&["v"], None, Compression::None)).await.0,
        19,
        "NOT_ENOUGH_REPLICAS"
    );
    assert_eq!(produce(&mut conn, "safe", 0, 1, batch(&["v"], None, Compression::None)).await, (0, 0));
}

#[tokio::test]
async fn read_committed_fetch_returns_the_lso_and_an_empty_aborted_list() {
    let broker = TestBroker::start(&[]).await;
    let mut conn = broker.connect().await;
    assert_eq!(create_topic(&mut conn, "rc", 1, &[]).await, 0);
    produce(&mut conn, "rc", 0, 1, batch(&["a", "b"], None, Compression::None)).await;
    let data = fetch(&mut conn, "rc", 0, 0, 0, 1).await;
    assert_eq!(data.last_stable_offset, 2);
    assert_eq!(data.aborted_transactions, Some(vec![]));
    assert_eq!(fetch(&mut conn, "rc", 0, 5, 0, 0).await.error_code, 1, "OFFSET_OUT_OF_RANGE");
    assert_eq!(fetch(&mut conn, "nope", 0, 0, 0, 0).await.error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
}

#[tokio::test]
async fn a_waiting_fetch_is_answered_when_data_arrives() {
    let broker = TestBroker::start(&[]).await;
    let mut setup = broker.connect().await;
    assert_eq!(create_topic(&mut setup, "poll", 1, &[]).await, 0);
    let mut consumer = broker.connect().await;
    let waiting = tokio::spawn(async move { fetch(&mut consumer, "poll", 0, 0, 15_000, 0).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    produce(&mut setup, "poll", 0, 1, batch(&["late"], None, Compression::None)).await;
    let data = waiting.await.unwrap();
    assert_eq!(values_of(&data.records), vec![(0, "late".to_string())]);
}

#[tokio::test]
async fn topics_and_records_survive_a_restart_and_deleted_topics_stay_deleted() {
    let mut broker = TestBroker::start(&[]).await;
    let mut conn = broker.connect().await;
    assert_eq!(create_topic(&mut conn, "kept", 3, &[]).await, 0);
    assert_eq!(create_topic(&mut conn, "dropped", 1, &[]).await, 0);
    produce(&mut conn, "kept", 2, 1, batch(&["x", "y"], None, Compression::Lz4)).await;
    let request = DeleteTopicsRequest::default().with_topic_names(vec![name("dropped")]).with_timeout_ms(5000);
    match conn.send(ApiKey::DeleteTopics, 5, RequestKind::DeleteTopics(request)).await.unwrap() {
        ResponseKind::DeleteTopics(r) => assert_eq!(r.responses[0].error_code, 0),
        other => panic!("{other:?}"),
    }
    drop(conn);
    broker.restart(&[("auto.create.topics.enable", "false")]).await;
    let mut conn = broker.connect().await;
    let data = fetch(&mut conn, "kept", 2, 0, 0, 0).await;
    assert_eq!(values_of(&data.records), vec![(0, "x".to_string()), (1, "y".to_string())]);
    let request = MetadataRequest::default().with_topics(None);
    match conn.send(ApiKey::Metadata, 12, RequestKind::Metadata(request)).await.unwrap() {
        ResponseKind::Metadata(r) => {
            let names: Vec<String> = r.topics.iter().map(|t| t.name.as_ref().unwrap().0.to_string()).collect();
            assert_eq!(names, vec!["kept"]);
            assert_eq!(r.topics[0].partitions.len(), 3);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn metadata_auto_creates_a_requested_topic_with_num_partitions() {
    let broker = TestBroker::start(&[("num.partitions", "4")]).await;
    let mut conn = broker.connect().await;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name("fresh")))]))
        .with_allow_auto_topic_creation(true);
    match conn.send(ApiKey::Metadata, 9, RequestKind::Metadata(request)).await.unwrap() {
        ResponseKind::Metadata(r) => {
            assert_eq!(r.topics[0].error_code, 0);
            assert_eq!(r.topics[0].partitions.len(), 4);
            assert_eq!(r.brokers[0].port, broker.handle.as_ref().unwrap().local_addr.port() as i32);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn acks_0_gets_no_response_but_the_records_are_stored() {
    let broker = TestBroker::start(&[]).await;
    let mut conn = broker.connect().await;
    assert_eq!(create_topic(&mut conn, "fire-and-forget", 1, &[]).await, 0);
    let request =
        ProduceRequest::default().with_acks(0).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
            .with_name(name("fire-and-forget"))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch(
                &["a", "b"],
                None,
                Compression::None,
            )))])]);
    conn.send_without_response(ApiKey::Produce, 9, RequestKind::Produce(request)).await.unwrap();
    // The next response on this connection is the ListOffsets answer, not a Produce answer.
    assert_eq!(list_offset(&mut conn, "fire-and-forget", -1).await, (0, 2));
}

#[tokio::test]
async fn an_unknown_partition_directory_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let ghost = dir.path().join("ghost-0");
    std::fs::create_dir_all(&ghost).unwrap();
    std::fs::write(ghost.join("00000000000000000000.log"), b"precious").unwrap();
    let handle = common::start_in(dir.path(), &[]).await;
    // Metadata has been replayed (the broker is unfenced) and the leftover scan has run.
    handle.shutdown().await.unwrap();
    let handle = common::start_in(dir.path(), &[]).await;
    handle.shutdown().await.unwrap();
    assert_eq!(std::fs::read(ghost.join("00000000000000000000.log")).unwrap(), b"precious");
}

#[tokio::test]
async fn offset_for_leader_epoch_answers_where_the_leaders_epoch_ends() {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    let broker = TestBroker::start(&[]).await;
    let mut conn = broker.connect().await;
    assert_eq!(create_topic(&mut conn, "epochs", 1, &[]).await, 0);
    produce(&mut conn, "epochs", 0, 1, batch(&["a", "b", "c"], None, Compression::None)).await;
    for (asked, expected) in [(0, (0, 0, 3)), (5, (0, -1, -1))] {
        let request = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            OffsetForLeaderTopic::default().with_topic(name("epochs")).with_partitions(vec![
                OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(0)
                    .with_leader_epoch(asked),
            ]),
        ]);
        match conn.send(ApiKey::OffsetForLeaderEpoch, 4, RequestKind::OffsetForLeaderEpoch(request)).await.unwrap() {
            ResponseKind::OffsetForLeaderEpoch(r) => {
                let p = &r.topics[0].partitions[0];
                assert_eq!((p.error_code, p.leader_epoch, p.end_offset), expected, "asked for epoch {asked}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_partition_that_cannot_open_is_its_own_problem_and_opens_once_its_file_is_readable() {
    let mut broker = TestBroker::start(&[]).await;
    let mut conn = broker.connect().await;
    assert_eq!(create_topic(&mut conn, "two", 2, &[]).await, 0);
    assert_eq!(produce(&mut conn, "two", 1, 1, batch(&["kept"], None, Compression::None)).await.0, 0);
    drop(conn);
    let metadata = broker.dir.path().join("two-1").join("partition.metadata");
    let original = std::fs::read(&metadata).unwrap();
    std::fs::write(&metadata, b"version: 0\ntopic_id: not-hex\n").unwrap();
    broker.restart(&[]).await;
    let mut conn = broker.connect().await;
    // Partition 1 answers KAFKA_STORAGE_ERROR; partition 0 (same directory, same disk) serves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (failed, served) = (
            produce(&mut conn, "two", 1, 1, batch(&["x"], None, Compression::None)).await.0,
            produce(&mut conn, "two", 0, 1, batch(&["y"], None, Compression::None)).await.0,
        );
        if (failed, served) == (56, 0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "got {failed} and {served}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The file is readable again: the replica opens on its next try, with its data.
    std::fs::write(&metadata, original).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while fetch(&mut conn, "two", 1, 0, 0, 0).await.error_code != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the replica never opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(values_of(&fetch(&mut conn, "two", 1, 0, 0, 0).await.records), vec![(0, "kept".to_string())]);
}
