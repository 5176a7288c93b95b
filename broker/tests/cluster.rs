//! A controller and three brokers in one process (real network, real files): replication,
//! acks=all, ISR changes and failover as a client sees them.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real files in a temp dir: these tests never run simulated

use broker::protocol::client::{encode_batch, BatchRecord, Connection};
use broker::server::{self, BrokerConfig, BrokerHandle};
use broker::storage::real::RealDisk;
use broker::types::TopicPartition;
use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

const FAST: &[(&str, &str)] = &[
    ("broker.heartbeat.interval.ms", "100"),
    ("broker.session.timeout.ms", "1000"),
    ("replica.lag.time.max.ms", "1000"),
    ("replica.fetch.wait.max.ms", "100"),
];

struct Cluster {
    controller: BrokerHandle,
    brokers: Vec<Option<BrokerHandle>>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn start_node(dir: &std::path::Path, settings: &[(&str, &str)]) -> BrokerHandle {
    let mut config = BrokerConfig::default();
    config.set("log.dirs", dir.to_str().unwrap()).unwrap();
    for (key, value) in FAST.iter().chain(settings) {
        config.set(key, value).unwrap();
    }
    server::start(config, Arc::new(RealDisk)).await.unwrap()
}

impl Cluster {
    async fn start(extra: &[(&str, &str)]) -> Cluster {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut controller_settings =
            vec![("node.id", "100"), ("process.roles", "controller"), ("listeners", "CONTROLLER://127.0.0.1:0")];
        controller_settings.extend_from_slice(extra);
        let controller = start_node(dirs[0].path(), &controller_settings).await;
        let voter = format!("100@{}", controller.controller_addr.unwrap());
        let mut brokers = Vec::new();
        for (node, dir) in dirs.iter().enumerate().skip(1) {
            let id = node.to_string();
            let settings = [
                ("node.id", id.as_str()),
                ("process.roles", "broker"),
                ("listeners", "PLAINTEXT://127.0.0.1:0"),
                ("controller.quorum.voters", voter.as_str()),
            ];
            brokers.push(Some(start_node(dir.path(), &settings).await));
        }
        Cluster { controller, brokers, _dirs: dirs }
    }

    fn addr(&self, node: i32) -> String {
        self.brokers[node as usize - 1].as_ref().unwrap().local_addr.to_string()
    }

    fn any_live(&self) -> String {
        self.brokers.iter().flatten().next().unwrap().local_addr.to_string()
    }

    /// The partition's leader and ISR as the controller has them.
    fn leadership(&self, topic: &str) -> (i32, Vec<i32>, i32) {
        let controller = self.controller.controller.as_ref().unwrap().lock().unwrap();
        let p = controller.image().partition(topic, 0).unwrap();
        (p.leader, p.isr.clone(), p.leader_epoch)
    }

    /// The ISR of partition 0 as broker `node` itself has replayed it (it learns a change a
    /// moment after the controller committed it).
    fn isr_seen_by(&self, node: i32, topic: &str) -> Vec<i32> {
        let handle = self.brokers[node as usize - 1].as_ref().unwrap();
        let partition = handle.broker.as_ref().unwrap().partition(&TopicPartition::new(topic, 0)).unwrap();
        let isr = partition.lock().image().isr.clone();
        isr
    }
}

async fn connect(addr: &str) -> Connection<TcpStream> {
    let mut conn = Connection::connect(addr, "cluster-test").await.unwrap();
    conn.request_timeout = Duration::from_secs(20);
    conn
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn create_topic(conn: &mut Connection<TcpStream>, topic: &str, factor: i16, min_isr: &str) -> i16 {
    let request = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(1)
        .with_replication_factor(factor)
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("min.insync.replicas"))
            .with_value(Some(StrBytes::from_string(min_isr.to_string())))])]);
    match conn.send(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(request)).await.unwrap() {
        ResponseKind::CreateTopics(r) => r.topics[0].error_code,
        other => panic!("{other:?}"),
    }
}

async fn produce(conn: &mut Connection<TcpStream>, topic: &str, value: &str, acks: i16) -> (i16, i64) {
    let records = encode_batch(
        &[BatchRecord { key: None, value: Some(Bytes::from(value.to_string())), timestamp: 1_700_000_000_000 }],
        None,
        Compression::None,
    );
    let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(5_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))]),
    ]);
    match conn.send(ApiKey::Produce, 9, RequestKind::Produce(request)).await.unwrap() {
        ResponseKind::Produce(r) => {
            let p = &r.responses[0].partition_responses[0];
            (p.error_code, p.base_offset)
        }
        other => panic!("{other:?}"),
    }
}

/// Values at offsets `[from, ..)` read from `addr` (which must lead), with the HW.
async fn fetch_values(addr: &str, topic: &str) -> (i16, i64, Vec<String>) {
    let mut conn = connect(addr).await;
    let request =
        FetchRequest::default().with_replica_id(BrokerId(-1)).with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(
            vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_current_leader_epoch(-1)
                .with_partition_max_bytes(1 << 20)])],
        );
    match conn.send(ApiKey::Fetch, 12, RequestKind::Fetch(request)).await.unwrap() {
        ResponseKind::Fetch(r) => {
            let p = &r.responses[0].partitions[0];
            let mut values = Vec::new();
            if let Some(mut records) = p.records.clone() {
                for batch in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).unwrap() {
                    for record in batch.records {
                        values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
                    }
                }
            }
            (p.error_code, p.high_watermark, values)
        }
        other => panic!("{other:?}"),
    }
}

/// Waits until `condition` holds (checked every 50 ms), at most 20 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..400 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Produces until the leader (as the client finds it) takes it, for at most 20 s.
async fn produce_to_leader(cluster: &Cluster, topic: &str, value: &str, acks: i16) -> (i16, i64) {
    let mut last = (0, 0);
    for _ in 0..200 {
        let (leader, _, _) = cluster.leadership(topic);
        if leader > 0 && cluster.brokers[leader as usize - 1].is_some() {
            let mut conn = connect(&cluster.addr(leader)).await;
            last = produce(&mut conn, topic, value, acks).await;
            if last.0 == 0 {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_writes_reach_every_replica_and_survive_a_leader_shutdown() {
    let mut cluster = Cluster::start(&[]).await;
    let mut conn = connect(&cluster.any_live()).await;
    assert_eq!(create_topic(&mut conn, "orders", 3, "2").await, 0);
    for i in 0..20 {
        let (code, offset) = produce_to_leader(&cluster, "orders", &format!("v{i}"), -1).await;
        assert_eq!((code, offset), (0, i), "acks=all write {i}");
    }
    let (leader, isr, epoch) = cluster.leadership("orders");
    assert_eq!(isr.len(), 3);
    // Every replica holds the acknowledged records.
    for broker in cluster.brokers.iter().flatten() {
        let observed = broker.broker.as_ref().unwrap().observe();
        eventually("followers catch up", || broker.broker.as_ref().unwrap().observe()[0].state.log_end_offset == 20)
            .await;
        assert_eq!(observed[0].topic, "orders");
    }
    // The leader goes away; another ISR member leads at the next epoch with every record.
    cluster.brokers[leader as usize - 1].take().unwrap().shutdown().await.unwrap();
    eventually("a new leader", || {
        let (new_leader, _, new_epoch) = cluster.leadership("orders");
        new_leader > 0 && new_leader != leader && new_epoch > epoch
    })
    .await;
    let (code, offset) = produce_to_leader(&cluster, "orders", "after-failover", -1).await;
    assert_eq!((code, offset), (0, 20));
    let (new_leader, _, _) = cluster.leadership("orders");
    let (error, high_watermark, values) = fetch_values(&cluster.addr(new_leader), "orders").await;
    assert_eq!((error, high_watermark), (0, 21));
    let expected: Vec<String> = (0..20).map(|i| format!("v{i}")).chain(["after-failover".to_string()]).collect();
    assert_eq!(values, expected);
    // A follower answers clients with NOT_LEADER_OR_FOLLOWER.
    let follower = (1..=3).find(|&n| n != new_leader && n != leader).unwrap();
    assert_eq!(fetch_values(&cluster.addr(follower), "orders").await.0, 6);
}

/// Strict min ISR (KIP-966): below `min.insync.replicas` acks=all is refused, an acks=1 write is
/// appended but stays invisible (the HW does not move), and it becomes visible once the ISR is
/// back at min ISR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_min_isr_acks_1_writes_stay_invisible_until_the_isr_recovers() {
    let mut cluster = Cluster::start(&[]).await;
    let mut conn = connect(&cluster.any_live()).await;
    assert_eq!(create_topic(&mut conn, "strict", 3, "3").await, 0);
    assert_eq!(produce_to_leader(&cluster, "strict", "first", -1).await, (0, 0));
    let (leader, _, _) = cluster.leadership("strict");
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    let handle = cluster.brokers[follower as usize - 1].take().unwrap();
    let config = handle.broker.as_ref().unwrap().config.clone();
    handle.shutdown().await.unwrap();
    eventually("the ISR shrinks", || cluster.leadership("strict").1.len() == 2).await;
    eventually("the leader knows", || cluster.isr_seen_by(leader, "strict").len() == 2).await;
    let mut conn = connect(&cluster.addr(leader)).await;
    assert_eq!(produce(&mut conn, "strict", "refused", -1).await.0, 19, "NOT_ENOUGH_REPLICAS");
    assert_eq!(produce(&mut conn, "strict", "acks-1", 1).await, (0, 1), "appended at offset 1");
    let (error, high_watermark, values) = fetch_values(&cluster.addr(leader), "strict").await;
    assert_eq!((error, high_watermark, values), (0, 1, vec!["first".to_string()]), "but not visible");
    cluster.brokers[follower as usize - 1] = Some(server::start(config, Arc::new(RealDisk)).await.unwrap());
    eventually("the follower rejoins the ISR", || cluster.leadership("strict").1.len() == 3).await;
    let mut visible = (0, 0, Vec::new());
    for _ in 0..100 {
        visible = fetch_values(&cluster.addr(leader), "strict").await;
        if visible.1 == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(visible, (0, 2, vec!["first".to_string(), "acks-1".to_string()]), "visible once back at min ISR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_catches_up_and_rejoins_the_isr() {
    let mut cluster = Cluster::start(&[]).await;
    let mut conn = connect(&cluster.any_live()).await;
    assert_eq!(create_topic(&mut conn, "rejoin", 3, "2").await, 0);
    let (leader, _, _) = cluster.leadership("rejoin");
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    let handle = cluster.brokers[follower as usize - 1].take().unwrap();
    let dir = handle.broker.as_ref().unwrap().config.log_dir.clone();
    let listener_config = handle.broker.as_ref().unwrap().config.clone();
    handle.shutdown().await.unwrap();
    eventually("the ISR shrinks", || cluster.leadership("rejoin").1.len() == 2).await;
    for i in 0..10 {
        assert_eq!(produce_to_leader(&cluster, "rejoin", &format!("w{i}"), -1).await, (0, i));
    }
    let mut config = listener_config;
    config.log_dir = dir;
    cluster.brokers[follower as usize - 1] = Some(server::start(config, Arc::new(RealDisk)).await.unwrap());
    eventually("the follower rejoins the ISR", || cluster.leadership("rejoin").1.len() == 3).await;
    let restarted = cluster.brokers[follower as usize - 1].as_ref().unwrap().broker.as_ref().unwrap();
    eventually("the follower has every record", || restarted.observe()[0].state.log_end_offset == 10).await;
}
