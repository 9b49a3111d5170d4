//! Waiting for a client's acknowledgement: with `delivery = "prefer_websocket"`, a webhook
//! hands a call to the device's socket and pushes to the device only if the client has not
//! acknowledged it (`{"type":"ack",…}` on a socket opened with `ack=1`) in time.
//!
//! A socket on this replica tells the webhook through a oneshot kept with the notification
//! in the socket's memory (`registry.rs`); a socket on another replica is asked with a `W`
//! message and its replica answers `K` when the client acknowledges (`wire.rs`). Whatever
//! goes wrong (the socket closes, the notification leaves the socket's memory, a replica that
//! does not know `W`, a lost `K`) the webhook hears nothing and pushes: a silent client and a
//! broken path look the same, and both still ring.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::registry::{Ack, AckWaiter, LocalSocket};
use super::wire::WireMessage;
use super::{WebSocketChannel, outcome_of};
use crate::channels::Outcome;
use crate::domain::{CallNotification, SocketPresence};

impl WebSocketChannel {
    /// Delivers `notification` to the socket `presence` names, as `deliver` does; when the
    /// socket has it, the receiver is told once the client acknowledges it. A notification
    /// without `twi_message_id` cannot be acknowledged (no receiver).
    pub async fn deliver_awaiting_ack(
        &self,
        presence: &SocketPresence,
        notification: &CallNotification,
        deadline: Instant,
    ) -> (Outcome, Option<oneshot::Receiver<()>>) {
        let Some(message_id) = notification.message_id.as_deref() else {
            return (self.deliver(presence, notification, deadline).await, None);
        };
        let (tx, rx) = oneshot::channel();
        let outcome = if presence.node == self.node {
            let (handoff, acknowledged) = self.hand_off_awaiting(
                &presence.conn_id,
                notification.raw.clone(),
                Some(message_id),
                Some(AckWaiter::Local(tx)),
            );
            if let Some(waiter) = acknowledged {
                self.tell(waiter);
            }
            outcome_of(handoff)
        } else {
            self.deliver_remote(
                presence,
                notification.raw.clone(),
                Some(message_id),
                deadline,
                Some(tx),
            )
            .await
        };
        let waiting = (outcome == Outcome::Delivered).then_some(rx);
        (outcome, waiting)
    }

    /// The client on `socket` acknowledged `message_id`: whoever waits for it is told.
    pub fn acknowledge(&self, socket: &LocalSocket, message_id: &str, window: Duration) -> Ack {
        let (ack, waiters) = socket.acknowledge(message_id, window);
        for waiter in waiters {
            self.tell(waiter);
        }
        ack
    }

    /// Tells a waiter that its client acknowledged.
    pub(super) fn tell(&self, waiter: AckWaiter) {
        match waiter {
            AckWaiter::Local(tx) => {
                let _ = tx.send(());
            }
            AckWaiter::Remote { reply_to, request } => {
                self.publish_later(reply_to, WireMessage::ClientAck { request });
            }
        }
    }

    /// Keeps `tx` until the holder's `K` for `request` or `deadline`. Waiters whose webhook
    /// gave up or passed its deadline are forgotten as new ones arrive: the map holds only
    /// deliveries someone still waits for.
    pub(super) fn await_client_ack(
        &self,
        request: u64,
        tx: oneshot::Sender<()>,
        deadline: Instant,
    ) {
        let now = Instant::now();
        let mut waiting = self.client_acks();
        waiting.retain(|_, (tx, until)| !tx.is_closed() && *until > now);
        waiting.insert(request, (tx, deadline));
    }

    pub(super) fn client_acks(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, (oneshot::Sender<()>, Instant)>>
    {
        self.client_acks.lock().unwrap_or_else(|e| e.into_inner())
    }
}
