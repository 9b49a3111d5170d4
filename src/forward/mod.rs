//! Forwarding events to the HTTP endpoints an account names (`[[accounts.event_targets]]`, and
//! those added through the admin API, which every replica looks for every `RECONCILE`):
//! each event of the account's log that the target's types match is POSTed as its envelope,
//! signed per Standard Webhooks (`sign.rs`), in the log's order, and retried until the target
//! takes it (any `2xx`) or `events.forward_retry_secs` after it was kept; then it is set aside
//! as failed (noted in the store, counted) and the target gets the next one.
//!
//! One replica at a time forwards to a target: it holds the target's lease in the store and
//! renews it before each attempt. Its progress is the target's cursor in the store, moved past
//! an event once the event is delivered or set aside. A replica that dies mid-attempt leaves
//! the cursor before that event, and whoever takes the lease next (after it lapses, or at once
//! when a replica shuts down and gives it up) sends that event again: at least once, with the
//! same `webhook-id`, never out of order. A new target starts at the oldest event the log
//! keeps.

mod sign;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channels::retry::equal_jitter;
use crate::config::{Config, EventTarget, Forwarding, Secret};
use crate::domain::{AccountSid, type_matches};
use crate::metrics::{ForwardLabels, Metrics};
use crate::store::{LoggedEvent, Store};

/// How long a lease lasts without renewal: a replica that died hands its targets over after
/// this.
const LEASE: Duration = Duration::from_secs(15);
/// How often a replica without the lease asks for it.
const LEASE_CHECK: Duration = Duration::from_secs(1);
/// How often an idle forwarder asks the log for new events.
const POLL: Duration = Duration::from_millis(100);
const PAGE: usize = 100;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// How often each replica looks for targets added or removed through the admin API.
const RECONCILE: Duration = Duration::from_secs(2);

/// Starts the forwarders: one per target of the configuration or of the admin API, on
/// `tasks`; targets the API adds or removes are started or stopped within `RECONCILE`. They
/// stop at `shutdown`, giving their leases up.
pub fn start(
    config: Arc<Config>,
    store: Arc<dyn Store>,
    node: String,
    metrics: Arc<Metrics>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), String> {
    if config.accounts.is_empty() {
        return Ok(());
    }
    let client = crate::channels::push_client::plain_client(config.forwarding.attempt_timeout)
        .map_err(|e| format!("event forwarding: {e}"))?;
    let supervisor = Supervisor {
        config,
        store,
        node,
        metrics,
        client,
        tasks: tasks.clone(),
        running: HashMap::new(),
    };
    tasks.spawn(supervisor.run(shutdown));
    Ok(())
}

/// Keeps one forwarder running per target there is.
struct Supervisor {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    node: String,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    tasks: TaskTracker,
    /// Per (account, target): what it was started with, and how to stop it.
    running: HashMap<(AccountSid, String), (String, CancellationToken)>,
}

impl Supervisor {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            self.reconcile(&shutdown).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RECONCILE) => {}
            }
        }
    }

    async fn reconcile(&mut self, shutdown: &CancellationToken) {
        for account in &self.config.accounts {
            let mut wanted = account.event_targets.clone();
            let stored = self.store.event_targets(&account.sid).await;
            let known = stored.is_ok();
            for t in stored.unwrap_or_default() {
                if !wanted.iter().any(|w| w.name == t.name) {
                    wanted.push(EventTarget {
                        name: t.name,
                        url: t.url,
                        types: t.types,
                        secret: Secret::new(t.secret),
                    });
                }
            }
            for target in &wanted {
                let key = (account.sid.clone(), target.name.clone());
                let fingerprint = format!(
                    "{}\n{}\n{}",
                    target.url,
                    target.types.join(","),
                    target.secret.expose()
                );
                if let Some((running, token)) = self.running.get(&key) {
                    if *running == fingerprint {
                        continue;
                    }
                    token.cancel();
                }
                let token = shutdown.child_token();
                self.tasks
                    .spawn(self.forwarder(&account.sid, target).run(token.clone()));
                self.running.insert(key, (fingerprint, token));
            }
            // Only a store that answered says a target is gone.
            if known {
                self.running.retain(|(sid, name), (_, token)| {
                    let keep = *sid != account.sid || wanted.iter().any(|w| w.name == *name);
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
            }
        }
    }

    fn forwarder(&self, account: &AccountSid, target: &EventTarget) -> Forwarder {
        Forwarder {
            labels: ForwardLabels {
                account: account.to_string(),
                target: target.name.clone(),
                outcome: "",
            },
            key: target.key(),
            account: account.clone(),
            target: target.clone(),
            settings: self.config.forwarding,
            store: self.store.clone(),
            // Each forwarder holds the lease under a name of its own: a forwarder replaced on
            // this replica (its target changed) cannot renew or give up its successor's lease.
            node: format!("{}:{}", self.node, uuid::Uuid::new_v4().simple()),
            client: self.client.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

struct Forwarder {
    account: AccountSid,
    target: EventTarget,
    key: Vec<u8>,
    settings: Forwarding,
    store: Arc<dyn Store>,
    node: String,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    labels: ForwardLabels,
}

/// Why a forwarder stopped forwarding for now.
enum Stop {
    /// Shutdown.
    Shutdown,
    /// Another replica holds the lease, or the store did not answer.
    LostLease,
}

#[derive(Deserialize)]
struct Head {
    id: String,
    #[serde(rename = "type")]
    kind: String,
}

impl Forwarder {
    async fn run(self, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if self.hold().await {
                match self.forward(&shutdown).await {
                    Stop::Shutdown => break,
                    Stop::LostLease => {}
                }
            }
            // Without the lease, or after the store failed: ask again in a while, never in a
            // tight loop.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(LEASE_CHECK) => {}
            }
        }
        // Another replica takes over at once instead of when the lease lapses.
        if let Err(e) = self
            .store
            .release_forwarder(&self.account, &self.target.name, &self.node)
            .await
        {
            tracing::debug!(target_name = self.target.name, error = %e, "could not give the forwarding lease up");
        }
    }

    async fn hold(&self) -> bool {
        self.store
            .hold_forwarder(&self.account, &self.target.name, &self.node, LEASE)
            .await
            .unwrap_or(false)
    }

    /// Forwards while this replica holds the lease.
    async fn forward(&self, shutdown: &CancellationToken) -> Stop {
        let mut cursor = match self
            .store
            .forward_cursor(&self.account, &self.target.name)
            .await
        {
            Ok(cursor) => cursor,
            Err(_) => return Stop::LostLease,
        };
        loop {
            // What an admin asked to send again goes first.
            if let Some(stop) = self.replay(shutdown).await {
                return stop;
            }
            let page = match self
                .store
                .read_events(&self.account, cursor.as_deref(), PAGE)
                .await
            {
                Ok(page) => page,
                Err(_) => return Stop::LostLease,
            };
            if page.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return Stop::Shutdown,
                    _ = tokio::time::sleep(POLL) => {}
                }
                if !self.hold().await {
                    return Stop::LostLease;
                }
                continue;
            }
            for event in page {
                if let Some(stop) = self.replay(shutdown).await {
                    return stop;
                }
                let give_up_at = kept_at(&event.position) + self.settings.retry_for;
                if let Some(stop) = self.hand_over(&event, give_up_at, shutdown).await {
                    return stop;
                }
                if !self
                    .store
                    .set_forward_cursor(
                        &self.account,
                        &self.target.name,
                        &self.node,
                        &event.position,
                    )
                    .await
                    .unwrap_or(false)
                {
                    // Sent, but the progress is not recorded: whoever forwards next sends
                    // it again (the same webhook-id).
                    return Stop::LostLease;
                }
                cursor = Some(event.position);
            }
        }
    }

    /// Sends the events set aside that an admin asked to replay, oldest first, each with a
    /// fresh retry budget; one the log no longer keeps is dropped from the queue.
    async fn replay(&self, shutdown: &CancellationToken) -> Option<Stop> {
        loop {
            let position = match self
                .store
                .next_replay(&self.account, &self.target.name)
                .await
            {
                Ok(Some(position)) => position,
                Ok(None) => return None,
                Err(_) => return Some(Stop::LostLease),
            };
            match self.store.event_at(&self.account, &position).await {
                Ok(Some(event)) => {
                    let give_up_at = now() + self.settings.retry_for;
                    if let Some(stop) = self.hand_over(&event, give_up_at, shutdown).await {
                        return Some(stop);
                    }
                }
                Ok(None) => tracing::warn!(
                    account = %self.account,
                    target_name = self.target.name,
                    position,
                    "a replayed event is past the log's retention; dropped"
                ),
                Err(_) => return Some(Stop::LostLease),
            }
            if self
                .store
                .finish_replay(&self.account, &self.target.name, &position)
                .await
                .is_err()
            {
                return Some(Stop::LostLease);
            }
        }
    }

    /// Delivers one event, retrying until `give_up_at`, or sets it aside; `Some` when
    /// forwarding must stop before the event is done with.
    async fn hand_over(
        &self,
        event: &LoggedEvent,
        give_up_at: Duration,
        shutdown: &CancellationToken,
    ) -> Option<Stop> {
        let Ok(head) = serde_json::from_slice::<Head>(&event.envelope) else {
            tracing::error!(
                position = event.position,
                "an event in the log is not an envelope; skipped"
            );
            return None;
        };
        if !self.target.types.is_empty()
            && !self
                .target
                .types
                .iter()
                .any(|p| type_matches(p, &head.kind))
        {
            return None;
        }
        let mut delay = FIRST_RETRY;
        loop {
            if !self.hold().await {
                return Some(Stop::LostLease);
            }
            let result = match self
                .holding(self.attempt(&head.id, &event.envelope), shutdown)
                .await
            {
                Ok(result) => result,
                Err(stop) => return Some(stop),
            };
            match result {
                Ok(()) => {
                    self.count("delivered");
                    return None;
                }
                Err(why) if now() >= give_up_at => {
                    self.count("failed");
                    tracing::warn!(
                        account = %self.account,
                        target_name = self.target.name,
                        event = head.id,
                        reason = why,
                        "event set aside: the target did not take it within events.forward_retry_secs"
                    );
                    if self
                        .store
                        .note_failed_forward(&self.account, &self.target.name, &event.position)
                        .await
                        .is_err()
                    {
                        return Some(Stop::LostLease);
                    }
                    return None;
                }
                Err(why) => {
                    self.count("retried");
                    tracing::debug!(
                        target_name = self.target.name,
                        event = head.id,
                        reason = why,
                        ?delay,
                        "forwarding failed; retrying"
                    );
                    let pause = equal_jitter(delay).min(give_up_at.saturating_sub(now()));
                    if let Err(stop) = self.holding(tokio::time::sleep(pause), shutdown).await {
                        return Some(stop);
                    }
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Runs `work` while renewing the lease every third of it, so that a long attempt or a
    /// long pause between attempts never lets another replica take the target meanwhile.
    async fn holding<T>(
        &self,
        work: impl std::future::Future<Output = T>,
        shutdown: &CancellationToken,
    ) -> Result<T, Stop> {
        tokio::pin!(work);
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + LEASE / 3, LEASE / 3);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                out = &mut work => return Ok(out),
                _ = renew.tick() => {
                    if !self.hold().await {
                        return Err(Stop::LostLease);
                    }
                }
            }
        }
    }

    async fn attempt(&self, id: &str, envelope: &bytes::Bytes) -> Result<(), String> {
        let timestamp = now().as_secs();
        let signature = sign::sign(&self.key, id, timestamp, envelope);
        let answer = self
            .client
            .post(&self.target.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(envelope.clone())
            .send()
            .await
            .map_err(crate::channels::push_client::describe)?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the target answered {status}"))
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .event_forwards
            .get_or_create(&ForwardLabels {
                outcome,
                ..self.labels.clone()
            })
            .inc();
    }
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// When the log kept an event: its position's milliseconds.
fn kept_at(position: &str) -> Duration {
    let ms = position
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_age_comes_from_its_position() {
        assert_eq!(
            kept_at("1765100000123-4"),
            Duration::from_millis(1765100000123)
        );
        assert_eq!(kept_at("garbage"), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_within_half_and_the_whole_delay() {
        for _ in 0..100 {
            let d = equal_jitter(Duration::from_secs(8));
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }
}
