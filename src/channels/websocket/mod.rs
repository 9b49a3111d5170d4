//! WebSocket bindings: a connection is a live binding of its identity on the replica that
//! holds it. Its presence in the store (renewed while the replica lives, expiring when it
//! dies) lets any replica find it; the replica bus carries the payload to the holder, which
//! acknowledges the hand-off. Delivery is never inferred from how many replicas a publish
//! reached.

mod acks;
mod queue;
mod registry;
mod wire;
mod withdrawals;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use queue::{Frame, QueueReceiver, queue};
use registry::Registry;
pub use registry::{Ack, AckWaiter, Handoff, LocalSocket};
use wire::WireMessage;

use super::Outcome;
use crate::clock::Clock;
use crate::config::{Limits, WebSocketConfig};
use crate::domain::SocketPresence;
use crate::domain::{AccountSid, CallNotification, Identity};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::store::{PresenceKey, Store, StoreError};

/// Presences written per store round trip when renewing.
const RENEW_BATCH: usize = 500;

pub struct WebSocketChannel {
    node: String,
    registry: Registry,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: WebSocketConfig,
    /// One permit per socket this replica may hold (`limits.max_sockets`), taken before the
    /// upgrade and given back when the socket's connection is closed: the socket's share of
    /// the process's file descriptors (its HTTP connection stops counting against
    /// `limits.max_connections` once upgraded).
    slots: Arc<Semaphore>,
    max_sockets: usize,
    max_sockets_per_identity: usize,
    pending: Mutex<HashMap<u64, oneshot::Sender<Handoff>>>,
    /// Remote deliveries whose webhook waits for the client's acknowledgement (`acks.rs`),
    /// each until its webhook's deadline.
    client_acks: Mutex<HashMap<u64, (oneshot::Sender<()>, Instant)>>,
    next_request: AtomicU64,
    tasks: TaskTracker,
    inbox_stop: CancellationToken,
    metrics: Arc<Metrics>,
    withdrawals: withdrawals::Withdrawals,
}

/// Why a socket could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("this replica holds the most sockets it may ({0})")]
    OverCapacity(usize),
    #[error("the identity already has {0} open sockets, the most allowed")]
    TooManyForIdentity(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A registered socket. Dropping it unregisters the socket here, withdraws its presence and
/// frees its slot: hold it until the connection is closed.
pub struct SocketLease {
    channel: Arc<WebSocketChannel>,
    pub socket: Arc<LocalSocket>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for SocketLease {
    fn drop(&mut self) {
        // Queued before the socket leaves the registry: once the registry is empty, every
        // closed socket's presence is in the queue (`withdrawals.rs`).
        let s = &self.socket;
        self.channel.withdrawals.push(PresenceKey {
            account_sid: s.account_sid.clone(),
            identity: s.identity.clone(),
            conn_id: s.conn_id.clone(),
        });
        self.channel.registry.unregister(&s.conn_id);
    }
}

impl WebSocketChannel {
    pub fn new(
        node: String,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: WebSocketConfig,
        limits: &Limits,
        tasks: TaskTracker,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            registry: Registry::default(),
            store,
            clock,
            config,
            slots: Arc::new(Semaphore::new(limits.max_sockets)),
            max_sockets: limits.max_sockets,
            max_sockets_per_identity: limits.max_sockets_per_identity,
            pending: Mutex::new(HashMap::new()),
            client_acks: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            tasks,
            inbox_stop: CancellationToken::new(),
            metrics,
            withdrawals: withdrawals::Withdrawals::default(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Stops listening on the replica bus (at the end of shutdown, once in-flight webhooks
    /// have their answers).
    pub fn stop_listening(&self) {
        self.inbox_stop.cancel();
    }

    pub fn live_sockets(&self) -> usize {
        self.registry.len()
    }

    /// Subscribes to this replica's inbox and starts renewing presences. Renewals stop at
    /// `shutdown`; the inbox listens until `stop_listening`, because webhooks still in flight
    /// when shutdown begins wait for other replicas' acknowledgements on it: an
    /// acknowledgement lost there would fail a delivery that happened, and Twilio's retry
    /// would ring the device again.
    pub async fn start(self: &Arc<Self>, shutdown: CancellationToken) -> Result<(), StoreError> {
        let inbox = self.store.subscribe(&self.node).await?;
        let me = self.clone();
        let stop = self.inbox_stop.clone();
        // Not on the tracker: draining the tracker is what the inbox outlives.
        tokio::spawn(async move { me.serve_inbox(inbox, stop).await });
        let me = self.clone();
        let stop = shutdown.clone();
        self.tasks
            .spawn(async move { me.renew_presences(stop).await });
        let me = self.clone();
        self.tasks
            .spawn(async move { me.withdraw_presences(shutdown).await });
        Ok(())
    }

    /// A slot for a socket that is not a device's (an app backend's event feed), counted
    /// against `limits.max_sockets` like every other socket, held for as long as it is kept.
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, ConnectError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ConnectError::OverCapacity(self.max_sockets))
    }

    /// Registers a new socket and announces it. When the store cannot be reached the socket
    /// is not registered: a socket nobody can find would swallow nothing but also receive
    /// nothing, and the client is better off retrying.
    pub async fn connect(
        self: &Arc<Self>,
        account_sid: AccountSid,
        identity: Identity,
        device_id: Option<String>,
        takes_acks: bool,
    ) -> Result<(SocketLease, QueueReceiver), ConnectError> {
        // Taken before anything else and held by the lease: concurrent connects cannot pass
        // the cap together, as a count checked before a store round trip would let them.
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ConnectError::OverCapacity(self.max_sockets))?;
        // Counted across replicas; a burst of simultaneous connects may pass it by a few.
        let open = self
            .store
            .targets(&account_sid, &identity, self.clock.now())
            .await?
            .sockets
            .len();
        if open >= self.max_sockets_per_identity {
            return Err(ConnectError::TooManyForIdentity(
                self.max_sockets_per_identity,
            ));
        }
        let (socket, rx) = self.registry.register(
            account_sid,
            identity,
            device_id,
            self.clock.now(),
            takes_acks,
            self.config.queue_capacity,
        );
        // Registered locally first, so a webhook that sees the presence finds the queue.
        let lease = SocketLease {
            channel: self.clone(),
            socket,
            _slot: slot,
        };
        let presence = self.presence(&lease.socket);
        self.store.put_presences(&[presence]).await?;
        Ok((lease, rx))
    }

    /// The lease starts when the store records it, by the store's clock: nothing here dates it.
    fn presence(&self, s: &LocalSocket) -> SocketPresence {
        SocketPresence {
            conn_id: s.conn_id.clone(),
            account_sid: s.account_sid.clone(),
            identity: s.identity.clone(),
            node: self.node.clone(),
            device_id: s.device_id.clone(),
            takes_acks: s.takes_acks,
            connected_at: s.connected_at,
            lease: self.config.presence_ttl,
        }
    }

    async fn renew_presences(self: Arc<Self>, shutdown: CancellationToken) {
        // Three renewals per lease: one lost round trip does not let a live socket lapse. After
        // a failure (Redis restarting), retry soon, so leases are back before they run out.
        let every = self.config.presence_ttl / 3;
        let retry = (self.config.presence_ttl / 10).max(std::time::Duration::from_millis(100));
        let mut wait = every;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let presences: Vec<SocketPresence> = self
                .registry
                .snapshot()
                .iter()
                .map(|s| self.presence(s))
                .collect();
            wait = every;
            for chunk in presences.chunks(RENEW_BATCH) {
                if let Err(e) = self.store.put_presences(chunk).await {
                    tracing::warn!(error = %e, sockets = presences.len(), "could not renew socket presences");
                    wait = retry;
                    break;
                }
            }
        }
    }

    async fn serve_inbox(
        self: Arc<Self>,
        mut inbox: mpsc::Receiver<Bytes>,
        shutdown: CancellationToken,
    ) {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = inbox.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
            };
            match WireMessage::decode(message) {
                Some(WireMessage::Deliver {
                    request,
                    reply_to,
                    conn_id,
                    message_id,
                    payload,
                    await_ack,
                }) => {
                    let waiter = await_ack.then(|| AckWaiter::Remote {
                        reply_to: reply_to.clone(),
                        request,
                    });
                    let (handoff, acknowledged) =
                        self.hand_off_awaiting(&conn_id, payload, message_id.as_deref(), waiter);
                    self.publish_later(reply_to, WireMessage::Ack { request, handoff });
                    if let Some(waiter) = acknowledged {
                        self.tell(waiter);
                    }
                }
                Some(WireMessage::ClientAck { request }) => {
                    let waiter = self.client_acks().remove(&request);
                    if let Some((w, _)) = waiter {
                        let _ = w.send(());
                    }
                }
                Some(WireMessage::Ack { request, handoff }) => {
                    let waiter = self.waiters().remove(&request);
                    if let Some(w) = waiter {
                        let _ = w.send(handoff);
                    }
                }
                None => tracing::warn!("ignoring an unreadable replica message"),
            }
        }
    }

    /// Publishes `message` to `node` on a task of its own: answering must not hold up the
    /// next hand-off.
    fn publish_later(&self, node: String, message: WireMessage) {
        let store = self.store.clone();
        let message = message.encode();
        self.tasks.spawn(async move {
            if let Err(e) = store.publish(&node, message).await {
                tracing::warn!(error = %e, "could not answer a replica");
            }
        });
    }

    /// Hands `payload` to the holder's socket over the bus and waits for the hand-off's
    /// acknowledgement until `deadline`; with `client_ack`, that sender is told when the
    /// client acknowledges (or dropped at `deadline`).
    async fn deliver_remote(
        &self,
        p: &SocketPresence,
        payload: Bytes,
        message_id: Option<&str>,
        deadline: Instant,
        client_ack: Option<oneshot::Sender<()>>,
    ) -> Outcome {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters().insert(request, tx);
        let await_ack = client_ack.is_some();
        if let Some(client_ack) = client_ack {
            self.await_client_ack(request, client_ack, deadline);
        }
        // However this ends (acknowledged, timed out, or the future dropped by a caller that
        // gave up), the waiter goes: the map holds only requests someone still waits for.
        let _waiting = Waiting {
            channel: self,
            request,
        };
        let message = WireMessage::Deliver {
            request,
            reply_to: self.node.clone(),
            conn_id: p.conn_id.clone(),
            message_id: message_id.map(str::to_owned),
            payload,
            await_ack,
        };
        let span = tracing::debug_span!(
            "bus.acknowledgement",
            replica = %p.node,
            request,
            outcome = tracing::field::Empty
        );
        let acknowledged = async {
            match self.store.publish(&p.node, message.encode()).await {
                Ok(0) => (
                    "not_listening",
                    Outcome::Failed(format!("replica {} is not listening", p.node)),
                ),
                Ok(_) => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(handoff)) => (handoff.label(), outcome_of(handoff)),
                    _ => (
                        "timeout",
                        Outcome::Failed(format!("replica {} did not acknowledge in time", p.node)),
                    ),
                },
                Err(e) => ("error", Outcome::Failed(e.to_string())),
            }
        };
        let (label, outcome) = acknowledged.instrument(span.clone()).await;
        span.record("outcome", label);
        self.metrics
            .bus_acknowledgements
            .get_or_create(&OutcomeLabels { outcome: label })
            .inc();
        outcome
    }

    /// Queues call notifications the client missed (`domain::ringing`) to a socket of this
    /// replica, oldest first; one it already has (delivered live meanwhile) is not sent
    /// again. Returns how many were queued.
    pub fn replay(&self, conn_id: &str, payloads: Vec<Bytes>) -> usize {
        let mut queued = 0;
        for payload in payloads {
            let message_id = CallNotification::parse(payload.clone())
                .ok()
                .and_then(|n| n.message_id);
            if self.hand_off(conn_id, payload, message_id.as_deref()) == Handoff::Queued {
                queued += 1;
            }
        }
        self.metrics.websocket_replayed.inc_by(queued as u64);
        queued
    }

    /// Hands `payload` to a socket of this replica, counting repeats.
    fn hand_off(&self, conn_id: &str, payload: Bytes, message_id: Option<&str>) -> Handoff {
        self.hand_off_awaiting(conn_id, payload, message_id, None).0
    }

    /// `hand_off`, with someone waiting for the client's acknowledgement (returned when the
    /// client acknowledged the notification already, to be told at once).
    fn hand_off_awaiting(
        &self,
        conn_id: &str,
        payload: Bytes,
        message_id: Option<&str>,
        waiter: Option<AckWaiter>,
    ) -> (Handoff, Option<AckWaiter>) {
        let (handoff, acknowledged) = self
            .registry
            .hand_off_awaiting(conn_id, payload, message_id, waiter);
        if handoff == Handoff::Repeat {
            self.metrics.websocket_repeats.inc();
        }
        (handoff, acknowledged)
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Handoff>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests still waiting for another replica's acknowledgement.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiters().len()
    }
}

/// Removes a remote delivery's acknowledgement waiter when dropped.
struct Waiting<'a> {
    channel: &'a WebSocketChannel,
    request: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.channel.waiters().remove(&self.request);
    }
}

fn outcome_of(handoff: Handoff) -> Outcome {
    match handoff {
        Handoff::Queued | Handoff::Repeat => Outcome::Delivered,
        Handoff::Full => Outcome::Failed("the socket's queue is full (slow reader)".into()),
        Handoff::Gone => Outcome::Dead("the socket is closed".into()),
    }
}

impl WebSocketChannel {
    /// Hands `notification` to the socket `presence` names: at once when this replica holds
    /// it, else over the replica bus, waiting for the holder's acknowledgement until `deadline`.
    pub async fn deliver(
        &self,
        presence: &SocketPresence,
        notification: &CallNotification,
        deadline: Instant,
    ) -> Outcome {
        if presence.node == self.node {
            outcome_of(self.hand_off(
                &presence.conn_id,
                notification.raw.clone(),
                notification.message_id.as_deref(),
            ))
        } else {
            self.deliver_remote(
                presence,
                notification.raw.clone(),
                notification.message_id.as_deref(),
                deadline,
                None,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::memory::MemoryStore;

    /// A channel on node `here`, and a presence held by node `there`, which listens (so a
    /// publish reaches it) but never acknowledges.
    async fn unanswered() -> (Arc<WebSocketChannel>, SocketPresence, mpsc::Receiver<Bytes>) {
        let config = crate::config::from_toml_str("").unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let there = store.subscribe("there").await.unwrap();
        let channel = WebSocketChannel::new(
            "here".into(),
            store,
            Arc::new(crate::clock::SystemClock),
            config.websocket.clone(),
            &config.limits,
            TaskTracker::new(),
            Arc::new(Metrics::new()),
        );
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let presence = SocketPresence {
            conn_id: "c1".into(),
            account_sid: AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap(),
            identity: Identity::parse("bob").unwrap(),
            node: "there".into(),
            device_id: None,
            takes_acks: false,
            connected_at: now,
            lease: Duration::from_secs(30),
        };
        (channel, presence, there)
    }

    #[tokio::test]
    async fn a_waiter_whose_request_is_dropped_is_removed() {
        let (channel, presence, mut there) = unanswered().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let delivery =
            channel.deliver_remote(&presence, Bytes::from_static(b"{}"), None, deadline, None);
        // The caller gives up while the request waits for its acknowledgement.
        let gave_up = tokio::time::timeout(Duration::from_millis(50), delivery).await;
        assert!(gave_up.is_err());
        assert!(there.try_recv().is_ok(), "the request was sent");
        assert_eq!(channel.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_times_out_is_removed() {
        let (channel, presence, _there) = unanswered().await;
        let deadline = Instant::now() + Duration::from_millis(50);
        let outcome = channel
            .deliver_remote(&presence, Bytes::from_static(b"{}"), None, deadline, None)
            .await;
        assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
        assert_eq!(channel.waiting(), 0);
        let timeouts = channel
            .metrics
            .bus_acknowledgements
            .get_or_create(&OutcomeLabels { outcome: "timeout" })
            .get();
        assert_eq!(timeouts, 1);
    }
}
