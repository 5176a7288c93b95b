//! The workload client: a Kafka producer and consumer speaking the protocol over simulated TCP,
//! recording every operation (invoke, then ok / fail / info) into the history.
//!
//! Producer: idempotent by default, and under faults it behaves like librdkafka's: one batch per
//! Produce request, up to five batches per partition unresolved, pipelined on one connection per
//! leader; an answer that does not come within [`ATTEMPT_TIMEOUT`] (shorter than the time the
//! leader is given) or a lost connection makes it retry the whole window from the oldest
//! unanswered batch with the same sequence numbers, so the leader meets retries of older batches
//! while newer ones are already in its log and must deduplicate them. A sequence refusal of a
//! partition's oldest batch bumps the epoch locally (KIP-360, as Java does); a value that may
//! be in the log is never resent under an identity the leader could not deduplicate it against,
//! unless the leader's refusal proves it is not there (`Producer::refused`), and a sequence
//! number is never reused for another record (the simulator caught exactly that in swarm seed
//! 75). Consumer: manual assignment, fetch positions, reset to the earliest
//! offset on OFFSET_OUT_OF_RANGE (marked as a seek in the history). Every request has its own
//! timeout: the simulator never times a connection out by itself.

use crate::history::{History, Op, Operation, Outcome, Partition, Process, Value};
use broker::log::producer_state::PRODUCER_BATCH_WINDOW;
use broker::protocol::client::{self, BatchProducer, BatchRecord, Connection};
use broker::protocol::{read_frame, write_frame};
use broker::types::ErrorCode;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Kafka's `request.timeout.ms`, scaled to the simulation: the wait for any answer but a
/// Produce one, and the `timeout_ms` a Produce request gives an acks=all leader to hear from
/// its in-sync replicas.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The wait for one Produce answer, from its write. Shorter than the leader's
/// [`REQUEST_TIMEOUT`] on purpose: a slow acks=all wait or a clogged answer is retried (on a new
/// connection: like librdkafka, a request that times out in flight costs its connection) while
/// the original may still be appended and answered.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// The Produce version the producer speaks.
const PRODUCE_VERSION: i16 = 9;
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
}

/// Kafka errors after which the same request may simply be retried.
fn retriable(code: i16) -> bool {
    matches!(
        ErrorCode(code),
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            | ErrorCode::LEADER_NOT_AVAILABLE
            | ErrorCode::NOT_LEADER_OR_FOLLOWER
            | ErrorCode::REQUEST_TIMED_OUT
            | ErrorCode::NETWORK_EXCEPTION
            | ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
            | ErrorCode::COORDINATOR_NOT_AVAILABLE
            | ErrorCode::NOT_ENOUGH_REPLICAS
            | ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND
            | ErrorCode::KAFKA_STORAGE_ERROR
            | ErrorCode::FENCED_LEADER_EPOCH
            | ErrorCode::OFFSET_NOT_AVAILABLE
            | ErrorCode::UNKNOWN_LEADER_EPOCH
    )
}

/// Kafka errors that mean "ask the cluster who leads now".
fn stale_metadata(code: i16) -> bool {
    matches!(
        ErrorCode(code),
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            | ErrorCode::LEADER_NOT_AVAILABLE
            | ErrorCode::NOT_LEADER_OR_FOLLOWER
            | ErrorCode::FENCED_LEADER_EPOCH
            | ErrorCode::OFFSET_NOT_AVAILABLE
            | ErrorCode::UNKNOWN_LEADER_EPOCH
    )
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
    /// The topic's id, once a Metadata answer named it.
    topic_id: Option<u128>,
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
            topic_id: None,
            stale: true,
        }
    }

    /// The topic's id (KIP-848 heartbeats name partitions by it), asking for it if unknown.
    pub async fn topic_id(&mut self) -> Option<u128> {
        if self.topic_id.is_none() {
            self.refresh().await;
        }
        self.topic_id
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
            let Some(topic) = response.topics.first().filter(|t| ErrorCode(t.error_code).is_none()) else { continue };
            answered = true;
            if !topic.topic_id.is_nil() {
                self.topic_id = Some(topic.topic_id.as_u128());
            }
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

    /// Sends a request any broker answers (FindCoordinator), trying the next broker next time.
    pub(crate) async fn send_any(
        &mut self,
        api: ApiKey,
        version: i16,
        body: RequestKind,
    ) -> Result<ResponseKind, String> {
        let answer = self.any().send(api, version, body).await;
        self.next_bootstrap += 1;
        answer
    }

    /// Sends a request to the broker at `addr` (a group coordinator).
    pub(crate) async fn send_to(
        &mut self,
        addr: &str,
        api: ApiKey,
        version: i16,
        body: RequestKind,
    ) -> Result<ResponseKind, String> {
        self.link(addr).send(api, version, body).await
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

/// Batches a producer keeps unresolved per partition, counted from its oldest unacknowledged
/// one (librdkafka's and Java's `max.in.flight.requests.per.connection` limit for idempotence).
/// It equals the leader's deduplication window: every batch a producer may retry is among the
/// last [`PRODUCER_BATCH_WINDOW`] the leader holds from it.
pub const MAX_IN_FLIGHT: usize = PRODUCER_BATCH_WINDOW;

/// Tells workers to stop; they finish what they have in flight first (a producer notices
/// within [`RETRY_BACKOFF`]).
#[derive(Default)]
pub struct StopSignal {
    stopped: std::sync::atomic::AtomicBool,
}

impl StopSignal {
    pub fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One value on its way to the broker: one record, one batch, one Produce request per attempt.
struct Pending {
    partition: Partition,
    value: Value,
    /// Assigned once per producer identity and never given to another record.
    sequence: Option<i32>,
    invoked_ns: u64,
    deadline: Instant,
    /// An attempt got no definite answer: it may be in the log.
    maybe_written: bool,
    /// An attempt is on a connection, awaiting its answer.
    in_flight: bool,
    /// Attempts so far under the current identity.
    attempts: u32,
    /// Acknowledged (and recorded), but an older value of its partition is not yet: it keeps
    /// its place in the partition's window until that one is resolved.
    acked: bool,
}

/// Where one partition's sending stands.
#[derive(Default)]
struct PartitionState {
    /// An attempt failed: nothing more is sent until the attempts still in flight are answered,
    /// then the partition resends from its oldest unacknowledged value (librdkafka drains a
    /// partition the same way before an idempotent retry, so retries keep sequence order).
    draining: bool,
    /// The retry backoff: nothing is sent before this.
    retry_at: Option<Instant>,
    /// The leader its attempts in flight went to (one at a time, so answers come in order).
    leader: Option<String>,
    /// A value of the current identity left the queue unacknowledged (given up or rejected):
    /// the leader may or may not hold it, so a sequence refusal says nothing about what it holds.
    hole: bool,
}

/// A Produce request written on a connection, awaiting its answer.
struct Attempt {
    correlation: i32,
    value: Value,
    /// The answer must come by then ([`ATTEMPT_TIMEOUT`] after the write).
    deadline: Instant,
}

/// One connection to a leader, written and read by its own task so that the producer never
/// waits on the network: it hands frames over and gets every answer frame back as an event.
/// Dropping the pipe ends its task and closes the connection.
struct Pipe {
    id: u64,
    next_correlation: i32,
    outgoing: mpsc::UnboundedSender<Bytes>,
    /// Oldest first: answers come back in this order.
    attempts: VecDeque<Attempt>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a pipe's task reports, with the pipe's id (events of a dropped pipe are ignored).
enum PipeEvent {
    /// One answer frame (without its length prefix).
    Answer(u64, Bytes),
    /// The connection could not be opened: nothing written to it reached the leader.
    ConnectFailed(u64),
    /// The connection broke: what was written to it may have reached the leader.
    Broken(u64),
}

/// Answers larger than this break the connection.
const ANSWER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Connects to `addr`, then writes every frame handed over and reports every answer frame,
/// until the connection fails or the pipe is dropped.
async fn run_pipe(id: u64, addr: String, mut outgoing: mpsc::UnboundedReceiver<Bytes>, events: EventSender) {
    let stream = match tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(&addr)).await {
        Ok(Ok(stream)) => stream,
        _ => {
            let _ = events.send(PipeEvent::ConnectFailed(id));
            return;
        }
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let answers = events.clone();
    let reading = tokio::spawn(async move {
        loop {
            let event = match read_frame(&mut reader, ANSWER_BYTES_MAX).await {
                Ok(frame) => PipeEvent::Answer(id, frame),
                Err(_) => PipeEvent::Broken(id),
            };
            let broken = matches!(event, PipeEvent::Broken(_));
            if answers.send(event).is_err() || broken {
                return;
            }
        }
    });
    let _reading = AbortOnDrop(reading);
    while let Some(frame) = outgoing.recv().await {
        if write_frame(&mut writer, &frame).await.is_err() {
            let _ = events.send(PipeEvent::Broken(id));
            return;
        }
    }
}

type EventSender = mpsc::UnboundedSender<PipeEvent>;

/// Aborts a task when dropped (the pipe's reader goes with its writer).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Producer {
    process: Process,
    config: ProducerConfig,
    /// Metadata and InitProducerId (one request at a time, each with its own timeout).
    router: Router,
    /// Producer id and epoch; `None` until InitProducerId answers (again after a fence).
    identity: Option<(i64, i16)>,
    next_sequence: BTreeMap<Partition, i32>,
    partitions: BTreeMap<Partition, PartitionState>,
    /// Oldest first. Invariants: per partition, sequences increase along the queue and at most
    /// [`MAX_IN_FLIGHT`] values are queued; an `acked` value always has an older unacknowledged
    /// one of its partition ahead of it.
    queue: VecDeque<Pending>,
    /// Leader address → its connection.
    pipes: BTreeMap<String, Pipe>,
    next_pipe_id: u64,
    events: EventSender,
    /// When leaders were last asked for (at most once per [`RETRY_BACKOFF`]).
    refreshed_at: Option<Instant>,
    /// Set when the identity must be left; that happens once nothing is in flight any more
    /// (see [`Producer::leave_identity_when_drained`]).
    leaving: Option<Leaving>,
    recorder: Recorder,
}

/// Why the producer leaves its identity.
#[derive(Default)]
struct Leaving {
    /// INVALID_PRODUCER_EPOCH: a newer epoch of this producer id exists; ask for a new id.
    fenced: bool,
    /// Partitions whose values are known not to be in the log (see [`Producer::refused`]).
    known_unwritten: BTreeSet<Partition>,
}

/// One producer process: sends unique values round-robin over the partitions at the configured
/// rate, up to [`MAX_IN_FLIGHT`] per partition, until `stop`; then finishes what is in flight.
pub async fn run_producer(
    process: Process,
    bootstrap: Vec<String>,
    config: ProducerConfig,
    recorder: Recorder,
    stop: Arc<StopSignal>,
) {
    let router = Router::new(bootstrap, format!("producer-{}", process.0), config.topic.clone());
    let interval = Duration::from_nanos(1_000_000_000 / u64::from(config.rate_per_second.max(1)));
    let (events, mut incoming) = mpsc::unbounded_channel();
    let mut producer = Producer {
        process,
        config,
        router,
        identity: None,
        next_sequence: BTreeMap::new(),
        partitions: BTreeMap::new(),
        queue: VecDeque::new(),
        pipes: BTreeMap::new(),
        next_pipe_id: 0,
        events,
        refreshed_at: None,
        leaving: None,
        recorder,
    };
    let mut counter: u64 = 0;
    let mut next_value_at = Instant::now();
    loop {
        // When the next value is due (none while stopped, or while its partition's window is
        // full: an answer wakes the loop then).
        let mut due = None;
        while !stop.is_stopped() {
            let partition = (counter % producer.config.partitions as u64) as Partition;
            if Instant::now() < next_value_at {
                due = Some(next_value_at);
                break;
            }
            if producer.window(partition) >= MAX_IN_FLIGHT {
                break; // back-pressure: the partition's window is full
            }
            producer.queue.push_back(Pending {
                partition,
                value: Value((u64::from(process.0) << 40) | counter),
                sequence: None,
                invoked_ns: producer.recorder.now_ns(),
                deadline: Instant::now() + DELIVERY_TIMEOUT,
                maybe_written: false,
                in_flight: false,
                attempts: 0,
                acked: false,
            });
            counter += 1;
            next_value_at += interval;
        }
        while let Ok(event) = incoming.try_recv() {
            producer.handle(event);
        }
        producer.expire_attempts();
        producer.give_up_expired();
        if stop.is_stopped() && producer.queue.is_empty() {
            return;
        }
        producer.leave_identity_when_drained();
        producer.prepare().await;
        producer.send_ready();
        // Waking at least every RETRY_BACKOFF retries what waits on the network (an identity,
        // leaders) without a timer of its own.
        let wake = due.into_iter().chain(producer.next_wake()).min();
        let nap =
            wake.map_or(RETRY_BACKOFF, |t| t.saturating_duration_since(Instant::now()).clamp(MIN_NAP, RETRY_BACKOFF));
        tokio::select! {
            biased;
            Some(event) = incoming.recv() => producer.handle(event),
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// The shortest sleep of the producer's loop (simulated time has a 1 ms resolution anyway).
const MIN_NAP: Duration = Duration::from_millis(1);

impl Producer {
    /// Queued values of `partition`, acknowledged ones held behind an older one included.
    fn window(&self, partition: Partition) -> usize {
        self.queue.iter().filter(|p| p.partition == partition).count()
    }

    fn state(&mut self, partition: Partition) -> &mut PartitionState {
        self.partitions.entry(partition).or_default()
    }

    fn position(&self, value: Value) -> Option<usize> {
        self.queue.iter().position(|p| p.value == value)
    }

    fn finish(&self, pending: &Pending, outcome: Outcome, offset: Option<i64>) {
        let op = Op::Send { partition: pending.partition, value: pending.value, offset };
        self.recorder.record(self.process, pending.invoked_ns, outcome, op);
    }

    /// Records a value given up on: info if it may be in the log, fail if it certainly is not.
    fn give_up(&self, pending: &Pending) {
        self.finish(pending, if pending.maybe_written { Outcome::Info } else { Outcome::Fail }, None);
    }

    /// Gives up on values past their delivery timeout and not in flight (oldest first, so
    /// order is kept); their partitions get a hole. Acknowledged values at the front just leave.
    fn give_up_expired(&mut self) {
        while let Some(front) = self.queue.front() {
            if !front.acked && (front.in_flight || Instant::now() < front.deadline) {
                break;
            }
            let pending = self.queue.pop_front().expect("checked");
            if !pending.acked {
                self.give_up(&pending);
                self.state(pending.partition).hole = true;
            }
        }
        self.drop_resolved();
    }

    /// Acknowledged values leave the queue once nothing older of their partition is left.
    fn drop_resolved(&mut self) {
        let mut unresolved = BTreeSet::new();
        self.queue.retain(|pending| {
            if !pending.acked {
                unresolved.insert(pending.partition);
            }
            !pending.acked || unresolved.contains(&pending.partition)
        });
    }

    /// Asks for an identity and for leaders when needed. Waits on the network, so only with
    /// nothing in flight for an identity; leaders are refreshed when a value has none.
    async fn prepare(&mut self) {
        let nothing_in_flight = self.pipes.values().all(|p| p.attempts.is_empty());
        if self.config.idempotence && self.identity.is_none() && self.leaving.is_none() && nothing_in_flight {
            match init_producer_id(self.router.any()).await {
                Some(identity) => self.identity = Some(identity),
                None => self.router.next_bootstrap += 1,
            }
        }
        let leaderless = self.queue.iter().any(|p| !self.router.leaders.contains_key(&p.partition));
        let now = Instant::now();
        let may_refresh = self.refreshed_at.is_none_or(|t| now >= t + RETRY_BACKOFF);
        if (self.router.stale || leaderless) && !self.queue.is_empty() && may_refresh {
            self.refreshed_at = Some(now);
            self.router.refresh().await;
        }
    }

    /// Writes every value that may go now: per partition in sequence order, each after all
    /// older unacknowledged ones of its partition are in flight, to the partition's leader.
    fn send_ready(&mut self) {
        if self.leaving.is_some() || (self.config.idempotence && self.identity.is_none()) {
            return;
        }
        if self.config.idempotence {
            self.assign_sequences();
        }
        let now = Instant::now();
        let mut blocked = BTreeSet::new();
        for i in 0..self.queue.len() {
            let (partition, acked, in_flight) = {
                let p = &self.queue[i];
                (p.partition, p.acked, p.in_flight)
            };
            if acked || in_flight || blocked.contains(&partition) {
                continue;
            }
            let Some(leader) = self.router.leaders.get(&partition).cloned() else {
                blocked.insert(partition);
                continue;
            };
            let state = self.state(partition);
            let in_flight_elsewhere = state.leader.as_ref().is_some_and(|l| *l != leader);
            let backing_off = state.retry_at.is_some_and(|t| now < t);
            if state.draining || in_flight_elsewhere || backing_off {
                blocked.insert(partition);
                continue;
            }
            state.leader = Some(leader.clone());
            self.write(i, &leader);
        }
    }

    /// Hands the value at queue index `i` to the pipe to `leader` (opened if needed).
    fn write(&mut self, i: usize, leader: &str) {
        let request = self.request(&self.queue[i]);
        if !self.pipes.contains_key(leader) {
            let (outgoing, frames) = mpsc::unbounded_channel();
            let id = self.next_pipe_id;
            self.next_pipe_id += 1;
            let task = tokio::spawn(run_pipe(id, leader.to_string(), frames, self.events.clone()));
            let pipe = Pipe { id, next_correlation: 0, outgoing, attempts: VecDeque::new(), task };
            self.pipes.insert(leader.to_string(), pipe);
        }
        let client_id = format!("producer-{}", self.process.0);
        let pipe = self.pipes.get_mut(leader).expect("just opened");
        let correlation = pipe.next_correlation;
        pipe.next_correlation = pipe.next_correlation.wrapping_add(1);
        let frame = encode_request(correlation, &client_id, &request);
        let pending = &mut self.queue[i];
        pipe.attempts.push_back(Attempt {
            correlation,
            value: pending.value,
            deadline: Instant::now() + ATTEMPT_TIMEOUT,
        });
        pending.in_flight = true;
        pending.attempts += 1;
        if pending.attempts > 1 {
            let (value, partition, sequence, attempt) =
                (pending.value.0, pending.partition, pending.sequence, pending.attempts);
            tracing::debug!(process = self.process.0, partition, value, ?sequence, attempt, leader, "produce retry");
        }
        if pipe.outgoing.send(frame).is_err() {
            // The pipe's task has ended; its Broken or ConnectFailed event is on its way.
        }
    }

    /// The earliest instant still to come at which something is due: an attempt's deadline,
    /// the end of a retry backoff, an expiry.
    fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        let attempts = self.pipes.values().filter_map(|p| p.attempts.front().map(|a| a.deadline));
        let retries = self.partitions.values().filter_map(|s| s.retry_at);
        let expiries = self.queue.front().map(|p| p.deadline);
        attempts.chain(retries).chain(expiries).filter(|&t| t > now).min()
    }

    /// Drops every connection whose oldest attempt is past its deadline (librdkafka closes a
    /// connection whose request timed out in flight).
    fn expire_attempts(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .pipes
            .iter()
            .filter(|(_, pipe)| pipe.attempts.front().is_some_and(|a| now >= a.deadline))
            .map(|(addr, _)| addr.clone())
            .collect();
        for addr in expired {
            self.drop_pipe(&addr, true);
        }
    }

    /// Closes the connection to `addr`. Its attempts in flight failed: each may be in the log
    /// if it may have been written (`written`), and its partition drains and retries.
    fn drop_pipe(&mut self, addr: &str, written: bool) {
        let Some(pipe) = self.pipes.remove(addr) else { return };
        let in_flight = pipe.attempts.len();
        tracing::debug!(process = self.process.0, addr, in_flight, written, "produce connection dropped");
        self.router.stale = true;
        for attempt in &pipe.attempts {
            self.attempt_failed(attempt.value, written);
        }
    }

    /// An attempt of `value` got no answer, or a retriable one: retry after a backoff, once the
    /// partition's other attempts are answered. `maybe_written`: it may be in the log.
    fn attempt_failed(&mut self, value: Value, maybe_written: bool) {
        let Some(i) = self.position(value) else { return };
        let pending = &mut self.queue[i];
        pending.in_flight = false;
        pending.maybe_written |= maybe_written;
        let partition = pending.partition;
        let state = self.state(partition);
        state.draining = true;
        state.retry_at = Some(Instant::now() + RETRY_BACKOFF);
        self.settle_partition(partition);
    }

    /// A partition with nothing in flight any more stops draining and forgets its leader.
    fn settle_partition(&mut self, partition: Partition) {
        if self.queue.iter().any(|p| p.partition == partition && p.in_flight) {
            return;
        }
        let state = self.state(partition);
        state.draining = false;
        state.leader = None;
    }

    fn handle(&mut self, event: PipeEvent) {
        let (id, frame, written) = match event {
            PipeEvent::Answer(id, frame) => (id, Some(frame), true),
            PipeEvent::ConnectFailed(id) => (id, None, false),
            PipeEvent::Broken(id) => (id, None, true),
        };
        let Some(addr) = self.pipes.iter().find(|(_, p)| p.id == id).map(|(a, _)| a.clone()) else {
            return; // a pipe dropped already
        };
        let Some(frame) = frame else { return self.drop_pipe(&addr, written) };
        let pipe = self.pipes.get_mut(&addr).expect("found");
        let Some(attempt) = pipe.attempts.pop_front() else { return self.drop_pipe(&addr, true) };
        match decode_produce_response(frame, attempt.correlation) {
            Some(response) => self.answer(attempt.value, &response),
            None => {
                self.attempt_failed(attempt.value, true);
                self.drop_pipe(&addr, true);
            }
        }
    }

    /// Applies one Produce answer to `value`.
    fn answer(&mut self, value: Value, response: &ProduceResponse) {
        let Some(i) = self.position(value) else { return };
        let Some(result) = response.responses.first().and_then(|t| t.partition_responses.first()) else {
            return self.attempt_failed(value, true);
        };
        let partition = self.queue[i].partition;
        match ErrorCode(result.error_code) {
            ErrorCode::NONE => {
                self.finish(&self.queue[i], Outcome::Ok, Some(result.base_offset));
                self.queue[i].acked = true;
                self.queue[i].in_flight = false;
                self.settle_partition(partition);
                self.drop_resolved();
            }
            // A timeout, a failed fsync or a failure after the append: may be in the log.
            ErrorCode::REQUEST_TIMED_OUT
            | ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND
            | ErrorCode::KAFKA_STORAGE_ERROR => self.attempt_failed(value, true),
            // Leadership moved: before the append, or while an acks=all append waited for its
            // replicas (Kafka answers both the same way), so it may be in the log (the simulator
            // found a retry under a new producer id stored twice).
            ErrorCode::NOT_LEADER_OR_FOLLOWER | ErrorCode::FENCED_LEADER_EPOCH | ErrorCode::UNKNOWN_LEADER_EPOCH => {
                self.router.stale = true;
                self.attempt_failed(value, true);
            }
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER | ErrorCode::UNKNOWN_PRODUCER_ID => self.refused(i),
            ErrorCode::INVALID_PRODUCER_EPOCH => {
                self.leave().fenced = true;
                self.attempt_failed(value, false);
            }
            ErrorCode(code) if retriable(code) => {
                self.router.stale |= stale_metadata(code);
                self.attempt_failed(value, false);
            }
            _ => {
                // Rejected for good: the values behind it would now leave a gap.
                let pending = self.queue.remove(i).expect("found");
                self.give_up(&pending);
                self.state(partition).hole = true;
                self.settle_partition(partition);
                if self.config.idempotence {
                    self.leave();
                }
            }
        }
    }

    /// A sequence refusal (OUT_OF_ORDER_SEQUENCE_NUMBER or UNKNOWN_PRODUCER_ID) of the value at
    /// queue index `i`; this attempt appended nothing.
    ///
    /// A refusal of a value behind the partition's oldest unacknowledged one only says an older
    /// one is missing: it is retried after that one. A refusal of the oldest one makes the
    /// producer leave its identity, and may tell more. A leader deduplicates a retry of any of a
    /// producer's last [`PRODUCER_BATCH_WINDOW`] batches, and no value is sent that is more than
    /// [`MAX_IN_FLIGHT`] after the partition's oldest unacknowledged one. So when a leader
    /// refuses that oldest value, every earlier value of the partition acknowledged under this
    /// identity (no hole), it does not hold it, nor (a producer's sequences in a log being
    /// contiguous) any value behind it: the partition's values are known not to be in the log
    /// and go on under the new epoch even if an earlier attempt went unanswered. A correct
    /// leader within the fault budget never refuses so (it holds the acknowledged predecessor);
    /// one that lost data does, and then holds none of these values either. A leader that
    /// refuses a retry it holds (`dedup-newest-only`) or forgot (`producer-state-not-recovered`)
    /// makes the producer store the value twice, which the `duplicate` checker reports.
    fn refused(&mut self, i: usize) {
        let (partition, value) = (self.queue[i].partition, self.queue[i].value);
        let oldest = self.queue.iter().find(|p| p.partition == partition && !p.acked).map(|p| p.value) == Some(value);
        if !oldest {
            return self.attempt_failed(value, false);
        }
        let known_unwritten = !self.state(partition).hole;
        tracing::debug!(process = self.process.0, partition, value = value.0, known_unwritten, "oldest value refused");
        if known_unwritten {
            self.leave().known_unwritten.insert(partition);
        }
        self.leave();
        self.attempt_failed(value, false);
    }

    /// Marks the identity to be left.
    fn leave(&mut self) -> &mut Leaving {
        self.leaving.get_or_insert_with(Leaving::default)
    }

    /// Leaves the identity once nothing is in flight (so no answer to the old one is pending).
    /// Like Java's idempotent producer, bumps the epoch locally (same producer id, epoch + 1,
    /// every partition's sequences restart at 0: a leader takes a newer epoch from sequence 0
    /// on and refuses the older one from then on); a fenced producer or an exhausted epoch asks
    /// InitProducerId for a new id instead. A value that may be in the log is given up (info):
    /// the new identity could not be deduplicated against it. Values of `known_unwritten`
    /// partitions are exempt (see [`Producer::refused`]).
    fn leave_identity_when_drained(&mut self) {
        if self.leaving.is_none() || self.queue.iter().any(|p| p.in_flight) {
            return;
        }
        let leaving = self.leaving.take().expect("checked");
        self.identity = match self.identity {
            Some((id, epoch)) if !leaving.fenced && epoch < i16::MAX => Some((id, epoch + 1)),
            _ => None,
        };
        let (identity, known_unwritten) = (self.identity, &leaving.known_unwritten);
        tracing::debug!(process = self.process.0, ?identity, ?known_unwritten, "producer identity left");
        self.next_sequence.clear();
        self.partitions.clear();
        for mut pending in std::mem::take(&mut self.queue) {
            if pending.acked {
                continue; // recorded already; the new epoch's windows start empty
            }
            if pending.maybe_written && !leaving.known_unwritten.contains(&pending.partition) {
                self.give_up(&pending);
                continue;
            }
            pending.sequence = None;
            pending.maybe_written = false;
            pending.attempts = 0;
            self.queue.push_back(pending);
        }
    }

    fn assign_sequences(&mut self) {
        for pending in self.queue.iter_mut().filter(|p| p.sequence.is_none()) {
            let next = self.next_sequence.entry(pending.partition).or_insert(0);
            pending.sequence = Some(*next);
            *next = if *next == i32::MAX { 0 } else { *next + 1 };
        }
    }

    fn request(&self, pending: &Pending) -> ProduceRequest {
        let (producer_id, epoch) = self.identity.unwrap_or((-1, -1));
        let batch = encode_batch(pending.value, producer_id, epoch, pending.sequence.unwrap_or(0));
        ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(self.config.acks)
            .with_timeout_ms(REQUEST_TIMEOUT.as_millis() as i32)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(&self.config.topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(pending.partition)
                    .with_records(Some(batch))])])
    }
}

/// A Produce request frame, length prefix included.
fn encode_request(correlation_id: i32, client_id: &str, request: &ProduceRequest) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())))
        .encode(&mut buf, ApiKey::Produce.request_header_version(PRODUCE_VERSION))
        .expect("a request header encodes");
    request.encode(&mut buf, PRODUCE_VERSION).expect("a produce request encodes");
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// The Produce answer in `frame` if it decodes and answers `correlation_id`.
fn decode_produce_response(mut frame: Bytes, correlation_id: i32) -> Option<ProduceResponse> {
    let header = ResponseHeader::decode(&mut frame, ApiKey::Produce.response_header_version(PRODUCE_VERSION)).ok()?;
    if header.correlation_id != correlation_id {
        return None;
    }
    ProduceResponse::decode(&mut frame, PRODUCE_VERSION).ok()
}

async fn init_producer_id(link: &mut Link) -> Option<(i64, i16)> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match link.send(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(request)).await {
        Ok(ResponseKind::InitProducerId(r)) if ErrorCode(r.error_code).is_none() => {
            Some((r.producer_id.0, r.producer_epoch))
        }
        _ => None,
    }
}

/// One batch holding one record whose value is the unique value (8 bytes, big-endian), stamped
/// with the (simulated) wall clock as a real producer's CreateTime (retention judges by it).
fn encode_batch(value: Value, producer_id: i64, producer_epoch: i16, sequence: i32) -> Bytes {
    let value = Some(Bytes::copy_from_slice(&value.0.to_be_bytes()));
    let record = BatchRecord { key: None, value, timestamp: broker::env::now_ms() };
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

/// Bytes a final read asks for per fetch.
const FINAL_READ_FETCH_MAX_BYTES: i32 = 1 << 20;

/// One fetch of `partition` from `offset`, asking for at most `max_bytes` (the broker still
/// returns a first batch that is larger).
pub(crate) async fn fetch(
    router: &mut Router,
    topic: &str,
    partition: Partition,
    offset: i64,
    max_wait_ms: i32,
    max_bytes: i32,
) -> FetchResult {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_isolation_level(1)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(router.epoch(partition))
                .with_fetch_offset(offset)
                .with_partition_max_bytes(max_bytes),
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
                Some(data) if ErrorCode(data.error_code).is_none() => match decode_values(data.records) {
                    // Whole batches come back: drop records before the position.
                    Ok(records) => FetchResult::Records {
                        records: records.into_iter().filter(|(o, _)| *o >= offset).collect(),
                        high_watermark: data.high_watermark,
                    },
                    Err(_) => FetchResult::Error,
                },
                Some(data) if ErrorCode(data.error_code) == ErrorCode::OFFSET_OUT_OF_RANGE => FetchResult::OutOfRange,
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
            ErrorCode(p.error_code).is_none().then_some(p.offset)
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
    fetch_max_bytes: i32,
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
            match fetch(&mut link, &topic, partition, position, 200, fetch_max_bytes).await {
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
        let invoked = recorder.now_ns();
        if let Some(latest) = list_offset(&mut link, &topic, partition, -1).await {
            // The end this read goes to: what the checkers compare earlier reads with.
            recorder.record(process, invoked, Outcome::Ok, Op::ListLatest { partition, offset: Some(latest) });
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
        match fetch(&mut link, &topic, partition, position, 100, FINAL_READ_FETCH_MAX_BYTES).await {
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
