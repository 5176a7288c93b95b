//! The request-path fuzzer (`cargo fuzz-broker [--frames N | --seconds S] [--seed S]`). An
//! example of the broker package so that it builds with the broker's dependencies only.
//!
//! Feeds one in-process broker (a broker and its controller, data in a temporary directory)
//! frames through the same function a connection uses (`server::handle_frame`: decode, handle,
//! encode), for every API and version the broker advertises:
//! - the corpus: requests captured from kafka-python and librdkafka (`tests/corpus/*.bin`,
//!   see `tests/corpus/README.md`) and one generated request per advertised (API, version);
//! - mutations of the corpus (bit flips, truncation, counts and lengths set to extremes,
//!   overlong varints, splices, insertions and deletions), seeded: a run replays;
//! - every extreme-count variant of every generated request, round-robin.
//!
//! Each frame is handled in its own task with a deadline (a mutated fetch may long-poll); a
//! panic is counted, not fatal (this binary is built with the `release-unwind` profile). At the
//! end it prints frames run, panics, frames/s and peak memory (VmHWM), and exits 1 if anything
//! panicked.
#![allow(clippy::disallowed_methods)] // a real process: real files, clocks and /proc

#[cfg(madsim)]
fn main() {
    eprintln!("the fuzzer runs only outside the simulator");
}

#[cfg(not(madsim))]
fn main() {
    real::main()
}

#[cfg(not(madsim))]
mod real {
    use broker::protocol::client::Connection;
    use broker::protocol::hostile::{extreme_count_variants, sample_frames, Mutator, SampleFrame};
    use broker::server::{self, BrokerConfig};
    use broker::storage::mem::MemDisk;
    use broker::storage::real::RealDisk;
    use broker::storage::Disk;
    use bytes::Bytes;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// The topic the generated corpus names; created before the run so produces and fetches reach a
    /// real log.
    const FUZZ_TOPIC: &str = "fuzz-topic";
    /// Every this many frames the topics the frames created (mutated CreateTopics, Metadata
    /// auto-creating random names) are deleted, so the run measures the request path and not an
    /// ever-growing cluster.
    const CLEANUP_EVERY_FRAMES: u64 = 100_000;
    /// A frame still being handled after this is dropped (long polls, delayed produces).
    const FRAME_DEADLINE: Duration = Duration::from_millis(50);
    const USAGE: &str = "usage: fuzz [--frames N] [--seconds S] [--seed S] [--corpus DIR] [--real-disk]
      Feeds the broker's request path N frames (default 1,000,000) or for S seconds. The broker
      stores on an in-memory disk (the request path is under test, not fsync latency) unless
      --real-disk puts it in a temporary directory.";

    struct Options {
        frames: u64,
        seconds: Option<u64>,
        seed: u64,
        corpus: String,
        real_disk: bool,
    }

    fn parse_args() -> Result<Options, String> {
        let mut options =
            Options { frames: 1_000_000, seconds: None, seed: 1, corpus: "tests/corpus".to_string(), real_disk: false };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--frames" => {
                    options.frames = value()?.replace('_', "").parse().map_err(|e| format!("--frames: {e}"))?
                }
                "--seconds" => options.seconds = Some(value()?.parse().map_err(|e| format!("--seconds: {e}"))?),
                "--seed" => options.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
                "--corpus" => options.corpus = value()?,
                "--real-disk" => options.real_disk = true,
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
            }
        }
        Ok(options)
    }

    /// Captured frames (`*.bin`, one request without its length prefix each), as samples.
    fn load_corpus(dir: &Path) -> Vec<SampleFrame> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .filter_map(|p| {
                let frame = Bytes::from(std::fs::read(&p).ok()?);
                let api_key =
                    kafka_protocol::messages::ApiKey::try_from(i16::from_be_bytes([*frame.first()?, *frame.get(1)?]))
                        .ok()?;
                let version = i16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]);
                // The body starts after the header; 8 bytes is a safe lower bound for mutations.
                Some(SampleFrame { api_key, version, frame, body_start: 8 })
            })
            .collect()
    }

    /// Peak resident memory of this process, from /proc (kB).
    fn peak_rss_kb() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn main() {
        let options = match parse_args() {
            Ok(options) => options,
            Err(message) => {
                eprintln!("{message}");
                std::process::exit(2);
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let panics = runtime.block_on(fuzz(options));
        std::process::exit(if panics == 0 { 0 } else { 1 });
    }

    async fn fuzz(options: Options) -> u64 {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = BrokerConfig::default();
        config.set("listeners", "PLAINTEXT://127.0.0.1:0").expect("valid");
        config.set("log.dirs", dir.path().to_str().expect("utf-8 path")).expect("valid");
        let disk: Arc<dyn Disk> = if options.real_disk { Arc::new(RealDisk) } else { Arc::new(MemDisk::new()) };
        let handle = server::start(config, disk).await.expect("broker starts");
        let broker = handle.broker.clone().expect("broker role");
        create_fuzz_topic(&handle.local_addr.to_string()).await;

        let generated = sample_frames(FUZZ_TOPIC);
        let captured = load_corpus(Path::new(&options.corpus));
        let corpus: Vec<SampleFrame> = generated.iter().cloned().chain(captured.iter().cloned()).collect();
        let extremes: Vec<Bytes> = generated.iter().flat_map(extreme_count_variants).collect();
        println!(
            "corpus: {} generated requests (every advertised API and version), {} captured from real clients, {} extreme-count variants",
            generated.len(),
            captured.len(),
            extremes.len()
        );
        let mut mutator = Mutator::new(options.seed);
        let deadline = options.seconds.map(|s| Instant::now() + Duration::from_secs(s));
        let started = Instant::now();
        let (mut frames, mut panics, mut answered, mut refused, mut waiting) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut next_extreme = 0usize;
        let mut created = 0usize;
        let mut time_by_api: std::collections::BTreeMap<i16, Duration> = Default::default();
        while frames < options.frames && deadline.is_none_or(|d| Instant::now() < d) {
            let frame = match mutator.below(10) {
                0 => corpus[mutator.below(corpus.len())].frame.clone(),
                1..=3 => {
                    next_extreme = (next_extreme + 1) % extremes.len();
                    extremes[next_extreme].clone()
                }
                _ => {
                    let sample = &corpus[mutator.below(corpus.len())];
                    let other = &corpus[mutator.below(corpus.len())];
                    mutator.mutate(sample, other)
                }
            };
            frames += 1;
            let api_started = Instant::now();
            let api = i16::from_be_bytes([frame.first().copied().unwrap_or(0), frame.get(1).copied().unwrap_or(0)]);
            let mut task = tokio::spawn({
                let (broker, frame) = (broker.clone(), frame.clone());
                async move { server::handle_frame(&broker, frame, "/fuzz").await }
            });
            match tokio::time::timeout(FRAME_DEADLINE, &mut task).await {
                Ok(Ok(Ok(_))) => answered += 1,
                Ok(Ok(Err(_))) => refused += 1,
                Ok(Err(e)) if e.is_panic() => {
                    panics += 1;
                    let path = format!("fuzz-panic-{}-{frames}.bin", options.seed);
                    let _ = std::fs::write(&path, &frame);
                    eprintln!("PANIC on frame {frames} (saved to {path})");
                }
                Ok(Err(_)) => refused += 1,
                Err(_) => {
                    task.abort();
                    waiting += 1;
                }
            }
            *time_by_api.entry(api).or_insert(Duration::ZERO) += api_started.elapsed();
            if frames % CLEANUP_EVERY_FRAMES == 0 {
                created += delete_created_topics(&broker).await;
            }
            if frames % 1_000_000 == 0 {
                let rate = frames as f64 / started.elapsed().as_secs_f64();
                println!(
                    "{frames} frames, {panics} panics, {rate:.0} frames/s, peak RSS {} MiB",
                    peak_rss_kb().unwrap_or(0) / 1024
                );
            }
        }
        let elapsed = started.elapsed();
        let serving = still_serves(&handle.local_addr.to_string()).await;
        let mut slowest: Vec<(i16, Duration)> = time_by_api.into_iter().collect();
        slowest.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        let slowest: Vec<String> = slowest.iter().take(4).map(|(api, d)| format!("api {api}: {d:.1?}")).collect();
        println!("time by api key:   {}", slowest.join(", "));
        println!("frames run:        {frames}");
        println!("panics:            {panics}");
        println!(
            "answered:          {answered}   refused (error or close): {refused}   dropped while waiting: {waiting}"
        );
        println!("frames/s:          {:.0}", frames as f64 / elapsed.as_secs_f64());
        println!("peak memory:       {} MiB (VmHWM)", peak_rss_kb().unwrap_or(0) / 1024);
        created += delete_created_topics(&broker).await;
        println!(
            "topics created:    {created} (by mutated CreateTopics and auto-creating Metadata; deleted every {CLEANUP_EVERY_FRAMES} frames)"
        );
        println!("broker afterwards: {}", if serving { "serving" } else { "NOT SERVING" });
        handle.shutdown().await.expect("clean shutdown");
        if serving {
            panics
        } else {
            panics + 1
        }
    }

    /// Deletes every topic but the fuzz topic through the request path; returns how many.
    async fn delete_created_topics(broker: &Arc<broker::server::Broker>) -> usize {
        use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::StrBytes;
        let names: Vec<String> = broker.meta().image.topics.keys().filter(|n| *n != FUZZ_TOPIC).cloned().collect();
        for chunk in names.chunks(1_000) {
            let topics = chunk
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(TopicName(StrBytes::from_string(n.clone())))))
                .collect();
            let request =
                RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_timeout_ms(5_000).with_topics(topics));
            let (frame, _) = broker::protocol::hostile::encode_request(ApiKey::DeleteTopics, 6, 1, &request);
            let _ = tokio::time::timeout(Duration::from_secs(10), server::handle_frame(broker, frame, "/fuzz")).await;
        }
        names.len()
    }

    async fn create_fuzz_topic(addr: &str) {
        use kafka_protocol::messages::create_topics_request::CreatableTopic;
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::StrBytes;
        let mut conn = Connection::connect(addr, "fuzz-setup").await.expect("connect");
        let topic = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(FUZZ_TOPIC)))
            .with_num_partitions(2)
            .with_replication_factor(1);
        let request = CreateTopicsRequest::default().with_timeout_ms(5_000).with_topics(vec![topic]);
        conn.send(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(request)).await.expect("create the fuzz topic");
    }

    /// After the run, a well-formed Metadata request is still answered over TCP.
    async fn still_serves(addr: &str) -> bool {
        use kafka_protocol::messages::*;
        let Ok(mut conn) = Connection::connect(addr, "fuzz-check").await else { return false };
        matches!(
            conn.send(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default())).await,
            Ok(ResponseKind::Metadata(_))
        )
    }
}
