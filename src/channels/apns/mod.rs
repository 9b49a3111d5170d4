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

mod config;
mod credentials;
mod payload;
mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use tokio::time::Instant;

use super::http::{self, TlsSettings};
use super::retry::{self, Backoff};
use super::{Channel, Outcome, SettingsError, Target};
use crate::domain::{ApnsEnvironment, CallNotification, PushType};
use crate::metrics::{AppLabels, Metrics, PushLabels};
use config::AuthSettings;
use token::{ProviderToken, Signer, TokenCache};

/// An attempt gives up this long before the webhook deadline, so that its own verdict (and its
/// `timeout` count) is what the relay sees, not the relay's cut-off.
const ATTEMPT_MARGIN: Duration = Duration::from_millis(10);

pub struct ApnsChannel {
    app: String,
    topic: String,
    auth: Auth,
    production: Endpoint,
    sandbox: Endpoint,
    ringing_window: Duration,
    alert_template: String,
    metrics: Arc<Metrics>,
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

/// One APNs environment: its base URL and the clients (connections) used in turn.
struct Endpoint {
    base: String,
    clients: Vec<reqwest::Client>,
    next: AtomicUsize,
}

impl Endpoint {
    fn client(&self) -> &reqwest::Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }
}

impl ApnsChannel {
    /// Reads the app's settings and loads its key or certificate; every problem is named by its
    /// setting, which is how `check-config` reports a broken `.p8` or certificate.
    pub fn from_config(
        app: &str,
        settings: &toml::Table,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SettingsError> {
        let settings = config::parse(settings)?;
        let mut tls = TlsSettings::default();
        if let Some(ca_file) = &settings.ca_file {
            tls.extra_ca =
                http::load_ca_file(ca_file).map_err(|m| SettingsError::new("ca_file", m))?;
        }
        let now = unix_now() as i64;
        let (auth, tls_setting) = match settings.auth {
            AuthSettings::Token {
                team_id,
                key_id,
                key,
                key_setting,
            } => {
                let key = credentials::load_p8(&key, key_setting)?;
                let auth = Auth::Token {
                    signer: Box::new(Signer::new(&team_id, &key_id, key)),
                    cache: TokenCache::default(),
                };
                (auth, "ca_file")
            }
            AuthSettings::Certificate {
                cert_file,
                private_key,
                key_setting,
            } => {
                let cert = credentials::load_pem_pair(&cert_file, &private_key, key_setting, now)?;
                certificate_expiry(&metrics, app, cert.not_after);
                tls.identity = Some(cert.identity);
                (Auth::Certificate, "cert_file")
            }
            AuthSettings::Pkcs12 { file, password } => {
                let cert = credentials::load_pkcs12(&file, &password, now)?;
                certificate_expiry(&metrics, app, cert.not_after);
                tls.identity = Some(cert.identity);
                (Auth::Certificate, "pkcs12_file")
            }
        };
        let endpoint = |base: String| -> Result<Endpoint, SettingsError> {
            let clients = (0..settings.connections)
                .map(|_| http::client(&tls))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| SettingsError::new(tls_setting, m))?;
            Ok(Endpoint {
                base,
                clients,
                next: AtomicUsize::new(0),
            })
        };
        Ok(Self {
            app: app.to_owned(),
            topic: settings.topic,
            auth,
            production: endpoint(settings.production_url)?,
            sandbox: endpoint(settings.sandbox_url)?,
            ringing_window: settings.ringing_window,
            alert_template: settings.alert_template,
            metrics,
        })
    }

    fn count(&self, result: &str) {
        self.metrics
            .push_results
            .get_or_create(&PushLabels {
                app: self.app.clone(),
                channel: "apns",
                result: result.to_owned(),
            })
            .inc();
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
                .current(unix_now(), |iat| self.sign(signer, iat))
                .map(Some),
        }
    }

    /// After Apple refused `rejected`: the token to retry with, if the renewal rules allow one.
    fn renewed_token(&self, rejected: &ProviderToken) -> Result<Option<ProviderToken>, String> {
        match &self.auth {
            Auth::Certificate => Ok(None),
            Auth::Token { signer, cache } => {
                cache.renew_rejected(rejected, unix_now(), |iat| self.sign(signer, iat))
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

/// What one request came to.
enum Answer {
    Accepted,
    /// Apple (or whatever answered) said no: the status and its reason.
    Refused {
        status: StatusCode,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// No answer before the deadline.
    Timeout,
    /// The connection could not be made or broke.
    Connection(String),
}

impl Answer {
    /// The `result` label of `callrelay_push_results_total`.
    fn label(&self) -> &str {
        match self {
            Answer::Accepted => "success",
            Answer::Refused { reason, .. } => reason,
            Answer::Timeout => "timeout",
            Answer::Connection(_) => "connection_error",
        }
    }
}

/// What to do about a refusal.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The device token is dead: remove the binding.
    Dead,
    /// The provider token was refused: renew it and try again.
    RenewToken,
    /// Apple is busy or broken: try again after a pause.
    Retry,
    /// The request itself is wrong: retrying will not help.
    Fail,
}

fn verdict(status: StatusCode, reason: &str) -> Verdict {
    match (status.as_u16(), reason) {
        // 410: "the device token is no longer active for the topic" (Unregistered, and
        // ExpiredToken in newer documentation).
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Verdict::Dead,
        (403, "ExpiredProviderToken" | "InvalidProviderToken") => Verdict::RenewToken,
        (429, _) | (500..=599, _) => Verdict::Retry,
        _ => Verdict::Fail,
    }
}

/// Apple's `{"reason": "…"}`, when it is one of Apple's identifiers; otherwise (a proxy's page,
/// nothing at all) `http_<status>`, so the metric label stays a short, known word.
fn reason(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Error {
        reason: String,
    }
    serde_json::from_slice::<Error>(body)
        .ok()
        .map(|e| e.reason)
        .filter(|r| !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| format!("http_{}", status.as_u16()))
}

/// A reqwest error and its causes, without the URL (it holds the device token).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
            if let Some(id) = headers.get("apns-id").and_then(|v| v.to_str().ok()) {
                tracing::debug!(apns_id = id, "APNs accepted the push");
            }
            Answer::Accepted
        }
        Ok(Ok((status, headers, body))) => Answer::Refused {
            status,
            reason: reason(status, &body),
            retry_after: retry::retry_after(&headers),
        },
    }
}

#[async_trait]
impl Channel for ApnsChannel {
    async fn deliver(
        &self,
        target: &Target,
        notification: &CallNotification,
        deadline: Instant,
    ) -> Outcome {
        let Target::Push(binding) = target else {
            return Outcome::Failed("the APNs channel delivers to push bindings only".into());
        };
        let push_type = binding.push_type.unwrap_or(PushType::Voip);
        let kind = payload::kind(push_type);
        let body: Bytes = match payload::body(push_type, &notification.raw, &self.alert_template) {
            Ok(body) => body,
            Err(e) => {
                self.count(match e {
                    payload::PayloadError::TooLarge { .. } => "payload_too_large",
                    payload::PayloadError::NotAnObject => "invalid_payload",
                });
                return self.failed(None, e.to_string());
            }
        };
        let endpoint = match binding
            .apns_environment
            .unwrap_or(ApnsEnvironment::Production)
        {
            ApnsEnvironment::Production => &self.production,
            ApnsEnvironment::Sandbox => &self.sandbox,
        };
        let url = format!("{}/3/device/{}", endpoint.base, binding.address);
        let topic = format!("{}{}", self.topic, kind.topic_suffix);
        // A call notification is worthless once the call stops ringing: Apple drops it then
        // rather than delivering it to a phone that comes back online later.
        let expiration = (unix_now() + self.ringing_window.as_secs()).to_string();

        let mut backoff = Backoff::new(deadline);
        let mut token_renewed = false;
        let mut token = match self.provider_token() {
            Ok(t) => t,
            Err(reason) => return self.failed(None, reason),
        };
        loop {
            let mut request = endpoint
                .client()
                .post(&url)
                .header("apns-topic", &topic)
                .header("apns-push-type", kind.push_type)
                .header("apns-priority", kind.priority)
                .header("apns-expiration", &expiration)
                .body(body.clone());
            if let Some(t) = &token {
                request = request.header(AUTHORIZATION, format!("bearer {}", t.jwt()));
            }
            let answer = send(request, deadline).await;
            self.count(answer.label());
            let (retry_after, last) = match answer {
                Answer::Accepted => return Outcome::Delivered,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_apples_reasons() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        assert_eq!(verdict(s(410), "Unregistered"), Verdict::Dead);
        assert_eq!(verdict(s(410), "ExpiredToken"), Verdict::Dead);
        assert_eq!(verdict(s(400), "BadDeviceToken"), Verdict::Dead);
        assert_eq!(verdict(s(400), "DeviceTokenNotForTopic"), Verdict::Dead);
        assert_eq!(verdict(s(403), "ExpiredProviderToken"), Verdict::RenewToken);
        assert_eq!(verdict(s(403), "InvalidProviderToken"), Verdict::RenewToken);
        assert_eq!(verdict(s(429), "TooManyRequests"), Verdict::Retry);
        assert_eq!(verdict(s(500), "InternalServerError"), Verdict::Retry);
        assert_eq!(verdict(s(503), "ServiceUnavailable"), Verdict::Retry);
        assert_eq!(verdict(s(400), "BadTopic"), Verdict::Fail);
        assert_eq!(verdict(s(400), "PayloadEmpty"), Verdict::Fail);
        assert_eq!(verdict(s(403), "BadCertificateEnvironment"), Verdict::Fail);
        assert_eq!(verdict(s(413), "PayloadTooLarge"), Verdict::Fail);
        assert_eq!(
            verdict(s(429), "TooManyProviderTokenUpdates"),
            Verdict::Retry
        );
    }

    #[tokio::test]
    async fn connection_errors_do_not_name_the_device_token() {
        let client = http::client(&TlsSettings::default()).unwrap();
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

    #[test]
    fn reasons_are_apples_words_or_the_status() {
        let s = StatusCode::BAD_REQUEST;
        assert_eq!(
            reason(s, br#"{"reason":"BadDeviceToken"}"#),
            "BadDeviceToken"
        );
        assert_eq!(
            reason(
                StatusCode::GONE,
                br#"{"reason":"Unregistered","timestamp":1700000000000}"#
            ),
            "Unregistered"
        );
        assert_eq!(reason(s, b""), "http_400");
        assert_eq!(reason(s, b"<html>bad gateway</html>"), "http_400");
        assert_eq!(reason(s, br#"{"reason":"two words"}"#), "http_400");
        assert_eq!(
            reason(StatusCode::BAD_GATEWAY, br#"{"reason":""}"#),
            "http_502"
        );
    }
}
