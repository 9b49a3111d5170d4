//! The sockets this replica holds: a bounded queue each, so delivery never waits on a slow
//! reader and a slow reader cannot make memory grow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use time::OffsetDateTime;

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
    queue: QueueSender,
}

/// Handing a payload to a local socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    Queued,
    /// The socket's queue is full: its reader is too slow.
    Full,
    /// No such socket here (closed, or never here).
    Gone,
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
        capacity: usize,
    ) -> (Arc<LocalSocket>, QueueReceiver) {
        let (queue, rx) = queue::queue(capacity);
        let socket = Arc::new(LocalSocket {
            conn_id: uuid::Uuid::new_v4().simple().to_string(),
            account_sid,
            identity,
            device_id,
            connected_at,
            queue,
        });
        self.lock().insert(socket.conn_id.clone(), socket.clone());
        (socket, rx)
    }

    pub fn unregister(&self, conn_id: &str) -> Option<Arc<LocalSocket>> {
        self.lock().remove(conn_id)
    }

    pub fn hand_off(&self, conn_id: &str, payload: Bytes) -> Handoff {
        let Some(socket) = self.lock().get(conn_id).cloned() else {
            return Handoff::Gone;
        };
        match socket.queue.try_send(payload) {
            Ok(()) => Handoff::Queued,
            Err(TrySendError::Full) => Handoff::Full,
            Err(TrySendError::Closed) => Handoff::Gone,
        }
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
        let (s, mut rx) = r.register(a, i, None, OffsetDateTime::UNIX_EPOCH, 2);
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"1")),
            Handoff::Queued
        );
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"2")),
            Handoff::Queued
        );
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"3")),
            Handoff::Full
        );
        assert_eq!(rx.try_recv(), Some(Bytes::from_static(b"1")));
        assert_eq!(
            r.hand_off(&s.conn_id, Bytes::from_static(b"4")),
            Handoff::Queued
        );
    }

    #[test]
    fn closed_or_unknown_sockets_are_gone() {
        let r = Registry::default();
        let (a, i) = ids();
        let (s, rx) = r.register(a, i, None, OffsetDateTime::UNIX_EPOCH, 2);
        assert_eq!(r.hand_off("nope", Bytes::new()), Handoff::Gone);
        drop(rx);
        assert_eq!(r.hand_off(&s.conn_id, Bytes::new()), Handoff::Gone);
        assert!(r.unregister(&s.conn_id).is_some());
        assert_eq!(r.len(), 0);
    }
}
