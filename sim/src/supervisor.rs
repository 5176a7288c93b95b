//! The supervisor: a node whose process exited by itself (a fail-stop halt on a disk error, or
//! a start that failed) is started again after a delay drawn from the seed, as systemd
//! (`Restart=always`) or a Kubernetes pod's restart policy would. Consecutive failed starts back
//! off (doubling, capped), as `CrashLoopBackOff` does. A node the nemesis or the heal phase
//! restarted in the meantime is left alone. Every exit and restart goes on the fault timeline.

use crate::client::Recorder;
use crate::cluster::World;
use crate::nemesis::apply::note;
use crate::nemesis::FaultEvent;
use crate::observation::{ImpairmentKind, NodeRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The first restart comes after a delay drawn from this range (milliseconds).
const RESTART_DELAY_MS: std::ops::RangeInclusive<u64> = 500..=2_500;
/// Each consecutive failed start doubles the delay, up to this.
const RESTART_DELAY_MS_MAX: u64 = 10_000;

/// Supervises every node of `world` until `stop` is notified.
pub async fn supervise(
    world: Arc<World>,
    seed: u64,
    faults: Arc<Mutex<Vec<FaultEvent>>>,
    recorder: Recorder,
    stop: Arc<Notify>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Failed starts in a row, per node: the backoff.
    let mut failed_starts: BTreeMap<NodeRef, u32> = BTreeMap::new();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            _ = world.exits.reported.notified() => {}
        }
        for exit in world.exits.take_new() {
            if !world.take_exit(&exit) {
                continue;
            }
            let failures = failed_starts.entry(exit.node).or_default();
            *failures = if exit.while_starting { failures.saturating_add(1) } else { 0 };
            let backoff = 1u64 << (*failures).min(5);
            let delay_ms = (rng.gen_range(RESTART_DELAY_MS) * backoff).min(RESTART_DELAY_MS_MAX);
            let what = if exit.while_starting { "failed to start" } else { "halted" };
            let impaired = world.impair_since(Some(exit.node), ImpairmentKind::Down, exit.at_ns);
            note(&faults, &recorder, &exit.node.to_string(), format!("{what}: {}", exit.reason));
            note(&faults, &recorder, &exit.node.to_string(), format!("supervisor: restart in {delay_ms} ms"));
            let (world, faults, recorder) = (world.clone(), faults.clone(), recorder.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                if world.restart_exited(exit.node, exit.incarnation) {
                    note(&faults, &recorder, &exit.node.to_string(), "supervisor: restart");
                }
                // Started again, by the supervisor or by whoever restarted it meanwhile.
                world.restore(impaired);
            });
        }
    }
}
