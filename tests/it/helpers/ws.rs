//! A real WebSocket client (tokio-tungstenite) for the tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The close frame, once the server sent one.
    pub closed_with: Option<Option<CloseFrame>>,
}

impl WsClient {
    /// Connects with the token in the Authorization header (or in the query when `query` is
    /// given: `Some("access_token=…")`).
    pub async fn connect(base: &str, token: &str, query: Option<&str>) -> Result<Self, Error> {
        let ws_base = base.replacen("http://", "ws://", 1);
        let url = match query {
            Some(q) => format!("{ws_base}/v1/ws?{q}"),
            None => format!("{ws_base}/v1/ws"),
        };
        let mut request = url.into_client_request()?;
        if query.is_none() {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self {
            stream,
            closed_with: None,
        })
    }

    /// The next text frame within `within`, answering pings meanwhile. `None` on timeout or
    /// close.
    pub async fn next_text(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            match next {
                Ok(Message::Text(t)) => return Some(t.to_string()),
                Ok(Message::Close(frame)) => {
                    self.closed_with = Some(frame);
                    return None;
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Like `next_text`, but tells a quiet connection (`Ok(None)`) from one that ended (closed,
    /// reset, or dropped: `Err(())`).
    pub async fn next_text_or_end(&mut self, within: Duration) -> Result<Option<String>, ()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, self.stream.next()).await else {
                return Ok(None);
            };
            match next {
                Some(Ok(Message::Text(t))) => return Ok(Some(t.to_string())),
                Some(Ok(Message::Close(frame))) => {
                    self.closed_with = Some(frame);
                    return Err(());
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(()),
            }
        }
    }

    /// Asserts no text frame arrives within `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        if let Some(t) = self.next_text(within).await {
            panic!("expected no notification, got {t}");
        }
    }

    /// Waits for the server's close frame.
    pub async fn closed(&mut self, within: Duration) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + within;
        while self.closed_with.is_none() {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => self.closed_with = Some(frame),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
        self.closed_with.clone().flatten()
    }

    pub async fn close(mut self) {
        let _ = self.stream.send(Message::Close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }

    /// Starts the close handshake with `1000` and says whether the server answered with a
    /// close frame of its own (RFC 6455, 5.5.1) within two seconds.
    pub async fn close_answered(mut self) -> bool {
        let _ = self.stream.send(Message::Close(None)).await;
        tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Close(_))) => return true,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return false,
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Drops the TCP connection without a close handshake.
    pub fn abort(self) {
        drop(self.stream);
    }

    /// Sends a text frame; the error when the server has closed the connection.
    pub async fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.stream.send(Message::text(text)).await
    }
}
