//! The process's fail-stop switch for disk failures.
//!
//! After a failed write or fsync nothing written since the last successful fsync can be trusted,
//! and a file that failed to sync must never be appended to again by this process (a later
//! append could become durable while the earlier bytes are lost: a hole). So, like Kafka
//! (`Exit.halt` when the metadata log fails, or when the last log directory goes offline):
//!
//! - the component that saw the failure first stops writing itself (the metadata log and a
//!   partition log each refuse every append after a failure; the log directory goes offline),
//! - then pulls this switch with the reason,
//! - and whoever runs the node exits the process without a clean shutdown: the `broker` binary
//!   exits with status 1 ([`super::cli_main`]); the simulator's node returns, and its
//!   supervisor starts it again after a delay, as systemd or Kubernetes would.
//!
//! Restart is the recovery: every log keeps the prefix of whole, checksummed frames or batches
//! and truncates a torn tail.

use super::signal::Signal;

/// Cloned into everything that can hit a fatal disk error. The first reason wins.
#[derive(Clone, Debug, Default)]
pub struct Halt {
    reason: Signal<String>,
}

impl Halt {
    /// Asks the process to stop now. The caller has already stopped writing.
    pub fn halt(&self, reason: String) {
        let logged = reason.clone();
        if self.reason.raise(reason) {
            tracing::error!(reason = logged, "fatal disk error: the process halts (restart it to recover)");
        }
    }

    /// The reason, once halted.
    pub fn reason(&self) -> Option<String> {
        self.reason.get()
    }

    /// Resolves with the reason once something halted the process.
    pub async fn halted(&self) -> String {
        self.reason.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_waiters_hear_it() {
        let halt = Halt::default();
        assert_eq!(halt.reason(), None);
        let waiter = {
            let halt = halt.clone();
            tokio::spawn(async move { halt.halted().await })
        };
        halt.halt("metadata log failed".to_string());
        halt.halt("a later failure".to_string());
        assert_eq!(waiter.await.unwrap(), "metadata log failed");
        assert_eq!(halt.halted().await, "metadata log failed", "resolves at once when already halted");
    }
}
