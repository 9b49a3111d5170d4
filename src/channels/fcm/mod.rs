//! The FCM HTTP v1 channel: one data message per push binding, sent to
//! `{base_url}/v1/projects/{project}/messages:send` with an OAuth2 access token from the app's
//! service account.
//!
//! Our own small client rather than the `fcm` crate, whose 0.9 releases speak only the legacy
//! API Google shut down in 2024. It shares the push apps' HTTP/2 plumbing (`channels::push_client`),
//! so a base URL and an extra CA point it at a proxy or at the tests' mock.

mod client;
pub mod message;
pub mod oauth;
pub mod response;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::push_client::{Pool, TlsSettings};
use super::retry::Backoff;
use super::{Outcome, PushApp, Report, Trail};
use crate::config::apps::SettingsError;
use crate::config::apps::fcm::FcmSettings;
use crate::domain::{Binding, CallNotification};
use crate::metrics::Metrics;
use client::{FcmClient, HttpClient};
use message::MessageError;
use oauth::TokenSource;
use response::{Attempt, Verdict};

pub struct FcmChannel {
    app: String,
    /// `android.ttl`, as FCM writes durations (`"30s"`).
    ttl: String,
    client: Box<dyn FcmClient>,
    metrics: Arc<Metrics>,
}

impl FcmChannel {
    /// The channel for `[[apps]]` entry `app`, whose settings and service-account key
    /// configuration has read.
    pub fn new(
        app: &str,
        settings: &FcmSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SettingsError> {
        let tls = TlsSettings {
            extra_ca: settings.extra_ca.clone(),
            identity: None,
        };
        let pool = Pool::new(&tls, settings.connections, "ca_file")?;
        // Token requests go to another host (oauth2.googleapis.com), so sharing the first
        // client costs the sends nothing and needs no second TLS set-up.
        let tokens = TokenSource::new(
            settings.credentials.clone(),
            pool.first().clone(),
            app,
            metrics.clone(),
        );
        tracing::info!(
            app,
            project = %settings.project_id,
            url = %settings.send_url,
            credentials = %settings.credentials.describe(),
            connections = settings.connections,
            "FCM app ready"
        );
        Ok(Self {
            app: app.to_owned(),
            ttl: format!("{}s", settings.ttl.as_secs()),
            client: Box::new(HttpClient {
                send_url: settings.send_url.clone(),
                pool,
                tokens,
            }),
            metrics,
        })
    }

    fn count(&self, result: &str) {
        super::count_push(&self.metrics, &self.app, "fcm", result);
    }

    /// Sends `body`, renewing the access token once on `401` and retrying transient failures
    /// until `deadline`.
    async fn send(&self, body: Bytes, deadline: Instant, trail: &mut Trail) -> Outcome {
        let mut backoff = Backoff::new(deadline);
        let mut renewed = false;
        loop {
            let token = match self.client.token(deadline).await {
                Ok(t) => t,
                Err(e) => {
                    self.count("token_error");
                    tracing::error!(app = %self.app, error = %e, "cannot obtain an FCM access token");
                    return Outcome::Failed(format!("cannot obtain an access token: {e}"));
                }
            };
            let attempt = self.client.send(&body, &token, deadline).await;
            let status = match &attempt {
                Attempt::Answer { status, .. } => Some(status.as_u16()),
                _ => None,
            };
            let (label, verdict) = match attempt {
                Attempt::Timeout => {
                    trail.answered(None, Some("timeout"), None);
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
            let reason = (!matches!(verdict, Verdict::Delivered)).then_some(label.as_str());
            trail.answered(status, reason, None);
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
                    self.client.invalidate(&token);
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
}

#[async_trait]
impl PushApp for FcmChannel {
    async fn push(
        &self,
        binding: &Binding,
        notification: &CallNotification,
        deadline: Instant,
    ) -> Report {
        let data = match message::data_map(&notification.raw) {
            Ok(data) => data,
            Err(e) => {
                self.count(match e {
                    MessageError::TooLarge { .. } => "payload_too_large",
                    MessageError::NotObject(_) => "invalid_payload",
                });
                return Report::plain(Outcome::Failed(e.to_string()), 0);
            }
        };
        let body = message::request_body(&binding.address, &data, &self.ttl);
        let mut trail = Trail::default();
        let outcome = self.send(body, deadline, &mut trail).await;
        trail.report(outcome)
    }
}

/// At most `max` characters of `text`, marked when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

#[cfg(test)]
mod tests;
