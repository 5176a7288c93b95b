//! The hostile client: a node that mixes malformed and oversized requests into a run (off by
//! default; `workload.hostile_clients` turns it on, the swarm scenarios do). It sends the
//! broker's own fuzz corpus ([`broker::protocol::hostile`]): mutated requests of every
//! advertised API and version, huge counts and lengths, frames longer than
//! `socket.request.max.bytes`, and frames whose body never completes. It names only its own
//! topic, so whatever it manages to create, write or delete never touches the workload's data;
//! every checker must still pass.

use broker::protocol::hostile::{extreme_count_variants, sample_frames, Mutator, SampleFrame};
use bytes::Bytes;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The only topic the hostile client names.
pub const HOSTILE_TOPIC: &str = "hostile-client-topic";
/// How long it waits for a connection or an answer before giving up on the connection.
const IO_TIMEOUT: Duration = Duration::from_millis(500);
/// Frames on one connection before it opens a new one (unless the broker closes it first).
const FRAMES_PER_CONNECTION_MAX: usize = 20;
/// A length prefix larger than any broker accepts.
const OVERSIZED_FRAME_BYTES: u32 = 200 * 1024 * 1024;
/// Answers larger than this are not read (the client gives up on the connection).
const ANSWER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What the hostile client did, for the fault timeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostileCounts {
    pub frames: u64,
    pub answered: u64,
    pub closed_by_broker: u64,
    pub connections: u64,
}

/// What one frame was.
enum Attack {
    Frame(Bytes),
    /// A length prefix over `socket.request.max.bytes`, and nothing else.
    Oversized,
    /// A length prefix, then only part of the body.
    HalfSent(Bytes),
}

/// Runs until `stop`, attacking a random broker of `bootstrap` at a time.
pub async fn run_hostile_client(seed: u64, bootstrap: Vec<String>, stop: Arc<Notify>) -> HostileCounts {
    let samples = sample_frames(HOSTILE_TOPIC);
    let mut mutator = Mutator::new(seed);
    let mut counts = HostileCounts::default();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let addr = &bootstrap[mutator.below(bootstrap.len())];
        let session = attack_one_connection(addr, &samples, &mut mutator, &mut counts);
        tokio::select! {
            biased;
            _ = &mut stopped => return counts,
            _ = session => {}
        }
        let pause = Duration::from_millis(10 + mutator.below(200) as u64);
        tokio::select! {
            biased;
            _ = &mut stopped => return counts,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn attack_one_connection(addr: &str, samples: &[SampleFrame], mutator: &mut Mutator, counts: &mut HostileCounts) {
    let Ok(Ok(mut stream)) = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await else { return };
    counts.connections += 1;
    for _ in 0..1 + mutator.below(FRAMES_PER_CONNECTION_MAX) {
        let attack = choose(samples, mutator);
        counts.frames += 1;
        let bytes = match &attack {
            Attack::Frame(frame) => with_length(frame, frame.len() as u32),
            Attack::Oversized => OVERSIZED_FRAME_BYTES.to_be_bytes().to_vec(),
            Attack::HalfSent(frame) => {
                let mut bytes = with_length(frame, frame.len() as u32 + 1 + mutator.below(1_000) as u32);
                bytes.truncate(4 + mutator.below(frame.len() + 1));
                bytes
            }
        };
        let written = async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        };
        if !matches!(tokio::time::timeout(IO_TIMEOUT, written).await, Ok(Ok(()))) {
            return;
        }
        if !matches!(attack, Attack::Frame(_)) {
            // The broker closes it (or waits out socket.io.timeout.ms); either way move on.
            return;
        }
        match tokio::time::timeout(IO_TIMEOUT, read_answer(&mut stream)).await {
            Ok(Some(())) => counts.answered += 1,
            Ok(None) => {
                counts.closed_by_broker += 1;
                return;
            }
            // No answer yet (a long poll, acks=0, or a delayed produce): give up on it.
            Err(_) => return,
        }
    }
}

fn choose(samples: &[SampleFrame], mutator: &mut Mutator) -> Attack {
    let sample = &samples[mutator.below(samples.len())];
    match mutator.below(100) {
        0..=69 => {
            let other = &samples[mutator.below(samples.len())];
            Attack::Frame(mutator.mutate(sample, other))
        }
        70..=89 => {
            let variants = (sample.frame.len() - sample.body_start) * 8;
            let pick = mutator.below(variants.max(1));
            Attack::Frame(extreme_count_variants(sample).nth(pick).unwrap_or_else(|| sample.frame.clone()))
        }
        90..=94 => Attack::Oversized,
        _ => Attack::HalfSent(sample.frame.clone()),
    }
}

fn with_length(frame: &[u8], length: u32) -> Vec<u8> {
    let mut bytes = length.to_be_bytes().to_vec();
    bytes.extend_from_slice(frame);
    bytes
}

/// Reads one answer frame; `None` when the broker closed the connection.
async fn read_answer(stream: &mut TcpStream) -> Option<()> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let size = u32::from_be_bytes(len) as usize;
    if size > ANSWER_BYTES_MAX {
        return None;
    }
    let mut body = vec![0u8; size];
    stream.read_exact(&mut body).await.ok()?;
    Some(())
}
