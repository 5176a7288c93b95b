//! What the over-the-wire tests share: starting a broker, and one call per Kafka request the
//! tests make.
#![allow(dead_code)] // each test file uses its own part

use broker::protocol::client::{encode_batch, BatchProducer, BatchRecord, Connection};
use broker::server::{self, BrokerConfig, BrokerHandle};
use broker::storage::real::RealDisk;
use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use std::sync::Arc;
use tokio::net::TcpStream;

/// A broker and its controller in this process, on port 0, storing in `dir`.
pub async fn start_in(dir: &std::path::Path, overrides: &[(&str, &str)]) -> BrokerHandle {
    let mut config = BrokerConfig::default();
    config.set("listeners", "PLAINTEXT://127.0.0.1:0").unwrap();
    config.set("log.dirs", dir.to_str().unwrap()).unwrap();
    for (key, value) in overrides {
        config.set(key, value).unwrap();
    }
    server::start(config, Arc::new(RealDisk)).await.unwrap()
}

pub fn batch(values: &[&str], producer: Option<(i64, i16, i32)>, compression: Compression) -> Bytes {
    let records: Vec<BatchRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| BatchRecord {
            key: Some(Bytes::from(format!("key-{v}"))),
            value: Some(Bytes::from(v.to_string())),
            timestamp: 1_700_000_000_000 + i as i64,
        })
        .collect();
    let producer = producer.map(|(producer_id, producer_epoch, base_sequence)| BatchProducer {
        producer_id,
        producer_epoch,
        base_sequence,
    });
    encode_batch(&records, producer, compression)
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub async fn create_topic(
    conn: &mut Connection<TcpStream>,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> i16 {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let request = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(configs)]);
    match conn.send(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(request)).await.unwrap() {
        ResponseKind::CreateTopics(r) => r.topics[0].error_code,
        other => panic!("{other:?}"),
    }
}

pub async fn produce(
    conn: &mut Connection<TcpStream>,
    topic: &str,
    partition: i32,
    acks: i16,
    records: Bytes,
) -> (i16, i64) {
    let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![
        TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![PartitionProduceData::default()
            .with_index(partition)
            .with_records(Some(records))]),
    ]);
    match conn.send(ApiKey::Produce, 9, RequestKind::Produce(request)).await.unwrap() {
        ResponseKind::Produce(r) => {
            let p = &r.responses[0].partition_responses[0];
            (p.error_code, p.base_offset)
        }
        other => panic!("{other:?}"),
    }
}

pub async fn fetch(
    conn: &mut Connection<TcpStream>,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    isolation_level: i8,
) -> fetch_response::PartitionData {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation_level)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20),
        ])]);
    match conn.send(ApiKey::Fetch, 12, RequestKind::Fetch(request)).await.unwrap() {
        ResponseKind::Fetch(r) => r.responses[0].partitions[0].clone(),
        other => panic!("{other:?}"),
    }
}

pub fn values_of(records: &Option<Bytes>) -> Vec<(i64, String)> {
    let mut buf = records.clone().unwrap_or_default();
    let mut out = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut buf).unwrap() {
        for record in set.records {
            out.push((record.offset, String::from_utf8(record.value.unwrap().to_vec()).unwrap()));
        }
    }
    out
}
