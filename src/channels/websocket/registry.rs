//! The sockets this replica holds: a bounded queue each, so delivery never waits on a slow
//! reader and a slow reader cannot make memory grow.
//!
//! Each socket also remembers the last few `twi_message_id`s queued to it. A hand-off can be
//! queued and its acknowledgement still lost (the replica that asked timed out while Redis was
//! frozen, or lost its subscription); the asker then answers Twilio with a failure and
//! Twilio's retry asks again. The socket already has that notification, so the repeat is
//! acknowledged as queued without being sent twice: the device rings once.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::queue::{self, QueueReceiver, QueueSender, TrySendError};
use crate::domain::{AccountSid, Identity};

/// A socket as the registry knows it. Shared (`Arc`) between the registry and the socket's
/// lease, so an idle socket carries one copy of its identifiers.
#[derive(Debug)]
pub struct LocalSocket {
    pub conn_id: String,
    pub account_sid: AccountSid,
    pub identity: Identity,
    pub device_id: Option<String>,
    pub connected_at: OffsetDateTime,
    /// Opened with `ack=1`: the client acknowledges what it receives.
    pub takes_acks: bool,
    queue: QueueSender,
    /// Allocated on the first notification with a message id: an idle socket carries only
    /// the empty slot.
    recent: Mutex<Option<Box<RecentIds>>>,
}

/// How many message ids a socket remembers. Twilio retries a notification within seconds, so
/// a handful covers every retry of the calls a device receives meanwhile.
const REMEMBERED: usize = 8;

/// The last `REMEMBERED` message ids queued to a socket, as 64-bit hashes in a ring, with
/// what an acknowledgement needs: when each was queued, its call, whether it was acknowledged.
#[derive(Default)]
struct RecentIds {
    sent: [Sent; REMEMBERED],
    next: usize,
}

#[derive(Default)]
struct Sent {
    id: u64,
    queued_at: Option<Instant>,
    /// `twi_call_sid`, read only for sockets that take acknowledgements (for the trace).
    call_sid: Option<Box<str>>,
    acknowledged: bool,
    /// Deliveries waiting for the client's acknowledgement (`delivery = "prefer_websocket"`).
    waiters: Vec<AckWaiter>,
}

/// Someone waiting for a client to acknowledge a notification: a webhook on this replica, or
/// one on another replica, told over the bus. Dropped unanswered when the notification leaves
/// the socket's memory or the socket closes: the waiter then hears nothing, as from a silent
/// client.
#[derive(Debug)]
pub enum AckWaiter {
    Local(tokio::sync::oneshot::Sender<()>),
    Remote { reply_to: String, request: u64 },
}

impl RecentIds {
    fn insert(&mut self, id: u64, call_sid: Option<Box<str>>, waiter: Option<AckWaiter>) {
        self.sent[self.next] = Sent {
            id,
            queued_at: Some(Instant::now()),
            call_sid,
            acknowledged: false,
            waiters: waiter.into_iter().collect(),
        };
        self.next = (self.next + 1) % REMEMBERED;
    }
}

impl std::fmt::Debug for RecentIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentIds").finish_non_exhaustive()
    }
}

/// What a client's acknowledgement came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// The first for a notification this socket was sent within the ringing window: `after`
    /// it was queued; its call, when the payload named one.
    Acknowledged {
        call_sid: Option<String>,
        after: Duration,
    },
    /// That notification was acknowledged already.
    Repeated,
    /// Not a notification this socket was sent recently.
    Unknown,
}

impl Ack {
    /// Its `outcome` label in `callrelay_websocket_acks_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Ack::Acknowledged { .. } => "acknowledged",
            Ack::Repeated => "repeated",
            Ack::Unknown => "unknown",
        }
    }
}

/// A message id's hash; never 0, the ring's empty slot.
fn id_hash(message_id: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    message_id.hash(&mut h);
    h.finish().max(1)
}

/// Handing a payload to a local socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    Queued,
    /// The socket already had this notification (same message id): not sent again. Said
    /// `queued` on the bus.
    Repeat,
    /// The socket's queue is full: its reader is too slow.
    Full,
    /// No such socket here (closed, or never here).
    Gone,
}

impl LocalSocket {
    /// The client acknowledges `message_id`: judged against what was queued to it within
    /// `window`. An acknowledgement hands back the deliveries waiting for it, to be told.
    pub fn acknowledge(&self, message_id: &str, window: Duration) -> (Ack, Vec<AckWaiter>) {
        let mut waiters = Vec::new();
        let ack = self.acknowledge_into(message_id, window, &mut waiters);
        (ack, waiters)
    }

    fn acknowledge_into(
        &self,
        message_id: &str,
        window: Duration,
        waiters: &mut Vec<AckWaiter>,
    ) -> Ack {
        let id = id_hash(message_id);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sent) = recent
            .as_mut()
            .and_then(|r| r.sent.iter_mut().find(|s| s.id == id))
        else {
            return Ack::Unknown;
        };
        let Some(after) = sent.queued_at.map(|at| at.elapsed()) else {
            return Ack::Unknown;
        };
        if after > window {
            return Ack::Unknown;
        }
        if std::mem::replace(&mut sent.acknowledged, true) {
            return Ack::Repeated;
        }
        waiters.append(&mut sent.waiters);
        Ack::Acknowledged {
            call_sid: sent.call_sid.as_deref().map(str::to_owned),
            after,
        }
    }

    fn send(&self, payload: Bytes) -> Handoff {
        match self.queue.try_send(payload) {
            Ok(()) => Handoff::Queued,
            Err(TrySendError::Full) => Handoff::Full,
            Err(TrySendError::Closed) => Handoff::Gone,
        }
    }
}

impl Handoff {
    /// Its `outcome` label in `callrelay_bus_acknowledgements_total` (a repeat is `queued`
    /// on the bus).
    pub fn label(self) -> &'static str {
        match self {
            Handoff::Queued | Handoff::Repeat => "queued",
            Handoff::Full => "full",
            Handoff::Gone => "gone",
        }
    }
}

/// A payload's `twi_call_sid`, for the trace of its acknowledgement.
fn call_sid(payload: &[u8]) -> Option<Box<str>> {
    #[derive(serde::Deserialize)]
    struct Call<'a> {
        #[serde(borrow)]
        twi_call_sid: Option<std::borrow::Cow<'a, str>>,
    }
    let call: Call<'_> = serde_json::from_slice(payload).ok()?;
    call.twi_call_sid.map(|s| s.into_owned().into_boxed_str())
}

#[derive(Default)]
pub struct Registry {
    sockets: Mutex<HashMap<String, Arc<LocalSocket>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<LocalSocket>>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a socket; the receiver yields what is delivered to it.
    pub fn register(
        &self,
        account_sid: AccountSid,
        identity: Identity,
        device_id: Option<String>,
        connected_at: OffsetDateTime,
        takes_acks: bool,
        capacity: usize,
    ) -> (Arc<LocalSocket>, QueueReceiver) {
        let (queue, rx) = queue::queue(capacity);
        let socket = Arc::new(LocalSocket {
            conn_id: uuid::Uuid::new_v4().simple().to_string(),
            account_sid,
            identity,
            device_id,
            connected_at,
            takes_acks,
            queue,
            recent: Mutex::new(None),
        });
        self.lock().insert(socket.conn_id.clone(), socket.clone());
        (socket, rx)
    }

    pub fn unregister(&self, conn_id: &str) -> Option<Arc<LocalSocket>> {
        self.lock().remove(conn_id)
    }

    /// `hand_off_awaiting` without a waiter.
    #[cfg(test)]
    pub fn hand_off(&self, conn_id: &str, payload: Bytes, message_id: Option<&str>) -> Handoff {
        self.hand_off_awaiting(conn_id, payload, message_id, None).0
    }

    /// Queues `payload` to the socket, unless the notification `message_id` names was queued
    /// to it already (then `Repeat`, and nothing is sent). `waiter` is told when the client
    /// acknowledges the notification; when the socket had it and the client acknowledged it
    /// already, the waiter comes back, to be told at once.
    pub fn hand_off_awaiting(
        &self,
        conn_id: &str,
        payload: Bytes,
        message_id: Option<&str>,
        waiter: Option<AckWaiter>,
    ) -> (Handoff, Option<AckWaiter>) {
        let Some(socket) = self.lock().get(conn_id).cloned() else {
            return (Handoff::Gone, None);
        };
        let Some(message_id) = message_id else {
            return (socket.send(payload), None);
        };
        let id = id_hash(message_id);
        // Held across the send, so two copies handed off at once cannot both pass the check.
        let mut recent = socket.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sent) = recent
            .as_mut()
            .and_then(|r| r.sent.iter_mut().find(|s| s.id == id))
        {
            tracing::debug!(
                message_id,
                conn_id,
                "notification already queued to this socket; not sent again"
            );
            return match waiter {
                Some(w) if sent.acknowledged => (Handoff::Repeat, Some(w)),
                Some(w) => {
                    sent.waiters.push(w);
                    (Handoff::Repeat, None)
                }
                None => (Handoff::Repeat, None),
            };
        }
        let call_sid = socket.takes_acks.then(|| call_sid(&payload)).flatten();
        let handoff = socket.send(payload);
        if handoff == Handoff::Queued {
            recent
                .get_or_insert_with(Box::default)
                .insert(id, call_sid, waiter);
        }
        (handoff, None)
    }

    pub fn snapshot(&self) -> Vec<Arc<LocalSocket>> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (AccountSid, Identity) {
        (
            AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap(),
            Identity::parse("bob").unwrap(),
        )
    }

    #[test]
    fn queues_until_full_then_reports_full() {
        let r = Registry::default();
        let (a, i) = ids();
        let (s, mut rx) = r.register(a, i, None, OffsetDateTime::UNIX_EPOCH, false, 2);
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"1"), None),
            Handoff::Queued
        );
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"2"), None),
            Handoff::Queued
        );
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"3"), None),
            Handoff::Full
        );
        assert_eq!(
            rx.try_recv().map(|f| f.payload),
            Some(Bytes::from_static(b"1"))
        );
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"4"), None),
            Handoff::Queued
        );
    }

    #[test]
    fn closed_or_unknown_sockets_are_gone() {
        let r = Registry::default();
        let (a, i) = ids();
        let (s, rx) = r.register(a, i, None, OffsetDateTime::UNIX_EPOCH, false, 2);
        assert_eq!(r.hand_off("nope", Bytes::new(), None), Handoff::Gone);
        drop(rx);
        assert_eq!(r.hand_off(&s.conn_id, Bytes::new(), None), Handoff::Gone);
        assert!(r.unregister(&s.conn_id).is_some());
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_notification_already_queued_is_acknowledged_without_sending_it_again() {
        let r = Registry::default();
        let (a, i) = ids();
        let (s, mut rx) = r.register(a, i, None, OffsetDateTime::UNIX_EPOCH, false, 4);
        assert!(s.recent.lock().unwrap().is_none(), "nothing allocated yet");
        let call = |n: &'static [u8], id| r.hand_off(&s.conn_id, Bytes::from_static(n), id);
        assert_eq!(call(b"1", Some("RM1")), Handoff::Queued);
        assert_eq!(call(b"1 again", Some("RM1")), Handoff::Repeat);
        assert_eq!(call(b"2", Some("RM2")), Handoff::Queued);
        assert_eq!(call(b"no id", None), Handoff::Queued);
        assert_eq!(
            rx.try_recv().map(|f| f.payload),
            Some(Bytes::from_static(b"1"))
        );
        assert_eq!(
            rx.try_recv().map(|f| f.payload),
            Some(Bytes::from_static(b"2"))
        );
        assert_eq!(
            rx.try_recv().map(|f| f.payload),
            Some(Bytes::from_static(b"no id"))
        );
        assert_eq!(rx.try_recv().map(|f| f.payload), None);
    }

    #[test]
    fn a_hand_off_refused_as_full_is_not_remembered() {
        let r = Registry::default();
        let (a, i) = ids();
        let (s, mut rx) = r.register(a, i, None, OffsetDateTime::UNIX_EPOCH, false, 1);
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"1"), Some("RM1")),
            Handoff::Queued
        );
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"2"), Some("RM2")),
            Handoff::Full
        );
        assert_eq!(
            rx.try_recv().map(|f| f.payload),
            Some(Bytes::from_static(b"1"))
        );
        // The retry of the refused one goes through.
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"2"), Some("RM2")),
            Handoff::Queued
        );
        assert_eq!(
            rx.try_recv().map(|f| f.payload),
            Some(Bytes::from_static(b"2"))
        );
    }

    #[test]
    fn only_the_last_few_ids_are_remembered() {
        let r = Registry::default();
        let (a, i) = ids();
        let (s, mut rx) = r.register(a, i, None, OffsetDateTime::UNIX_EPOCH, false, 64);
        let ids: Vec<String> = (0..=REMEMBERED).map(|n| format!("RM{n}")).collect();
        for id in &ids {
            assert_eq!(
                r.hand_off(&s.conn_id, Bytes::from(id.clone()), Some(id)),
                Handoff::Queued
            );
        }
        // The first has been forgotten; the last is remembered.
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"first"), Some(&ids[0])),
            Handoff::Queued
        );
        assert_eq!(
            r.hand_off(
                &s.conn_id,
                Bytes::from_static(b"last"),
                Some(&ids[REMEMBERED])
            ),
            Handoff::Repeat
        );
        let mut got = Vec::new();
        while let Some(b) = rx.try_recv().map(|f| f.payload) {
            got.push(b);
        }
        assert_eq!(got.len(), REMEMBERED + 2);
        assert_eq!(got.last(), Some(&Bytes::from_static(b"first")));
    }

    #[tokio::test(start_paused = true)]
    async fn an_acknowledgement_names_its_call_once_and_only_within_the_window() {
        let r = Registry::default();
        let (a, i) = ids();
        let (s, _rx) = r.register(a, i, None, OffsetDateTime::UNIX_EPOCH, true, 4);
        let window = Duration::from_secs(30);
        let payload = Bytes::from_static(br#"{"twi_call_sid":"CA1","twi_message_id":"RM1"}"#);
        assert_eq!(
            r.hand_off(&s.conn_id, payload, Some("RM1")),
            Handoff::Queued
        );
        assert_eq!(s.acknowledge("RM2", window).0, Ack::Unknown);
        tokio::time::advance(Duration::from_millis(40)).await;
        assert_eq!(
            s.acknowledge("RM1", window).0,
            Ack::Acknowledged {
                call_sid: Some("CA1".into()),
                after: Duration::from_millis(40)
            }
        );
        assert_eq!(s.acknowledge("RM1", window).0, Ack::Repeated);

        let late = Bytes::from_static(br#"{"twi_call_sid":"CA2"}"#);
        assert_eq!(r.hand_off(&s.conn_id, late, Some("RM3")), Handoff::Queued);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(s.acknowledge("RM3", window).0, Ack::Unknown);
    }

    #[tokio::test]
    async fn a_waiter_is_told_of_the_acknowledgement_even_when_it_came_first() {
        let r = Registry::default();
        let (a, i) = ids();
        let (s, _rx) = r.register(a, i, None, OffsetDateTime::UNIX_EPOCH, true, 64);
        let window = Duration::from_secs(30);
        let payload = || Bytes::from_static(br#"{"twi_message_id":"RM1"}"#);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = Some(AckWaiter::Local(tx));
        let (handoff, now) = r.hand_off_awaiting(&s.conn_id, payload(), Some("RM1"), waiter);
        assert_eq!((handoff, now.is_none()), (Handoff::Queued, true));
        let (ack, waiters) = s.acknowledge("RM1", window);
        assert!(matches!(ack, Ack::Acknowledged { .. }));
        for w in waiters {
            let AckWaiter::Local(tx) = w else {
                panic!("a local waiter")
            };
            tx.send(()).unwrap();
        }
        assert_eq!(rx.await, Ok(()));

        // A retry that reaches the socket after the client acknowledged: told at once.
        let remote = Some(AckWaiter::Remote {
            reply_to: "n2".into(),
            request: 7,
        });
        let (handoff, now) = r.hand_off_awaiting(&s.conn_id, payload(), Some("RM1"), remote);
        assert_eq!(handoff, Handoff::Repeat);
        assert!(matches!(now, Some(AckWaiter::Remote { request: 7, .. })));

        // A waiter whose notification never gets acknowledged hears nothing once the socket
        // forgets it.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let silent = Some(AckWaiter::Local(tx));
        r.hand_off_awaiting(&s.conn_id, payload(), Some("RM2"), silent);
        for n in 0..REMEMBERED {
            let id = format!("RMx{n}");
            assert_eq!(
                r.hand_off(&s.conn_id, Bytes::new(), Some(&id)),
                Handoff::Queued
            );
        }
        let heard = tokio::time::timeout(Duration::from_secs(5), rx).await;
        assert!(matches!(heard, Ok(Err(_))), "{heard:?}");
    }
}
