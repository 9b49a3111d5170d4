//! The vendor call: one POST to APNs, behind a small trait so that the channel's retry and
//! token-renewal loop has unit tests without a server. Each environment (production, sandbox)
//! has its pool of HTTP/2 connections.

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use tokio::time::Instant;

use super::ATTEMPT_MARGIN;
use super::response::{Answer, reason};
use crate::channels::push_client::{Pool, describe};
use crate::channels::retry;
use crate::domain::ApnsEnvironment;

/// One push request, as the channel composes it.
pub struct Push<'a> {
    pub environment: ApnsEnvironment,
    pub device_token: &'a str,
    /// The app's topic with the push type's suffix.
    pub topic: &'a str,
    pub push_type: &'static str,
    pub priority: &'static str,
    /// When Apple drops the push (Unix seconds).
    pub expiration: &'a str,
    pub body: Bytes,
}

#[async_trait]
pub trait ApnsClient: Send + Sync + 'static {
    /// Sends `push` with the provider token's JWT (none with certificate authentication),
    /// giving up at `deadline`.
    async fn send(
        &self,
        push: &Push<'_>,
        provider_token: Option<&str>,
        deadline: Instant,
    ) -> Answer;
}

/// One APNs environment: its base URL and its connections.
pub struct Endpoint {
    pub base: String,
    pub pool: Pool,
}

/// APNs over HTTP/2.
pub struct HttpClient {
    pub production: Endpoint,
    pub sandbox: Endpoint,
}

#[async_trait]
impl ApnsClient for HttpClient {
    async fn send(
        &self,
        push: &Push<'_>,
        provider_token: Option<&str>,
        deadline: Instant,
    ) -> Answer {
        let endpoint = match push.environment {
            ApnsEnvironment::Production => &self.production,
            ApnsEnvironment::Sandbox => &self.sandbox,
        };
        let url = format!("{}/3/device/{}", endpoint.base, push.device_token);
        let mut request = endpoint
            .pool
            .client()
            .post(&url)
            .header("apns-topic", push.topic)
            .header("apns-push-type", push.push_type)
            .header("apns-priority", push.priority)
            .header("apns-expiration", push.expiration)
            .body(push.body.clone());
        if let Some(jwt) = provider_token {
            request = request.header(AUTHORIZATION, format!("bearer {jwt}"));
        }
        send(request, deadline).await
    }
}

async fn send(request: reqwest::RequestBuilder, deadline: Instant) -> Answer {
    let attempt_deadline = deadline.checked_sub(ATTEMPT_MARGIN).unwrap_or(deadline);
    let exchange = async {
        let response = request.send().await?;
        let status = response.status();
        let headers: HeaderMap = response.headers().clone();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, body))
    };
    match tokio::time::timeout_at(attempt_deadline, exchange).await {
        Err(_) => Answer::Timeout,
        Ok(Err(e)) if e.is_timeout() => Answer::Timeout,
        Ok(Err(e)) => Answer::Connection(describe(e)),
        Ok(Ok((status, headers, _))) if status == StatusCode::OK => {
            let id = headers
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .filter(|id| id.len() <= 64)
                .map(str::to_owned);
            tracing::debug!(apns_id = id.as_deref(), "APNs accepted the push");
            Answer::Accepted { id }
        }
        Ok(Ok((status, headers, body))) => Answer::Refused {
            status,
            reason: reason(status, &body),
            retry_after: retry::retry_after(&headers),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::channels::push_client::{self, TlsSettings};

    #[tokio::test]
    async fn connection_errors_do_not_name_the_device_token() {
        let client = push_client::client(&TlsSettings::default()).unwrap();
        // Nothing listens on port 1: the connection is refused at once.
        let request = client.post("https://127.0.0.1:1/3/device/a0b1c2d3e4f5a6b7c8d9");
        let deadline = Instant::now() + Duration::from_secs(5);
        match send(request, deadline).await {
            Answer::Connection(why) => {
                assert!(!why.contains("a0b1c2d3e4f5a6b7c8d9"), "{why}");
                assert!(!why.contains("/3/device"), "{why}");
            }
            _ => panic!("expected a connection error"),
        }
    }
}
