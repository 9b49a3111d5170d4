//! One WebSocket connection's life after the upgrade: write what the relay queues for it
//! (never a frame that waited past the ringing window: a late ring is worse than none), hand
//! what the client says to a listener (acknowledgements), ping, notice a peer that went
//! quiet, and say goodbye at shutdown or when the access token it was opened with expires.
//! Generic over the socket, so it can be tested with an in-memory pair.
//!
//! Close codes callrelay sends (README, "WebSocket"): `1001` going away (shutdown: reconnect,
//! to another replica), `4001` access token expired (reconnect with a fresh token).

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channels::websocket::{Frame, QueueReceiver};

/// A write that takes longer than this means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// RFC 6455 "going away".
const GOING_AWAY: u16 = 1001;
/// The access token the socket was opened with is no longer accepted (`exp` plus the leeway
/// authentication allows): a socket lives no longer than its credential, so a revoked API key
/// or a departed user stops receiving calls within a token's lifetime. 4000-4999 is the range
/// RFC 6455 leaves to applications.
pub const TOKEN_EXPIRED: u16 = 4001;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    ClientClosed,
    Unresponsive,
    ShuttingDown,
    TokenExpired,
    WriteFailed,
    ReadFailed,
    Unregistered,
}

/// How a session runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub ping_interval: Duration,
    /// When the access token the socket was opened with stops being accepted.
    pub expires: Instant,
    /// A frame that waited longer than this in the queue is dropped, never written late.
    pub ringing_window: Duration,
}

/// What a session tells its socket's owner as it runs.
pub trait Listener {
    /// A queued frame was dropped: it waited past the ringing window.
    fn late(&self);
    /// The client sent a text frame (an acknowledgement, when the socket takes them).
    fn text(&self, text: &str);
}

/// Runs the session until either side ends it.
pub async fn run<S, E>(
    mut socket: S,
    mut queue: QueueReceiver,
    settings: Settings,
    listener: &impl Listener,
    shutdown: CancellationToken,
) -> End
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
{
    let Settings {
        ping_interval,
        expires,
        ringing_window,
    } = settings;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // Made once: a fresh one per turn of the loop would join and leave the token's waiter
    // list for every frame (and re-arm the timer).
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let expired = tokio::time::sleep_until(expires);
    tokio::pin!(expired);
    loop {
        tokio::select! {
            biased;
            _ = &mut cancelled => {
                let bye = Goodbye { code: GOING_AWAY, reason: "callrelay is shutting down", ringing_window };
                return bye.say(&mut socket, &mut queue, listener)
                    .await
                    .unwrap_or(End::ShuttingDown);
            }
            _ = &mut expired => {
                let bye = Goodbye { code: TOKEN_EXPIRED, reason: "access token expired", ringing_window };
                return bye.say(&mut socket, &mut queue, listener)
                    .await
                    .unwrap_or(End::TokenExpired);
            }
            item = queue.recv() => match item {
                Some(frame) => {
                    if !write(&mut socket, frame, ringing_window, listener).await {
                        return End::WriteFailed;
                    }
                }
                None => return End::Unregistered,
            },
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Close(_))) => {
                    // The WebSocket library has queued the close frame that answers the
                    // client's (RFC 6455, 5.5.1); it goes out with a flush. Without it the
                    // client sees the connection drop (1006) instead of a clean close.
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, socket.flush()).await;
                    return End::ClientClosed;
                }
                None => return End::ClientClosed,
                // Any frame (pong, or whatever the client sends) proves it is alive.
                Some(Ok(message)) => {
                    last_heard = Instant::now();
                    if let Message::Text(t) = &message {
                        listener.text(t.as_str());
                    }
                }
                Some(Err(_)) => return End::ReadFailed,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() >= ping_interval * 2 {
                    return End::Unresponsive;
                }
                if !send(&mut socket, Message::Ping(Bytes::new())).await {
                    return End::WriteFailed;
                }
            }
        }
    }
}

/// Writes a queued frame, unless it waited past the ringing window (then it is dropped and
/// the listener told). `false` when the write failed.
async fn write<S, E>(
    socket: &mut S,
    frame: Frame,
    ringing_window: Duration,
    listener: &impl Listener,
) -> bool
where
    S: Sink<Message, Error = E> + Unpin,
{
    if frame.queued_at.elapsed() > ringing_window {
        listener.late();
        return true;
    }
    send(socket, text(frame.payload)).await
}

/// Ending the session from this side.
struct Goodbye {
    code: u16,
    reason: &'static str,
    ringing_window: Duration,
}

impl Goodbye {
    /// No more payloads are accepted, those already handed to the socket (counted as
    /// delivered) still go out, then the close frame. `Some` when a write failed on the way.
    async fn say<S, E>(
        self,
        socket: &mut S,
        queue: &mut QueueReceiver,
        listener: &impl Listener,
    ) -> Option<End>
    where
        S: Sink<Message, Error = E> + Unpin,
    {
        queue.close();
        while let Some(frame) = queue.try_recv() {
            if !write(socket, frame, self.ringing_window, listener).await {
                return Some(End::WriteFailed);
            }
        }
        let close = Message::Close(Some(CloseFrame {
            code: self.code,
            reason: Utf8Bytes::from_static(self.reason),
        }));
        send(socket, close).await;
        None
    }
}

fn text(payload: Bytes) -> Message {
    // Payloads were checked to be UTF-8 when the webhook arrived.
    match Utf8Bytes::try_from(payload) {
        Ok(t) => Message::Text(t),
        Err(_) => Message::Text(Utf8Bytes::from_static("")),
    }
}

pub(super) async fn send<S, E>(socket: &mut S, message: Message) -> bool
where
    S: Sink<Message, Error = E> + Unpin,
{
    let write = socket.send(message);
    tokio::pin!(write);
    // Almost every write completes at once; only one that has to wait arms the timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if let Poll::Ready(result) = first {
        return result.is_ok();
    }
    matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::websocket::queue;

    use super::super::test_socket::pair;

    fn far_future() -> Instant {
        Instant::now() + Duration::from_secs(24 * 3600)
    }

    fn settings(ping_every_secs: u64, expires: Instant) -> Settings {
        Settings {
            ping_interval: Duration::from_secs(ping_every_secs),
            expires,
            ringing_window: Duration::from_secs(30),
        }
    }

    /// Remembers what the session told it.
    #[derive(Default)]
    struct Heard {
        late: std::sync::atomic::AtomicUsize,
        texts: std::sync::Mutex<Vec<String>>,
    }

    impl Listener for Heard {
        fn late(&self) {
            self.late.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn text(&self, text: &str) {
            self.texts.lock().unwrap().push(text.to_owned());
        }
    }

    /// Runs a session on a task of its own, with a listener the test can look at.
    fn spawn_run(
        socket: super::super::test_socket::Pair,
        rx: QueueReceiver,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> (tokio::task::JoinHandle<End>, std::sync::Arc<Heard>) {
        let heard = std::sync::Arc::new(Heard::default());
        let listener = heard.clone();
        let task =
            tokio::spawn(
                async move { run(socket, rx, settings, listener.as_ref(), shutdown).await },
            );
        (task, heard)
    }

    #[tokio::test]
    async fn queued_payloads_go_out_as_text_frames_in_order() {
        let (socket, to_session, mut from_session) = pair();
        let (tx, rx) = queue(4);
        let shutdown = CancellationToken::new();
        let (task, _heard) = spawn_run(socket, rx, settings(60, far_future()), shutdown.clone());
        tx.try_send(Bytes::from_static(b"{\"a\":1}")).unwrap();
        tx.try_send(Bytes::from_static(b"{\"b\":2}")).unwrap();
        assert_eq!(
            from_session.recv().await,
            Some(Message::Text(Utf8Bytes::from_static("{\"a\":1}")))
        );
        assert_eq!(
            from_session.recv().await,
            Some(Message::Text(Utf8Bytes::from_static("{\"b\":2}")))
        );
        to_session.send(Ok(Message::Close(None))).unwrap();
        assert_eq!(task.await.unwrap(), End::ClientClosed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_dropped_after_two_intervals() {
        let (socket, _to_session, mut from_session) = pair();
        let (_tx, rx) = queue(4);
        let (task, _heard) = spawn_run(
            socket,
            rx,
            settings(10, far_future()),
            CancellationToken::new(),
        );
        assert!(matches!(from_session.recv().await, Some(Message::Ping(_))));
        assert_eq!(task.await.unwrap(), End::Unresponsive);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_answers_pings_stays() {
        let (socket, to_session, mut from_session) = pair();
        let (_tx, rx) = queue(4);
        let shutdown = CancellationToken::new();
        let (task, _heard) = spawn_run(socket, rx, settings(10, far_future()), shutdown.clone());
        for _ in 0..5 {
            assert!(matches!(from_session.recv().await, Some(Message::Ping(_))));
            to_session.send(Ok(Message::Pong(Bytes::new()))).unwrap();
        }
        assert!(!task.is_finished());
        shutdown.cancel();
        assert_eq!(task.await.unwrap(), End::ShuttingDown);
    }

    #[tokio::test]
    async fn shutdown_flushes_the_queue_then_sends_going_away() {
        let (socket, _to_session, mut from_session) = pair();
        let (tx, rx) = queue(4);
        tx.try_send(Bytes::from_static(b"{}")).unwrap();
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        assert_eq!(
            run(
                socket,
                rx,
                settings(60, far_future()),
                &Heard::default(),
                shutdown
            )
            .await,
            End::ShuttingDown
        );
        assert_eq!(
            from_session.recv().await,
            Some(Message::Text(Utf8Bytes::from_static("{}")))
        );
        match from_session.recv().await {
            Some(Message::Close(Some(frame))) => assert_eq!(frame.code, GOING_AWAY),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_socket_closes_with_4001_when_its_token_expires() {
        let (socket, to_session, mut from_session) = pair();
        let (tx, rx) = queue(4);
        let expires = Instant::now() + Duration::from_secs(90);
        let (task, _heard) = spawn_run(socket, rx, settings(20, expires), CancellationToken::new());
        // At the very moment the token expires, a webhook hands over one more payload.
        let late = tokio::spawn(async move {
            tokio::time::sleep_until(expires).await;
            let accepted = tx.try_send(Bytes::from_static(b"{\"late\":1}")).is_ok();
            (accepted, tx)
        });
        // A live peer, answering every ping, until the close frame.
        let mut pings = 0;
        let mut texts = Vec::new();
        let frame = loop {
            match from_session.recv().await {
                Some(Message::Ping(_)) => {
                    pings += 1;
                    assert!(pings < 10, "the session outlived its token");
                    to_session.send(Ok(Message::Pong(Bytes::new()))).unwrap();
                }
                Some(Message::Text(t)) => texts.push(t),
                Some(Message::Close(Some(frame))) => break frame,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(frame.code, TOKEN_EXPIRED);
        assert_eq!(frame.reason.as_str(), "access token expired");
        assert_eq!(task.await.unwrap(), End::TokenExpired);
        assert_eq!(Instant::now(), expires, "closed when the token expired");
        assert_eq!(pings, 4, "alive until then");
        // Accepted means written before the close frame; otherwise the webhook was told the
        // socket is gone. Never accepted and then dropped.
        let (accepted, tx) = late.await.unwrap();
        assert_eq!(texts.len(), usize::from(accepted));
        assert!(tx.try_send(Bytes::new()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_waited_past_the_ringing_window_is_dropped_not_written_late() {
        let (socket, to_session, mut from_session) = pair();
        let (tx, rx) = queue(4);
        tx.try_send(Bytes::from_static(b"{\"stale\":1}")).unwrap();
        // The socket's writer was held up (a slow peer) past the window.
        tokio::time::advance(Duration::from_secs(31)).await;
        tx.try_send(Bytes::from_static(b"{\"fresh\":1}")).unwrap();
        let (task, heard) = spawn_run(
            socket,
            rx,
            settings(3600, far_future()),
            CancellationToken::new(),
        );
        assert_eq!(
            from_session.recv().await,
            Some(Message::Text(Utf8Bytes::from_static("{\"fresh\":1}")))
        );
        assert_eq!(heard.late.load(std::sync::atomic::Ordering::Relaxed), 1);
        to_session
            .send(Ok(Message::Text(Utf8Bytes::from_static(
                "{\"type\":\"ack\"}",
            ))))
            .unwrap();
        to_session.send(Ok(Message::Close(None))).unwrap();
        assert_eq!(task.await.unwrap(), End::ClientClosed);
        assert_eq!(*heard.texts.lock().unwrap(), ["{\"type\":\"ack\"}"]);
    }
}
