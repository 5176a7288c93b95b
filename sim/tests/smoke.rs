//! The real broker, unchanged, as a madsim node: a client node creates a topic, produces and
//! fetches over simulated TCP; then the broker node is killed, its disk loses everything that
//! was not fsynced, and the restarted broker still has every record (flush.messages=1).
#![cfg(madsim)]

use broker::protocol::client::{encode_batch, BatchRecord, Connection};
use broker::server::{self, BrokerConfig};
use broker::storage::mem::MemDisk;
use broker::storage::Disk;
use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use madsim::runtime::Handle;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

const BROKER_ADDR: &str = "10.0.0.1:9092";

fn broker_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.set("listeners", &format!("PLAINTEXT://{BROKER_ADDR}")).unwrap();
    config.set("log.dirs", "/data").unwrap();
    config.set("log.flush.interval.messages", "1").unwrap();
    config
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn batch(values: &[String]) -> Bytes {
    let records: Vec<BatchRecord> =
        values.iter().map(|v| BatchRecord { key: None, value: Some(Bytes::from(v.clone())), timestamp: 0 }).collect();
    encode_batch(&records, None, Compression::None)
}

async fn connect() -> Connection<TcpStream> {
    // The broker may still be starting (or restarting): retry the connect for a while.
    for _ in 0..100 {
        if let Ok(mut conn) = Connection::connect(BROKER_ADDR, "sim-smoke").await {
            conn.request_timeout = Duration::from_secs(5);
            return conn;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("broker never accepted a connection");
}

async fn fetch_all(conn: &mut Connection<TcpStream>) -> Vec<String> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(name("smoke")).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20),
        ])]);
    let ResponseKind::Fetch(response) = conn.send(ApiKey::Fetch, 12, RequestKind::Fetch(request)).await.unwrap() else {
        panic!()
    };
    let mut records = response.responses[0].partitions[0].records.clone().unwrap_or_default();
    let mut values = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut records).unwrap() {
        values.extend(set.records.into_iter().map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()));
    }
    values
}

#[madsim::test]
async fn broker_keeps_fsynced_records_through_a_crash_inside_the_simulator() {
    let handle = Handle::current();
    let disk = MemDisk::new();
    let node_disk = disk.clone();
    let broker_node = handle
        .create_node()
        .name("broker-1")
        .ip("10.0.0.1".parse().unwrap())
        .init(move || {
            let disk: Arc<dyn Disk> = Arc::new(node_disk.clone());
            async move {
                let _handle = server::start(broker_config(), disk).await.expect("broker starts");
                std::future::pending::<()>().await;
            }
        })
        .build();
    let client = handle.create_node().name("client").ip("10.0.0.2".parse().unwrap()).build();

    let values: Vec<String> = (0..20).map(|i| format!("value-{i}")).collect();
    let sent = values.clone();
    client
        .spawn(async move {
            let mut conn = connect().await;
            let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(name("smoke"))
                .with_num_partitions(1)
                .with_replication_factor(1)]);
            let ResponseKind::CreateTopics(created) =
                conn.send(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(request)).await.unwrap()
            else {
                panic!()
            };
            assert_eq!(created.topics[0].error_code, 0);
            for chunk in sent.chunks(5) {
                let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
                    TopicProduceData::default().with_name(name("smoke")).with_partition_data(vec![
                        PartitionProduceData::default().with_index(0).with_records(Some(batch(chunk))),
                    ]),
                ]);
                let ResponseKind::Produce(produced) =
                    conn.send(ApiKey::Produce, 9, RequestKind::Produce(request)).await.unwrap()
                else {
                    panic!()
                };
                assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
            }
            assert_eq!(fetch_all(&mut conn).await, sent);
        })
        .await
        .unwrap();

    // Power loss: the process dies and the disk keeps only what was fsynced.
    handle.kill(broker_node.id());
    disk.crash();
    handle.restart(broker_node.id());

    let after = client.spawn(async move { fetch_all(&mut connect().await).await }).await.unwrap();
    assert_eq!(after, values, "every acknowledged record survives (flush.messages=1)");
}
