//! The workload client: a Kafka producer and consumer speaking the protocol over simulated TCP,
//! recording every operation (invoke, then ok / fail / info) into the history.
//!
//! Producer: idempotent by default (InitProducerId, a sequence per partition), up to five
//! requests in flight on one connection, retries of the *same* batch on retriable errors and timeouts (so the broker can
//! deduplicate), a new producer id on OUT_OF_ORDER_SEQUENCE / UNKNOWN_PRODUCER_ID /
//! INVALID_PRODUCER_EPOCH and after giving up on a batch (a sequence number is never reused
//! for another record: the simulator caught exactly that in swarm seed 75). Consumer: manual assignment, fetch positions, reset to the earliest
//! offset on OFFSET_OUT_OF_RANGE (marked as a seek in the history). Every request has its own
//! timeout: the simulator never times a connection out by itself.

use crate::history::{History, Op, Operation, Outcome, Partition, Process, Value};
use broker::protocol::client::{self, BatchProducer, BatchRecord, Connection};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Kafka's `request.timeout.ms`, scaled to the simulation.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between retries.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// A send that is not acknowledged within this is given up (recorded as info).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// The shared history, with the run's time origin.
#[derive(Clone)]
pub struct Recorder {
    history: Arc<Mutex<History>>,
    origin: Instant,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder { history: Arc::default(), origin: Instant::now() }
    }

    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    pub fn record(&self, process: Process, invoked_ns: u64, outcome: Outcome, op: Op) {
        let operation = Operation { process, invoked_ns, completed_ns: self.now_ns(), outcome, op };
        self.history.lock().expect("history lock").push(operation);
    }

    pub fn history(&self) -> History {
        self.history.lock().expect("history lock").clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// A connection that is (re)opened on demand and dropped after any error.
struct Link {
    addr: String,
    client_id: String,
    conn: Option<Connection<TcpStream>>,
}

impl Link {
    async fn send(&mut self, api: ApiKey, version: i16, body: RequestKind) -> Result<ResponseKind, String> {
        self.ensure_connected().await?;
        let result = self.conn.as_mut().expect("just connected").send(api, version, body).await;
        result.map_err(|e| {
            self.conn = None;
            e.to_string()
        })
    }
}

impl Link {
    async fn ensure_connected(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            let connect = Connection::connect(&self.addr, &self.client_id);
            let mut conn = match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("connect timed out".to_string()),
            };
            conn.request_timeout = REQUEST_TIMEOUT;
            self.conn = Some(conn);
        }
        Ok(())
    }

    /// Writes a request without waiting for its response (pipelining).
    async fn write(&mut self, api: ApiKey, version: i16, body: RequestKind) -> Result<i32, String> {
        self.ensure_connected().await?;
        let result = self.conn.as_mut().expect("connected").write_request(api, version, body).await;
        result.map_err(|e| {
            self.conn = None;
            e.to_string()
        })
    }

    /// Reads the response to a pipelined request.
    async fn read(&mut self, api: ApiKey, version: i16, correlation: i32) -> Result<ResponseKind, String> {
        let Some(conn) = self.conn.as_mut() else { return Err("not connected".to_string()) };
        let result = conn.read_response(api, version, correlation).await;
        result.map_err(|e| {
            self.conn = None;
            e.to_string()
        })
    }
}

/// Kafka errors after which the same request may simply be retried.
fn retriable(code: i16) -> bool {
    matches!(code, 3 | 5 | 6 | 7 | 13 | 14 | 15 | 19 | 20 | 56 | 74 | 78 | 79)
}

/// Kafka errors that mean "ask the cluster who leads now".
fn stale_metadata(code: i16) -> bool {
    matches!(code, 3 | 5 | 6 | 74 | 78 | 79)
}

/// Where each partition's leader is, as the last Metadata answer said, and one connection per
/// broker. Like a Kafka client: bootstrap from any broker, refresh when told the leader moved.
pub struct Router {
    bootstrap: Vec<String>,
    next_bootstrap: usize,
    client_id: String,
    topic: String,
    /// Partition → leader's address.
    leaders: BTreeMap<Partition, String>,
    /// Partition → the newest leader epoch seen in any Metadata answer. Like a KIP-320 client,
    /// fetches and ListOffsets carry it (a deposed leader that does not know yet answers
    /// UNKNOWN_LEADER_EPOCH instead of serving its stale high watermark), and an answer with an
    /// older epoch never replaces a newer one.
    epochs: BTreeMap<Partition, i32>,
    links: BTreeMap<String, Link>,
    /// Set when an answer or a failure says the leaders may have moved.
    pub stale: bool,
}

impl Router {
    pub fn new(bootstrap: Vec<String>, client_id: String, topic: String) -> Router {
        Router {
            bootstrap,
            next_bootstrap: 0,
            client_id,
            topic,
            leaders: BTreeMap::new(),
            epochs: BTreeMap::new(),
            links: BTreeMap::new(),
            stale: true,
        }
    }

    fn link(&mut self, addr: &str) -> &mut Link {
        let client_id = self.client_id.clone();
        self.links.entry(addr.to_string()).or_insert_with(|| Link { addr: addr.to_string(), client_id, conn: None })
    }

    /// A connection to some broker (for requests any broker answers).
    fn any(&mut self) -> &mut Link {
        let addr = self.bootstrap[self.next_bootstrap % self.bootstrap.len()].clone();
        self.link(&addr)
    }

    /// Asks every broker for the topic's leaders and keeps, per partition, the answer with the
    /// newest leader epoch: a deposed leader that does not know it yet describes itself as
    /// leader, and a client that asked only it would follow a zombie (the simulator's final
    /// reader once read to a stale end that way). `false` if no broker answered usefully.
    pub async fn refresh(&mut self) -> bool {
        let mut answered = false;
        for _ in 0..self.bootstrap.len() {
            let topic = self.topic.clone();
            let request = MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic_name(&topic)))]))
                .with_allow_auto_topic_creation(false);
            let answer = self.any().send(ApiKey::Metadata, 12, RequestKind::Metadata(request)).await;
            self.next_bootstrap += 1;
            let Ok(ResponseKind::Metadata(response)) = answer else { continue };
            let brokers: BTreeMap<i32, String> =
                response.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
            let Some(topic) = response.topics.first().filter(|t| t.error_code == 0) else { continue };
            answered = true;
            for p in &topic.partitions {
                let known = self.epochs.get(&p.partition_index).copied().unwrap_or(-1);
                if p.leader_epoch < known {
                    continue; // this broker's metadata is older than what we know
                }
                self.epochs.insert(p.partition_index, p.leader_epoch);
                match brokers.get(&p.leader_id.0) {
                    Some(addr) => {
                        self.leaders.insert(p.partition_index, addr.clone());
                    }
                    None => {
                        self.leaders.remove(&p.partition_index);
                    }
                }
            }
        }
        if answered {
            self.stale = false;
        }
        answered
    }

    /// The newest leader epoch known for `partition` (-1: none yet).
    fn epoch(&self, partition: Partition) -> i32 {
        self.epochs.get(&partition).copied().unwrap_or(-1)
    }

    /// The connection to `partition`'s leader, refreshing metadata first if needed.
    async fn leader(&mut self, partition: Partition) -> Option<&mut Link> {
        if self.stale || !self.leaders.contains_key(&partition) {
            self.refresh().await;
        }
        let addr = self.leaders.get(&partition)?.clone();
        Some(self.link(&addr))
    }
}

#[derive(Clone, Debug)]
pub struct ProducerConfig {
    pub topic: String,
    pub partitions: i32,
    pub acks: i16,
    pub idempotence: bool,
    pub rate_per_second: u32,
}

/// Produce requests a producer keeps in flight on its connection (Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence).
pub const MAX_IN_FLIGHT: usize = 5;

/// Tells workers to stop; they finish what they have in flight first.
#[derive(Default)]
pub struct StopSignal {
    stopped: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl StopSignal {
    pub fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sleeps for `duration` or until stopped, whichever is first.
    pub async fn sleep(&self, duration: Duration) {
        let notified = self.notify.notified();
        if self.is_stopped() {
            return;
        }
        tokio::select! {
            biased;
            _ = notified => {}
            _ = tokio::time::sleep(duration) => {}
        }
    }
}

/// One value on its way to the broker.
struct Pending {
    partition: Partition,
    value: Value,
    /// Assigned once per producer identity and never given to another record.
    sequence: Option<i32>,
    invoked_ns: u64,
    deadline: Instant,
    /// A request carrying it got no definite answer: it may be in the log.
    maybe_written: bool,
}

struct Producer {
    process: Process,
    config: ProducerConfig,
    router: Router,
    identity: Option<(i64, i16)>,
    next_sequence: BTreeMap<Partition, i32>,
    /// Oldest first. Invariant: per partition, sequences increase along the queue.
    queue: std::collections::VecDeque<Pending>,
    recorder: Recorder,
}

/// One producer process: sends unique values round-robin over the partitions, up to
/// [`MAX_IN_FLIGHT`] at a time, until `stop`; then finishes what is in flight.
pub async fn run_producer(
    process: Process,
    bootstrap: Vec<String>,
    config: ProducerConfig,
    recorder: Recorder,
    stop: Arc<StopSignal>,
) {
    let router = Router::new(bootstrap, format!("producer-{}", process.0), config.topic.clone());
    let interval = Duration::from_nanos(1_000_000_000 / u64::from(config.rate_per_second.max(1)));
    let mut producer = Producer {
        process,
        config,
        router,
        identity: None,
        next_sequence: BTreeMap::new(),
        queue: Default::default(),
        recorder,
    };
    let mut counter: u64 = 0;
    let mut next_value_at = Instant::now();
    loop {
        while !stop.is_stopped() && producer.queue.len() < MAX_IN_FLIGHT && Instant::now() >= next_value_at {
            let partition = (counter % producer.config.partitions as u64) as Partition;
            let value = Value((u64::from(process.0) << 40) | counter);
            counter += 1;
            next_value_at += interval;
            let deadline = Instant::now() + DELIVERY_TIMEOUT;
            producer.queue.push_back(Pending {
                partition,
                value,
                sequence: None,
                invoked_ns: producer.recorder.now_ns(),
                deadline,
                maybe_written: false,
            });
        }
        if producer.queue.is_empty() {
            if stop.is_stopped() {
                return;
            }
            stop.sleep(next_value_at.saturating_duration_since(Instant::now())).await;
            continue;
        }
        producer.round().await;
        producer.give_up_expired();
    }
}

impl Producer {
    fn finish(&self, pending: &Pending, outcome: Outcome, offset: Option<i64>) {
        let op = Op::Send { partition: pending.partition, value: pending.value, offset };
        let operation = Operation {
            process: self.process,
            invoked_ns: pending.invoked_ns,
            completed_ns: self.recorder.now_ns(),
            outcome,
            op,
        };
        self.recorder.history.lock().expect("history lock").push(operation);
    }

    /// Records a value given up on: info if it may be in the log, fail if it certainly is not.
    fn give_up(&self, pending: &Pending) {
        self.finish(pending, if pending.maybe_written { Outcome::Info } else { Outcome::Fail }, None);
    }

    /// Gives up on values past their delivery timeout (oldest first, so order is kept).
    fn give_up_expired(&mut self) {
        while self.queue.front().is_some_and(|p| Instant::now() >= p.deadline) {
            let pending = self.queue.pop_front().expect("checked");
            self.give_up(&pending);
        }
    }

    /// Starts over as a new producer: values that may be in the log under the old identity are
    /// given up (resending them under a new one could store them twice); the rest get new
    /// sequence numbers.
    async fn new_identity(&mut self) -> bool {
        let Some(identity) = init_producer_id(self.router.any()).await else {
            self.router.next_bootstrap += 1;
            return false;
        };
        self.identity = Some(identity);
        self.next_sequence.clear();
        let queue = std::mem::take(&mut self.queue);
        for mut pending in queue {
            if pending.maybe_written {
                self.give_up(&pending);
            } else {
                pending.sequence = None;
                self.queue.push_back(pending);
            }
        }
        true
    }

    fn request(&self, pending: &Pending) -> RequestKind {
        let (producer_id, epoch) = self.identity.unwrap_or((-1, -1));
        let batch = encode_batch(pending.value, producer_id, epoch, pending.sequence.unwrap_or(0));
        RequestKind::Produce(
            ProduceRequest::default()
                .with_transactional_id(None)
                .with_acks(self.config.acks)
                .with_timeout_ms(REQUEST_TIMEOUT.as_millis() as i32)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic_name(&self.config.topic))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(pending.partition)
                        .with_records(Some(batch))])]),
        )
    }

    /// One pipelined exchange: every queued value goes out (retries keep their sequence
    /// numbers and their order), then the responses come back in order.
    async fn round(&mut self) {
        if self.config.idempotence && self.identity.is_none() && !self.new_identity().await {
            tokio::time::sleep(RETRY_BACKOFF).await;
            return;
        }
        if self.config.idempotence {
            for pending in self.queue.iter_mut().filter(|p| p.sequence.is_none()) {
                let next = self.next_sequence.entry(pending.partition).or_insert(0);
                pending.sequence = Some(*next);
                *next = if *next == i32::MAX { 0 } else { *next + 1 };
            }
        }
        if self.router.stale && !self.router.refresh().await {
            tokio::time::sleep(RETRY_BACKOFF).await;
            return;
        }
        // Each partition's values go to its leader, in queue order (so per partition in
        // sequence order); one pipelined exchange per leader.
        let mut by_leader: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, pending) in self.queue.iter().enumerate() {
            match self.router.leaders.get(&pending.partition) {
                Some(addr) => by_leader.entry(addr.clone()).or_default().push(i),
                None => self.router.stale = true,
            }
        }
        let mut answered = vec![false; self.queue.len()];
        let mut reset_identity = false;
        for (addr, indices) in by_leader {
            let mut correlations = Vec::with_capacity(indices.len());
            for &i in &indices {
                let request = self.request(&self.queue[i]);
                match self.router.link(&addr).write(ApiKey::Produce, 9, request).await {
                    Ok(correlation) => correlations.push((i, correlation)),
                    Err(_) => break,
                }
            }
            let mut read = 0;
            for &(i, correlation) in &correlations {
                match self.router.link(&addr).read(ApiKey::Produce, 9, correlation).await {
                    Ok(ResponseKind::Produce(response)) => {
                        read += 1;
                        let result = &response.responses[0].partition_responses[0];
                        match result.error_code {
                            0 => {
                                self.finish(&self.queue[i], Outcome::Ok, Some(result.base_offset));
                                answered[i] = true;
                            }
                            // A timeout, a failed fsync or a failure after the append: may be in the log.
                            7 | 20 | 56 => self.queue[i].maybe_written = true,
                            // Leadership moved: before the append, or while an acks=all append
                            // waited for its replicas (Kafka answers both the same way), so it
                            // may be in the log (the simulator found a retry under a new producer
                            // id stored twice).
                            6 | 74 | 79 => {
                                self.queue[i].maybe_written = true;
                                self.router.stale = true;
                            }
                            // The broker lost (or never had) our sequence history: not written.
                            45 | 47 | 59 => reset_identity = true,
                            code if retriable(code) => self.router.stale |= stale_metadata(code),
                            _ => {
                                self.give_up(&self.queue[i]);
                                answered[i] = true;
                                reset_identity = true; // the values behind it would now leave a gap
                            }
                        }
                    }
                    _ => break,
                }
            }
            // Sent but not answered (the connection broke): may or may not be in the log.
            if read < correlations.len() || correlations.len() < indices.len() {
                self.router.stale = true;
                for &(i, _) in &correlations[read..] {
                    self.queue[i].maybe_written = true;
                }
            }
        }
        let mut i = 0;
        self.queue.retain(|_| {
            i += 1;
            !answered[i - 1]
        });
        if reset_identity {
            self.identity = None;
        }
        if !self.queue.is_empty() {
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }
}

async fn init_producer_id(link: &mut Link) -> Option<(i64, i16)> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match link.send(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(request)).await {
        Ok(ResponseKind::InitProducerId(r)) if r.error_code == 0 => Some((r.producer_id.0, r.producer_epoch)),
        _ => None,
    }
}

/// One batch holding one record whose value is the unique value (8 bytes, big-endian).
fn encode_batch(value: Value, producer_id: i64, producer_epoch: i16, sequence: i32) -> Bytes {
    let record = BatchRecord { key: None, value: Some(Bytes::copy_from_slice(&value.0.to_be_bytes())), timestamp: 0 };
    let producer = (producer_id >= 0).then_some(BatchProducer { producer_id, producer_epoch, base_sequence: sequence });
    client::encode_batch(&[record], producer, Compression::None)
}

fn decode_values(records: Option<Bytes>) -> Result<Vec<(i64, Value)>, String> {
    let mut buf = records.unwrap_or_default();
    let mut out = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut buf).map_err(|e| format!("undecodable fetch response: {e:#}"))? {
        for record in set.records {
            let bytes = record.value.ok_or("a record without a value")?;
            let value =
                u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| "a value that is not 8 bytes".to_string())?);
            out.push((record.offset, Value(value)));
        }
    }
    Ok(out)
}

/// What one fetch of one partition returned.
pub enum FetchResult {
    Records { records: Vec<(i64, Value)>, high_watermark: i64 },
    OutOfRange,
    Error,
}

async fn fetch(router: &mut Router, topic: &str, partition: Partition, offset: i64, max_wait_ms: i32) -> FetchResult {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(router.epoch(partition))
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20),
        ])]);
    let Some(link) = router.leader(partition).await else { return FetchResult::Error };
    let answer = link.send(ApiKey::Fetch, 12, RequestKind::Fetch(request)).await;
    if answer.is_err() {
        router.stale = true;
    }
    match answer {
        Ok(ResponseKind::Fetch(response)) => {
            let data = response.responses.into_iter().next().and_then(|t| t.partitions.into_iter().next());
            match data {
                Some(data) if data.error_code == 0 => match decode_values(data.records) {
                    // Whole batches come back: drop records before the position.
                    Ok(records) => FetchResult::Records {
                        records: records.into_iter().filter(|(o, _)| *o >= offset).collect(),
                        high_watermark: data.high_watermark,
                    },
                    Err(_) => FetchResult::Error,
                },
                Some(data) if data.error_code == 1 => FetchResult::OutOfRange,
                Some(data) => {
                    router.stale |= stale_metadata(data.error_code);
                    FetchResult::Error
                }
                None => FetchResult::Error,
            }
        }
        _ => FetchResult::Error,
    }
}

async fn list_offset(router: &mut Router, topic: &str, partition: Partition, timestamp: i64) -> Option<i64> {
    let request =
        ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_isolation_level(1).with_topics(vec![
            ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(vec![
                ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_current_leader_epoch(router.epoch(partition))
                    .with_timestamp(timestamp),
            ]),
        ]);
    let link = router.leader(partition).await?;
    match link.send(ApiKey::ListOffsets, 7, RequestKind::ListOffsets(request)).await {
        Ok(ResponseKind::ListOffsets(r)) => {
            let p = r.topics.first()?.partitions.first()?;
            router.stale |= stale_metadata(p.error_code);
            (p.error_code == 0).then_some(p.offset)
        }
        _ => {
            router.stale = true;
            None
        }
    }
}

/// One consumer process assigned every partition: polls until `stop`.
pub async fn run_consumer(
    process: Process,
    bootstrap: Vec<String>,
    topic: String,
    partitions: i32,
    recorder: Recorder,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut link = Router::new(bootstrap, format!("consumer-{}", process.0), topic.clone());
    let mut positions: BTreeMap<Partition, (i64, bool)> = (0..partitions).map(|p| (p, (0, true))).collect();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        for partition in 0..partitions {
            let (position, after_seek) = positions[&partition];
            let invoked = recorder.now_ns();
            match fetch(&mut link, &topic, partition, position, 200).await {
                FetchResult::Records { records, high_watermark } => {
                    let next = records.last().map_or(position, |(o, _)| o + 1);
                    recorder.record(
                        process,
                        invoked,
                        Outcome::Ok,
                        Op::Poll { partition, records, high_watermark: Some(high_watermark), after_seek },
                    );
                    positions.insert(partition, (next, false));
                }
                FetchResult::OutOfRange => {
                    // auto.offset.reset=earliest
                    let earliest = list_offset(&mut link, &topic, partition, -2).await.unwrap_or(0);
                    positions.insert(partition, (earliest, true));
                }
                FetchResult::Error => recorder.record(
                    process,
                    invoked,
                    Outcome::Fail,
                    Op::Poll { partition, records: vec![], high_watermark: None, after_seek },
                ),
            }
            let invoked = recorder.now_ns();
            let latest = list_offset(&mut link, &topic, partition, -1).await;
            let outcome = if latest.is_some() { Outcome::Ok } else { Outcome::Fail };
            recorder.record(process, invoked, outcome, Op::ListLatest { partition, offset: latest });
        }
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// The heal phase's final read of one partition: from the earliest offset to the latest one
/// (as ListOffsets says once reads start), retrying until `deadline`. `true` if it got there.
pub async fn final_read(
    process: Process,
    bootstrap: Vec<String>,
    topic: String,
    partition: Partition,
    recorder: Recorder,
    deadline: Instant,
) -> bool {
    let mut link = Router::new(bootstrap, format!("final-reader-{}", process.0), topic.clone());
    let target = loop {
        if let Some(latest) = list_offset(&mut link, &topic, partition, -1).await {
            break latest;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(RETRY_BACKOFF).await;
    };
    let mut position = list_offset(&mut link, &topic, partition, -2).await.unwrap_or(0);
    let mut after_seek = true;
    while position < target {
        if Instant::now() >= deadline {
            return false;
        }
        let invoked = recorder.now_ns();
        match fetch(&mut link, &topic, partition, position, 100).await {
            FetchResult::Records { records, high_watermark } => {
                position = records.last().map_or(position, |(o, _)| o + 1);
                recorder.record(
                    process,
                    invoked,
                    Outcome::Ok,
                    Op::Poll { partition, records, high_watermark: Some(high_watermark), after_seek },
                );
                after_seek = false;
            }
            FetchResult::OutOfRange => {
                position = list_offset(&mut link, &topic, partition, -2).await.unwrap_or(position);
                after_seek = true;
            }
            FetchResult::Error => tokio::time::sleep(RETRY_BACKOFF).await,
        }
    }
    true
}
