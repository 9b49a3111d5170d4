//! The APNs channel: one per configured `[[apps]]` entry with `channel = "apns"`.
//!
//! Our own small client over the shared reqwest HTTP/2 client rather than the `a2` crate, which
//! hard-codes Apple's hosts and trust roots (so it can be pointed neither at a test server nor
//! through a proxy) and has had no release since May 2024. Each environment (production,
//! sandbox) has `connections` clients, each one HTTP/2 connection multiplexing every concurrent
//! push; the provider token is shared by all of them.
//!
//! Apple's answers decide the outcome: 200 delivered; 410, `BadDeviceToken` and
//! `DeviceTokenNotForTopic` mean the device token is dead and the binding goes; 429, 5xx and
//! connection errors are retried with short backoff inside the webhook deadline; a refused
//! provider token is renewed and the push retried once; anything else fails with Apple's reason.

mod client;
mod payload;
mod response;
mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::StatusCode;
use tokio::time::Instant;

use super::push_client::{Pool, TlsSettings};
use super::retry::Backoff;
use super::{Outcome, PushApp, Report, Trail};
use crate::config::apps::SettingsError;
use crate::config::apps::apns::{ApnsAuth, ApnsSettings, NonCallPush};
use crate::domain::{ApnsEnvironment, Binding, CallNotification, PushType};
use crate::metrics::{AppLabels, Metrics};
use client::{ApnsClient, Endpoint, HttpClient, Push};
use response::{Answer, Verdict, verdict};
use token::{ProviderToken, Signer, TokenCache};

/// An attempt gives up this long before the webhook deadline, so that its own verdict (and its
/// `timeout` count) is what the relay sees, not the relay's cut-off.
const ATTEMPT_MARGIN: Duration = Duration::from_millis(10);

/// The time provider tokens are dated and expirations set by: Unix seconds.
type UnixClock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub struct ApnsChannel {
    app: String,
    topic: String,
    auth: Auth,
    client: Box<dyn ApnsClient>,
    ringing_window: Duration,
    alert_template: String,
    non_call_push: NonCallPush,
    non_call_alert_template: String,
    metrics: Arc<Metrics>,
    now: UnixClock,
}

enum Auth {
    /// Token authentication: a provider token in every request.
    Token {
        signer: Box<Signer>,
        cache: TokenCache,
    },
    /// Certificate authentication: the TLS client certificate says who we are.
    Certificate,
}

impl ApnsChannel {
    /// The channel for `[[apps]]` entry `app`, whose settings configuration has read and whose
    /// key or certificate it has loaded.
    pub fn new(
        app: &str,
        settings: &ApnsSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SettingsError> {
        let mut tls = TlsSettings {
            extra_ca: settings.extra_ca.clone(),
            identity: None,
        };
        let auth = match &settings.auth {
            ApnsAuth::Token {
                team_id,
                key_id,
                key,
            } => Auth::Token {
                signer: Box::new(Signer::new(team_id, key_id, key.clone())),
                cache: TokenCache::default(),
            },
            ApnsAuth::Certificate {
                identity,
                not_after,
            } => {
                certificate_expiry(&metrics, app, *not_after);
                tls.identity = Some(identity.clone());
                Auth::Certificate
            }
        };
        let endpoint = |base: &str| -> Result<Endpoint, SettingsError> {
            Ok(Endpoint {
                base: base.to_owned(),
                pool: Pool::new(&tls, settings.connections, settings.tls_setting())?,
            })
        };
        let client = HttpClient {
            production: endpoint(&settings.production_url)?,
            sandbox: endpoint(&settings.sandbox_url)?,
        };
        Ok(Self {
            app: app.to_owned(),
            topic: settings.topic.clone(),
            auth,
            client: Box::new(client),
            ringing_window: settings.ringing_window,
            alert_template: settings.alert_template.clone(),
            non_call_push: settings.non_call_push,
            non_call_alert_template: settings.non_call_alert_template.clone(),
            metrics,
            now: Arc::new(unix_now),
        })
    }

    /// Not sent: the notification is not a call (`twi_message_type` other than
    /// `twilio.voice.call`) and `why` says which rule keeps it off this binding.
    fn skip(&self, why: &str) -> Report {
        let skip = super::Skip::new(super::Skip::NOT_A_CALL, format!("not a call; {why}"));
        Report::plain(Outcome::Skipped(skip), 0)
    }

    fn count(&self, result: &str) {
        super::count_push(&self.metrics, &self.app, "apns", result);
    }

    fn sign(&self, signer: &Signer, issued_at: u64) -> Result<String, String> {
        let jwt = signer
            .sign(issued_at)
            .map_err(|e| format!("cannot sign the APNs provider token: {e}"))?;
        self.metrics
            .push_auth_tokens
            .get_or_create(&AppLabels {
                app: self.app.clone(),
            })
            .inc();
        Ok(jwt)
    }

    /// The provider token for the next request (`None` with certificate authentication).
    fn provider_token(&self) -> Result<Option<ProviderToken>, String> {
        match &self.auth {
            Auth::Certificate => Ok(None),
            Auth::Token { signer, cache } => cache
                .current((self.now)(), |iat| self.sign(signer, iat))
                .map(Some),
        }
    }

    /// After Apple refused `rejected`: the token to retry with, if the renewal rules allow one.
    fn renewed_token(&self, rejected: &ProviderToken) -> Result<Option<ProviderToken>, String> {
        match &self.auth {
            Auth::Certificate => Ok(None),
            Auth::Token { signer, cache } => {
                cache.renew_rejected(rejected, (self.now)(), |iat| self.sign(signer, iat))
            }
        }
    }

    fn failed(&self, status: Option<StatusCode>, reason: String) -> Outcome {
        tracing::warn!(
            app = %self.app,
            status = status.map(|s| s.as_u16()),
            reason = %reason,
            "APNs push failed"
        );
        Outcome::Failed(reason)
    }

    /// Sends `push` until Apple accepts it, refuses it for good or the deadline comes:
    /// transient failures are retried with backoff, and a refused provider token is renewed
    /// once (if it is old enough for Apple to accept a new one).
    async fn send(&self, push: Push<'_>, deadline: Instant, trail: &mut Trail) -> Outcome {
        let mut backoff = Backoff::new(deadline);
        let mut token_renewed = false;
        let mut token = match self.provider_token() {
            Ok(t) => t,
            Err(reason) => return self.failed(None, reason),
        };
        loop {
            let jwt = token.as_ref().map(ProviderToken::jwt);
            let answer = self.client.send(&push, jwt, deadline).await;
            self.count(answer.label());
            match &answer {
                Answer::Accepted { id } => trail.answered(Some(200), None, id.as_deref()),
                Answer::Refused { status, reason, .. } => {
                    trail.answered(Some(status.as_u16()), Some(reason), None)
                }
                other => trail.answered(None, Some(other.label()), None),
            }
            let (retry_after, last) = match answer {
                Answer::Accepted { .. } => return Outcome::Delivered,
                Answer::Timeout => {
                    return self.failed(
                        None,
                        "no answer from APNs within the webhook deadline".into(),
                    );
                }
                Answer::Connection(e) => (None, (None, format!("cannot reach APNs: {e}"))),
                Answer::Refused {
                    status,
                    reason,
                    retry_after,
                } => match verdict(status, &reason) {
                    Verdict::Dead => {
                        return Outcome::Dead(format!(
                            "APNs answered {} {reason}",
                            status.as_u16()
                        ));
                    }
                    Verdict::RenewToken if !token_renewed && token.is_some() => {
                        token_renewed = true;
                        let rejected = token.take().expect("checked above");
                        match self.renewed_token(&rejected) {
                            Ok(Some(fresh)) => {
                                tracing::info!(app = %self.app, reason = %reason, "APNs refused the provider token; retrying with a new one");
                                token = Some(fresh);
                                continue;
                            }
                            Ok(None) => {
                                return self.failed(
                                    Some(status),
                                    format!(
                                        "APNs answered {} {reason}; the provider token is less than 20 minutes old, so it is not renewed yet",
                                        status.as_u16()
                                    ),
                                );
                            }
                            Err(e) => return self.failed(Some(status), e),
                        }
                    }
                    Verdict::Retry => (
                        retry_after,
                        (
                            Some(status),
                            format!("APNs answered {} {reason}", status.as_u16()),
                        ),
                    ),
                    Verdict::RenewToken | Verdict::Fail => {
                        return self.failed(
                            Some(status),
                            format!("APNs answered {} {reason}", status.as_u16()),
                        );
                    }
                },
            };
            let (status, why) = last;
            match backoff.next_delay(retry_after) {
                Some(delay) => {
                    tracing::debug!(app = %self.app, status = status.map(|s| s.as_u16()), reason = %why, ?delay, "retrying APNs push");
                    tokio::time::sleep(delay).await;
                }
                None => return self.failed(status, why),
            }
        }
    }
}

fn certificate_expiry(metrics: &Metrics, app: &str, not_after: i64) {
    metrics
        .apns_certificate_expiry
        .get_or_create(&AppLabels {
            app: app.to_owned(),
        })
        .set(not_after);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[async_trait]
impl PushApp for ApnsChannel {
    async fn push(
        &self,
        binding: &Binding,
        notification: &CallNotification,
        deadline: Instant,
    ) -> Report {
        let binding_type = binding.push_type.unwrap_or(PushType::Voip);
        let (push_type, template) = if notification.is_call() {
            (binding_type, &self.alert_template)
        } else {
            match (binding_type, self.non_call_push) {
                // A PushKit token takes VoIP pushes only (Apple answers DeviceTokenNotForTopic
                // to any other, which would remove the binding), and a VoIP push must be
                // reported to CallKit as a new call: nothing can go to it but calls.
                (PushType::Voip, _) => {
                    return self.skip("the binding takes VoIP pushes, which are for calls only");
                }
                (_, NonCallPush::Skip) => return self.skip("non_call_push = \"skip\""),
                (_, NonCallPush::Background) => {
                    (PushType::Background, &self.non_call_alert_template)
                }
                (_, NonCallPush::Alert) => (PushType::Alert, &self.non_call_alert_template),
            }
        };
        let kind = payload::kind(push_type);
        let body: Bytes = match payload::body(push_type, &notification.raw, template) {
            Ok(body) => body,
            Err(e) => {
                self.count(match e {
                    payload::PayloadError::TooLarge { .. } => "payload_too_large",
                    payload::PayloadError::NotAnObject => "invalid_payload",
                });
                return Report::plain(self.failed(None, e.to_string()), 0);
            }
        };
        let topic = format!("{}{}", self.topic, kind.topic_suffix);
        // A call notification is worthless once the call stops ringing: Apple drops it then
        // rather than delivering it to a phone that comes back online later.
        let expiration = ((self.now)() + self.ringing_window.as_secs()).to_string();
        let push = Push {
            environment: binding
                .apns_environment
                .unwrap_or(ApnsEnvironment::Production),
            device_token: &binding.address,
            topic: &topic,
            push_type: kind.push_type,
            priority: kind.priority,
            expiration: &expiration,
            body,
        };
        let mut trail = Trail::default();
        let outcome = self.send(push, deadline, &mut trail).await;
        trail.report(outcome)
    }
}

#[cfg(test)]
mod tests;
