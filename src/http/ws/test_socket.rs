//! An in-memory WebSocket for the sessions' unit tests.

use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use tokio::sync::mpsc as fmpsc;

/// An in-memory socket: what the session writes goes to `sent`, what the test pushes into
/// `incoming` is what the session reads.
pub struct Pair {
    incoming: fmpsc::UnboundedReceiver<Result<Message, ()>>,
    sent: fmpsc::UnboundedSender<Message>,
}

impl Stream for Pair {
    type Item = Result<Message, ()>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for Pair {
    type Error = ();
    fn poll_ready(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn start_send(self: std::pin::Pin<&mut Self>, item: Message) -> Result<(), ()> {
        self.sent.send(item).map_err(|_| ())
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The socket, the sender of what the session reads, the receiver of what it writes.
pub fn pair() -> (
    Pair,
    fmpsc::UnboundedSender<Result<Message, ()>>,
    fmpsc::UnboundedReceiver<Message>,
) {
    let (to_session, incoming) = fmpsc::unbounded_channel();
    let (sent, from_session) = fmpsc::unbounded_channel();
    (Pair { incoming, sent }, to_session, from_session)
}
