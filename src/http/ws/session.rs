//! One WebSocket connection's life after the upgrade: write what the relay queues for it,
//! ping, notice a peer that went quiet, and say goodbye at shutdown or when the access token
//! it was opened with expires. Generic over the socket, so it can be tested with an in-memory
//! pair.
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

use crate::channels::websocket::QueueReceiver;

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

/// Runs the session until either side ends it; `expires` is when the access token the socket
/// was opened with stops being accepted.
pub async fn run<S, E>(
    mut socket: S,
    mut queue: QueueReceiver,
    ping_interval: Duration,
    expires: Instant,
    shutdown: CancellationToken,
) -> End
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
{
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
                return goodbye(&mut socket, &mut queue, GOING_AWAY, "callrelay is shutting down")
                    .await
                    .unwrap_or(End::ShuttingDown);
            }
            _ = &mut expired => {
                return goodbye(&mut socket, &mut queue, TOKEN_EXPIRED, "access token expired")
                    .await
                    .unwrap_or(End::TokenExpired);
            }
            item = queue.recv() => match item {
                Some(payload) => {
                    if !send(&mut socket, text(payload)).await {
                        return End::WriteFailed;
                    }
                }
                None => return End::Unregistered,
            },
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Close(_))) | None => return End::ClientClosed,
                // Any frame (pong, or whatever the client sends) proves it is alive.
                Some(Ok(_)) => last_heard = Instant::now(),
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

/// Ends the session from this side: no more payloads are accepted, those already handed to
/// the socket (counted as delivered) still go out, then the close frame. `Some` when a write
/// failed on the way.
async fn goodbye<S, E>(
    socket: &mut S,
    queue: &mut QueueReceiver,
    code: u16,
    reason: &'static str,
) -> Option<End>
where
    S: Sink<Message, Error = E> + Unpin,
{
    queue.close();
    while let Some(payload) = queue.try_recv() {
        if !send(socket, text(payload)).await {
            return Some(End::WriteFailed);
        }
    }
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    send(socket, close).await;
    None
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

    #[tokio::test]
    async fn queued_payloads_go_out_as_text_frames_in_order() {
        let (socket, to_session, mut from_session) = pair();
        let (tx, rx) = queue(4);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            socket,
            rx,
            Duration::from_secs(60),
            far_future(),
            shutdown.clone(),
        ));
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
        let task = tokio::spawn(run(
            socket,
            rx,
            Duration::from_secs(10),
            far_future(),
            CancellationToken::new(),
        ));
        assert!(matches!(from_session.recv().await, Some(Message::Ping(_))));
        assert_eq!(task.await.unwrap(), End::Unresponsive);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_answers_pings_stays() {
        let (socket, to_session, mut from_session) = pair();
        let (_tx, rx) = queue(4);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            socket,
            rx,
            Duration::from_secs(10),
            far_future(),
            shutdown.clone(),
        ));
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
            run(socket, rx, Duration::from_secs(60), far_future(), shutdown).await,
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
        let task = tokio::spawn(run(
            socket,
            rx,
            Duration::from_secs(20),
            expires,
            CancellationToken::new(),
        ));
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
}
