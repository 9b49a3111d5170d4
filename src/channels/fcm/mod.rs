//! The FCM HTTP v1 channel: one data message per push binding, sent to
//! `{base_url}/v1/projects/{project}/messages:send` with an OAuth2 access token from the app's
//! service account.
//!
//! Our own small client rather than the `fcm` crate, whose 0.9 releases speak only the legacy
//! API Google shut down in 2024. It shares the push channels' HTTP/2 stack (`channels::http`),
//! so a base URL and an extra CA point it at a proxy or at the tests' mock.

pub mod config;
pub mod message;
pub mod oauth;
pub mod response;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use tokio::time::Instant;

use super::http::TlsSettings;
use super::retry::{self, Backoff};
use super::{Channel, Outcome, SettingsError, Target};
use crate::domain::CallNotification;
use crate::metrics::{Metrics, PushLabels};
use config::FcmSettings;
use message::MessageError;
use oauth::{AccessToken, TokenSource};
use response::Verdict;

/// Google's error bodies are a few hundred bytes; a larger answer is not worth reading.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub struct FcmChannel {
    app: String,
    send_url: String,
    /// `android.ttl`, as FCM writes durations (`"30s"`).
    ttl: String,
    /// One HTTP/2 connection each, used in turn: one connection carries many concurrent
    /// streams, but Google caps the streams per connection, so busy apps open a few.
    clients: Vec<reqwest::Client>,
    next_client: AtomicUsize,
    tokens: TokenSource,
    metrics: Arc<Metrics>,
}

/// How one `messages:send` request ended.
enum Attempt {
    Answer {
        status: reqwest::StatusCode,
        retry_after: Option<std::time::Duration>,
        body: Bytes,
    },
    /// No answer before the webhook deadline.
    Timeout,
    /// The request did not get through (connect, TLS, reset stream).
    Connection(String),
}

impl FcmChannel {
    /// Builds the channel for `[[apps]]` entry `app`, loading its service-account key.
    pub fn from_config(
        app: &str,
        settings: &toml::Table,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SettingsError> {
        let settings = FcmSettings::parse(settings)?;
        let tls = TlsSettings {
            extra_ca: settings.extra_ca.clone(),
            identity: None,
        };
        let clients = (0..settings.connections)
            .map(|_| super::http::client(&tls))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SettingsError::new("ca_file", e))?;
        // Token requests go to another host (oauth2.googleapis.com), so sharing the first
        // client costs the sends nothing and needs no second TLS set-up.
        let tokens = TokenSource::new(
            settings.service_account,
            clients[0].clone(),
            app,
            metrics.clone(),
        );
        tracing::info!(
            app,
            project = %settings.project_id,
            url = %settings.send_url,
            connections = settings.connections,
            "FCM app ready"
        );
        Ok(Self {
            app: app.to_owned(),
            send_url: settings.send_url,
            ttl: format!("{}s", settings.ttl.as_secs()),
            clients,
            next_client: AtomicUsize::new(0),
            tokens,
            metrics,
        })
    }

    fn count(&self, result: &str) {
        self.metrics
            .push_results
            .get_or_create(&PushLabels {
                app: self.app.clone(),
                channel: "fcm",
                result: result.to_owned(),
            })
            .inc();
    }

    /// Sends `body`, renewing the access token once on `401` and retrying transient failures
    /// until `deadline`.
    async fn send(&self, body: Bytes, deadline: Instant) -> Outcome {
        let mut backoff = Backoff::new(deadline);
        let mut renewed = false;
        loop {
            let token = match self.tokens.token(deadline).await {
                Ok(t) => t,
                Err(e) => {
                    self.count("token_error");
                    tracing::error!(app = %self.app, error = %e, "cannot obtain an FCM access token");
                    return Outcome::Failed(format!("cannot obtain an access token: {e}"));
                }
            };
            let (label, verdict) = match self.attempt(&body, &token, deadline).await {
                Attempt::Timeout => {
                    self.count("timeout");
                    return Outcome::Failed(
                        "no answer from FCM within the webhook deadline".into(),
                    );
                }
                Attempt::Connection(e) => (
                    "connection_error".to_owned(),
                    Verdict::Retry {
                        reason: format!("cannot reach FCM: {e}"),
                        retry_after: None,
                    },
                ),
                Attempt::Answer {
                    status,
                    retry_after,
                    body,
                } => response::classify(status, retry_after, &body),
            };
            self.count(&label);
            match verdict {
                Verdict::Delivered => return Outcome::Delivered,
                Verdict::Dead(reason) => return Outcome::Dead(reason),
                Verdict::Failed(reason) => return Outcome::Failed(reason),
                Verdict::Misconfigured(reason) => {
                    tracing::error!(app = %self.app, code = %label, reason = %reason,
                        "FCM refused the send because of a configuration problem: check the Firebase project (for THIRD_PARTY_AUTH_ERROR, its APNs credentials) and the service account's permissions");
                    return Outcome::Failed(reason);
                }
                Verdict::Unauthenticated(reason) if !renewed => {
                    tracing::info!(app = %self.app, reason = %reason, "FCM refused the access token; fetching a new one");
                    renewed = true;
                    self.tokens.invalidate(&token);
                }
                Verdict::Unauthenticated(reason) => {
                    tracing::error!(app = %self.app, reason = %reason,
                        "FCM refused a freshly fetched access token: a configuration problem (is the service account allowed to send for this project?)");
                    return Outcome::Failed(format!("{reason} (even with a new access token)"));
                }
                Verdict::Retry {
                    reason,
                    retry_after,
                } => match backoff.next_delay(retry_after) {
                    Some(delay) => {
                        tracing::debug!(app = %self.app, reason = %reason, ?delay, "retrying FCM send");
                        tokio::time::sleep(delay).await;
                    }
                    None => {
                        return Outcome::Failed(match retry_after {
                            Some(after) => format!(
                                "{reason}; FCM asked to retry after {} s, past the webhook deadline",
                                after.as_secs()
                            ),
                            None => format!("{reason}; no time left to retry"),
                        });
                    }
                },
            }
        }
    }

    async fn attempt(&self, body: &Bytes, token: &AccessToken, deadline: Instant) -> Attempt {
        let n = self.next_client.fetch_add(1, Ordering::Relaxed);
        let client = &self.clients[n % self.clients.len()];
        let request = client
            .post(&self.send_url)
            .header(CONTENT_TYPE, "application/json")
            .bearer_auth(token.bearer())
            .body(body.clone())
            .send();
        let response = match tokio::time::timeout_at(deadline, request).await {
            Err(_) => return Attempt::Timeout,
            Ok(Err(e)) if e.is_timeout() => return Attempt::Timeout,
            Ok(Err(e)) => return Attempt::Connection(describe(&e)),
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

#[async_trait]
impl Channel for FcmChannel {
    async fn deliver(
        &self,
        target: &Target,
        notification: &CallNotification,
        deadline: Instant,
    ) -> Outcome {
        let Target::Push(binding) = target else {
            return Outcome::Failed("the fcm channel delivers to push bindings only".into());
        };
        let data = match message::data_map(&notification.raw) {
            Ok(data) => data,
            Err(e) => {
                self.count(match e {
                    MessageError::TooLarge { .. } => "payload_too_large",
                    MessageError::NotObject(_) => "invalid_payload",
                });
                return Outcome::Failed(e.to_string());
            }
        };
        let body = message::request_body(&binding.address, &data, &self.ttl);
        self.send(body, deadline).await
    }
}

/// A reqwest error with its causes (`connection refused`, `invalid peer certificate…`),
/// which its own message leaves out.
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// At most `max` characters of `text`, marked when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}
