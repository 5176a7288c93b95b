//! A one-way signal: raised once, awaited by any number of tasks (shutdown, halt).
//!
//! Not tokio's `watch`: a `watch` channel spreads its waiters over several `Notify`s picked by a
//! generator seeded from process-wide state, so the order its waiters wake in differs between two
//! runs of one seed in the same process. The simulator's determinism check caught it as soon as
//! nodes dropped their shutdown channel when they halted. A mutex and one `Notify` wake waiters in
//! the order they started waiting.

use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Cloned into every task that waits for it; the first value raised is the one kept.
#[derive(Debug)]
pub struct Signal<T> {
    inner: Arc<Inner<T>>,
}

#[derive(Debug)]
struct Inner<T> {
    value: Mutex<Option<T>>,
    raised: Notify,
}

impl<T> Clone for Signal<T> {
    fn clone(&self) -> Self {
        Signal { inner: self.inner.clone() }
    }
}

impl<T> Default for Signal<T> {
    fn default() -> Self {
        Signal { inner: Arc::new(Inner { value: Mutex::new(None), raised: Notify::new() }) }
    }
}

impl<T: Clone> Signal<T> {
    /// Raises the signal with `value`; true if this call raised it (later values are dropped).
    pub fn raise(&self, value: T) -> bool {
        {
            let mut current = self.inner.value.lock().expect("signal lock poisoned");
            if current.is_some() {
                return false;
            }
            *current = Some(value);
        }
        self.inner.raised.notify_waiters();
        true
    }

    /// The value, once raised.
    pub fn get(&self) -> Option<T> {
        self.inner.value.lock().expect("signal lock poisoned").clone()
    }

    /// Resolves with the value once the signal is raised (at once if it already is).
    pub async fn wait(&self) -> T {
        loop {
            // Created before the check: `notify_waiters` reaches futures that exist, polled or not.
            let raised = self.inner.raised.notified();
            if let Some(value) = self.get() {
                return value;
            }
            raised.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_value_wins_and_every_waiter_hears_it() {
        let signal = Signal::default();
        assert_eq!(signal.get(), None);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let signal = signal.clone();
                tokio::spawn(async move { signal.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(signal.raise("first"));
        assert!(!signal.raise("second"));
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), "first");
        }
        assert_eq!(signal.wait().await, "first", "resolves at once when already raised");
    }
}
