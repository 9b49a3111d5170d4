//! The vendor calls: an access token from the service account's token endpoint, and one
//! `messages:send` request. Behind a small trait so that the channel's retry and
//! token-renewal loop has unit tests without a server.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use tokio::time::Instant;

use super::oauth::{AccessToken, TokenSource};
use super::response::Attempt;
use crate::channels::push_client::{Pool, describe};
use crate::channels::retry;

/// Google's error bodies are a few hundred bytes; a larger answer is not worth reading.
const MAX_ERROR_BODY: usize = 64 * 1024;

#[async_trait]
pub trait FcmClient: Send + Sync + 'static {
    /// A token good for a send now, giving up at `deadline`.
    async fn token(&self, deadline: Instant) -> Result<Arc<AccessToken>, String>;
    /// FCM refused `token`: the next `token` is a new one.
    fn invalidate(&self, token: &Arc<AccessToken>);
    /// One `messages:send` request with `body`.
    async fn send(&self, body: &Bytes, token: &AccessToken, deadline: Instant) -> Attempt;
}

/// FCM HTTP v1 over HTTP/2.
pub struct HttpClient {
    pub send_url: String,
    pub pool: Pool,
    pub tokens: TokenSource,
}

#[async_trait]
impl FcmClient for HttpClient {
    async fn token(&self, deadline: Instant) -> Result<Arc<AccessToken>, String> {
        self.tokens.token(deadline).await
    }

    fn invalidate(&self, token: &Arc<AccessToken>) {
        self.tokens.invalidate(token);
    }

    async fn send(&self, body: &Bytes, token: &AccessToken, deadline: Instant) -> Attempt {
        let request = self
            .pool
            .client()
            .post(&self.send_url)
            .header(CONTENT_TYPE, "application/json")
            .bearer_auth(token.bearer())
            .body(body.clone())
            .send();
        let response = match tokio::time::timeout_at(deadline, request).await {
            Err(_) => return Attempt::Timeout,
            Ok(Err(e)) if e.is_timeout() => return Attempt::Timeout,
            Ok(Err(e)) => return Attempt::Connection(describe(e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let retry_after = retry::retry_after(response.headers());
        // Read to its end even on success (where it is not needed): an HTTP/2 answer dropped
        // unread resets its stream, and a connection with too many of those (1024 whose data
        // came late) is closed by the client, failing every push in flight on it.
        let body = match tokio::time::timeout_at(deadline, read_limited(response)).await {
            Err(_) => return Attempt::Timeout,
            // The status is what matters; a body cut short only loses the details.
            Ok(body) => body,
        };
        Attempt::Answer {
            status,
            retry_after,
            body,
        }
    }
}

async fn read_limited(mut response: reqwest::Response) -> Bytes {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BODY {
            break;
        }
    }
    Bytes::from(body)
}
