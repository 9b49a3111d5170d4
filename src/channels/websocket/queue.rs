//! A socket's queue of notifications waiting to be written: bounded, with a non-blocking
//! hand-off for the webhook side and an async receive for the socket's session.
//!
//! Not a tokio `mpsc` channel: that allocates a block of 32 slots (about 1.4 KiB with its
//! header) when it is created, and a replica holds tens of thousands of idle sockets whose
//! queues are almost always empty. An empty queue here is a hundred-odd bytes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A payload waiting in a socket's queue, and since when: a call notification that waited
/// past its ringing window is dropped rather than written late.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub payload: Bytes,
    pub queued_at: Instant,
}

struct State {
    items: VecDeque<Frame>,
    senders: usize,
    receiver_alive: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the receiver; `notify_one` keeps a permit when it is not waiting, so a payload
    /// queued between its check and its wait is not missed.
    ready: Notify,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a payload was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrySendError {
    /// `capacity` payloads are waiting already: the reader is too slow.
    Full,
    /// The receiving session has ended.
    Closed,
}

/// A queue holding at most `capacity` payloads.
pub fn queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
        }),
        ready: Notify::new(),
        capacity,
    });
    (QueueSender(shared.clone()), QueueReceiver(shared))
}

pub struct QueueSender(Arc<Shared>);

impl QueueSender {
    pub fn try_send(&self, payload: Bytes) -> Result<(), TrySendError> {
        {
            let mut state = self.0.lock();
            if !state.receiver_alive {
                return Err(TrySendError::Closed);
            }
            if state.items.len() >= self.0.capacity {
                return Err(TrySendError::Full);
            }
            state.items.push_back(Frame {
                payload,
                queued_at: Instant::now(),
            });
        }
        self.0.ready.notify_one();
        Ok(())
    }
}

impl Clone for QueueSender {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        let last = {
            let mut state = self.0.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.0.ready.notify_one();
        }
    }
}

impl std::fmt::Debug for QueueSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSender").finish_non_exhaustive()
    }
}

pub struct QueueReceiver(Arc<Shared>);

impl QueueReceiver {
    /// The next payload; `None` once every sender is gone and the queue is empty.
    /// Cancel-safe: a payload is only taken by a call that returns it.
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            {
                let mut state = self.0.lock();
                if let Some(payload) = state.items.pop_front() {
                    return Some(payload);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            self.0.ready.notified().await;
        }
    }

    pub fn try_recv(&mut self) -> Option<Frame> {
        self.0.lock().items.pop_front()
    }

    /// Refuses further payloads (senders see `Closed`, so the webhook learns the socket is
    /// gone) but keeps those already queued for `try_recv`: a session ending on its own terms
    /// writes everything it was handed, and nothing is handed to it after its last look.
    pub fn close(&mut self) {
        self.0.lock().receiver_alive = false;
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_alive = false;
        state.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn holds_at_most_its_capacity_in_order() {
        let (tx, mut rx) = queue(2);
        assert_eq!(tx.try_send(Bytes::from_static(b"1")), Ok(()));
        assert_eq!(tx.try_send(Bytes::from_static(b"2")), Ok(()));
        assert_eq!(
            tx.try_send(Bytes::from_static(b"3")),
            Err(TrySendError::Full)
        );
        assert_eq!(
            rx.try_recv().map(|f| f.payload),
            Some(Bytes::from_static(b"1"))
        );
        assert_eq!(tx.try_send(Bytes::from_static(b"4")), Ok(()));
        assert_eq!(
            rx.try_recv().map(|f| f.payload),
            Some(Bytes::from_static(b"2"))
        );
        assert_eq!(
            rx.try_recv().map(|f| f.payload),
            Some(Bytes::from_static(b"4"))
        );
        assert_eq!(rx.try_recv().map(|f| f.payload), None);
    }

    #[test]
    fn a_closed_queue_refuses_new_payloads_and_keeps_the_queued_ones() {
        let (tx, mut rx) = queue(2);
        tx.try_send(Bytes::from_static(b"1")).unwrap();
        rx.close();
        assert_eq!(
            tx.try_send(Bytes::from_static(b"2")),
            Err(TrySendError::Closed)
        );
        assert_eq!(
            rx.try_recv().map(|f| f.payload),
            Some(Bytes::from_static(b"1"))
        );
        assert_eq!(rx.try_recv().map(|f| f.payload), None);
    }

    #[test]
    fn a_dropped_receiver_closes_the_queue() {
        let (tx, rx) = queue(2);
        drop(rx);
        assert_eq!(tx.try_send(Bytes::new()), Err(TrySendError::Closed));
    }

    #[tokio::test]
    async fn recv_waits_for_a_payload_and_ends_with_the_last_sender() {
        let (tx, mut rx) = queue(4);
        let other = tx.clone();
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await.map(|f| f.payload);
            let end = rx.recv().await.map(|f| f.payload);
            (first, end)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(Bytes::from_static(b"x")).unwrap();
        drop(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(other);
        assert_eq!(
            waiting.await.unwrap(),
            (Some(Bytes::from_static(b"x")), None)
        );
    }

    #[tokio::test]
    async fn a_cancelled_recv_loses_nothing() {
        let (tx, mut rx) = queue(4);
        // Give up on a receive, as the session's select does when another branch wins.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), rx.recv()).await;
        assert!(gave_up.is_err());
        tx.try_send(Bytes::from_static(b"kept")).unwrap();
        assert_eq!(
            rx.recv().await.map(|f| f.payload),
            Some(Bytes::from_static(b"kept"))
        );
    }
}
