//! Withdrawing the presences of closed sockets, in batches. A replica whose sockets close
//! together (a shutdown, a network blip, a load balancer draining) used to make one store call
//! per socket at once: thousands of calls, many past the command timeout under load, each
//! logged. Closed sockets now queue their presence here, and one task withdraws what is queued
//! in a single store call per `BATCH` sockets. A lone close goes out at once, as before.
//!
//! A withdrawal that fails is not retried: the lease runs out by itself
//! (`websocket.presence_ttl_ms`), and until then a webhook finds the socket gone (the holder
//! answers `gone`, and the sender removes the presence).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::WebSocketChannel;
use crate::store::PresenceKey;

/// Presences withdrawn per store call.
const BATCH: usize = 500;
/// How often the task looks at the queue when nothing woke it (a safety net; pushes wake it).
const IDLE_CHECK: Duration = Duration::from_millis(500);

#[derive(Default)]
pub(super) struct Withdrawals {
    queue: Mutex<Vec<PresenceKey>>,
    wake: Notify,
}

impl Withdrawals {
    pub(super) fn push(&self, key: PresenceKey) {
        self.lock().push(key);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<PresenceKey> {
        let mut queue = self.lock();
        let n = queue.len().min(BATCH);
        queue.drain(..n).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PresenceKey>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl WebSocketChannel {
    /// Withdraws queued presences until shutdown has closed every socket and the queue is
    /// empty (a socket queues its presence before it leaves the registry, so an empty
    /// registry means every close is queued).
    pub(super) async fn withdraw_presences(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let batch = self.withdrawals.take();
            if batch.is_empty() {
                if shutdown.is_cancelled() && self.registry.len() == 0 {
                    return;
                }
                tokio::select! {
                    _ = self.withdrawals.wake.notified() => {}
                    _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
                    _ = tokio::time::sleep(IDLE_CHECK) => {}
                }
                continue;
            }
            if let Err(e) = self.store.remove_presences(&batch).await {
                tracing::warn!(
                    sockets = batch.len(),
                    error = %e,
                    "could not withdraw closed sockets' presences; their leases run out by themselves"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, SystemClock};
    use crate::domain::{AccountSid, Identity};
    use crate::metrics::Metrics;
    use crate::store::Store;
    use crate::store::memory::MemoryStore;
    use crate::store::metered::MeteredStore;
    use tokio_util::task::TaskTracker;

    /// Store calls of `operation` so far, read from the exposition as Prometheus would.
    fn calls(metrics: &Metrics, operation: &str) -> u64 {
        let series = format!(
            "callrelay_store_operation_duration_seconds_count{{operation=\"{operation}\"}} "
        );
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sockets_closing_together_are_withdrawn_in_a_few_store_calls() {
        let metrics = Arc::new(Metrics::new());
        let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(memory.clone(), &metrics));
        let config = crate::config::from_toml_str("").unwrap();
        let tasks = TaskTracker::new();
        let channel = WebSocketChannel::new(
            "here".into(),
            store,
            Arc::new(SystemClock),
            config.websocket.clone(),
            &config.limits,
            tasks.clone(),
            metrics.clone(),
        );
        let account = AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap();
        let mut leases = Vec::new();
        for i in 0..1200 {
            let identity = Identity::parse(&format!("user{i}")).unwrap();
            leases.push(
                channel
                    .connect(account.clone(), identity, None, false)
                    .await
                    .unwrap(),
            );
        }
        let now = SystemClock.now();
        let open = |i: usize| {
            let (memory, account) = (memory.clone(), account.clone());
            async move {
                let identity = Identity::parse(&format!("user{i}")).unwrap();
                memory
                    .targets(&account, &identity, now)
                    .await
                    .unwrap()
                    .sockets
                    .len()
            }
        };
        assert_eq!(open(0).await + open(1199).await, 2);

        // All close before the withdrawing task runs (as when closes outpace the store): they
        // wait in the queue, which it then empties in batches.
        drop(leases);
        let shutdown = CancellationToken::new();
        channel.start(shutdown.clone()).await.unwrap();
        // Shutdown waits for the queue to drain; the tracked tasks end.
        shutdown.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(10), tasks.wait())
            .await
            .expect("the withdrawals finish once every socket is closed");
        for i in [0, 599, 1199] {
            assert_eq!(open(i).await, 0, "user{i}'s presence is withdrawn");
        }
        assert_eq!(calls(&metrics, "remove_presence"), 0);
        assert_eq!(calls(&metrics, "remove_presences"), 3, "500 + 500 + 200");
    }
}
