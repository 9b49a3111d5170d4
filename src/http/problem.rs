//! The one place where errors become HTTP answers: RFC 9457 problem documents with a stable
//! `type` per kind of client error (the table below, listed again in the README). Each error
//! enum has one mapping here that puts its status (through its kind), its problem and, where it
//! is counted, its metric label side by side, so that the answer and the counter cannot
//! disagree. Internal causes are logged here and never sent; authentication failures, which
//! anyone can cause, through the process's log throttle (`telemetry::throttle`), so that a
//! flood of them cannot flood the log.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ws::UpgradeError;
use crate::auth::AuthError;
use crate::auth::webhook::WebhookAuthError;
use crate::channels::websocket::ConnectError;
use crate::relay::{
    BindingError, EventError, Ingested, RecordError, Summary, TargetError, WebhookError,
};
use crate::telemetry::throttle;

/// The challenge a `401` carries unless the problem names another.
const BEARER_CHALLENGE: &str = "Bearer";
/// What Twilio waits for before it sends the Basic credentials of the webhook URL.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"callrelay\"";

/// Declares `Kind` and its table in one place: each row is a kind, its slug, its status and its
/// title.
macro_rules! kinds {
    ($($kind:ident => ($slug:literal, $status:ident, $title:literal),)*) => {
        /// Every kind of problem callrelay answers with. Its slug makes the document's `type`
        /// (`urn:callrelay:problem:<slug>`); the README's table lists the same kinds.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind {
            $($kind,)*
        }

        impl Kind {
            pub const ALL: &[Kind] = &[$(Kind::$kind,)*];

            /// Slug, status and title. A WebSocket handshake refused by axum keeps the status
            /// axum gives it (`400` or `426`).
            pub fn spec(self) -> (&'static str, StatusCode, &'static str) {
                match self {
                    $(Kind::$kind => ($slug, StatusCode::$status, $title),)*
                }
            }
        }
    };
}

kinds! {
    InvalidNotification => ("invalid-notification", BAD_REQUEST, "Invalid call notification"),
    InvalidEvent => ("invalid-event", BAD_REQUEST, "Invalid event"),
    PayloadTooLarge => ("payload-too-large", PAYLOAD_TOO_LARGE, "Payload too large"),
    UnknownAccount => ("unknown-account", FORBIDDEN, "Account not configured"),
    WebhookAuthenticationRequired => ("webhook-authentication-required", UNAUTHORIZED, "Webhook authentication required"),
    WebhookAuthenticationFailed => ("webhook-authentication-failed", FORBIDDEN, "Webhook authentication failed"),
    NoBinding => ("no-binding", NOT_FOUND, "No binding"),
    StoreUnavailable => ("store-unavailable", SERVICE_UNAVAILABLE, "Store unavailable"),
    NotificationInProgress => ("notification-in-progress", SERVICE_UNAVAILABLE, "Notification in progress"),
    Unauthenticated => ("unauthenticated", UNAUTHORIZED, "Authentication required"),
    Forbidden => ("forbidden", FORBIDDEN, "Forbidden"),
    InvalidBinding => ("invalid-binding", BAD_REQUEST, "Invalid binding"),
    BadRequest => ("bad-request", BAD_REQUEST, "Bad request"),
    BindingNotFound => ("binding-not-found", NOT_FOUND, "Binding not found"),
    UnsupportedMediaType => ("unsupported-media-type", UNSUPPORTED_MEDIA_TYPE, "Unsupported media type"),
    AppNotConfigured => ("app-not-configured", UNPROCESSABLE_ENTITY, "Push app not configured"),
    WebsocketUpgradeRequired => ("websocket-upgrade-required", UPGRADE_REQUIRED, "WebSocket upgrade required"),
    RequestTimeout => ("request-timeout", REQUEST_TIMEOUT, "Request timeout"),
    TooManyBindings => ("too-many-bindings", CONFLICT, "Too many bindings"),
    TargetConfigured => ("target-configured", CONFLICT, "Target set in the configuration"),
    RateLimited => ("rate-limited", TOO_MANY_REQUESTS, "Too many requests"),
    TooManySockets => ("too-many-sockets", TOO_MANY_REQUESTS, "Too many sockets"),
    OverCapacity => ("over-capacity", SERVICE_UNAVAILABLE, "Over capacity"),
    NotFound => ("not-found", NOT_FOUND, "Not found"),
    InternalError => ("internal-error", INTERNAL_SERVER_ERROR, "Internal error"),
}

impl Kind {
    pub fn slug(self) -> &'static str {
        self.spec().0
    }

    pub fn status(self) -> StatusCode {
        self.spec().1
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
    /// Sent as `Retry-After` (seconds) when set.
    #[serde(skip)]
    retry_after: Option<u64>,
    /// Sent as `WWW-Authenticate` with a `401`; `Bearer` when not set.
    #[serde(skip)]
    challenge: Option<&'static str>,
}

impl Problem {
    fn new(kind: Kind, detail: impl Into<String>) -> Self {
        let (slug, status, title) = kind.spec();
        Self {
            kind: format!("urn:callrelay:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            challenge: None,
        }
    }

    fn retry_after(self, after: Duration) -> Self {
        Self {
            retry_after: Some(whole_seconds(after)),
            ..self
        }
    }

    /// A fault of callrelay's own (a handler panicked): nothing about it is sent, the log has
    /// it under the request id the answer carries.
    pub fn internal() -> Self {
        Self::new(
            Kind::InternalError,
            "callrelay could not answer this request; the fault is logged under this request's X-Request-Id",
        )
    }

    /// The request, body included, took longer than `limit`.
    pub fn request_timeout(limit: Duration) -> Self {
        Self::new(
            Kind::RequestTimeout,
            format!("the request took longer than {} ms", limit.as_millis()),
        )
    }

    /// A path no route serves.
    pub fn no_such_endpoint() -> Self {
        Self::new(Kind::NotFound, "no such endpoint")
    }

    fn store_unavailable() -> Self {
        Self::new(
            Kind::StoreUnavailable,
            "the binding store cannot be reached; retry shortly",
        )
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        let seconds = whole_seconds(retry_after);
        Self::new(
            Kind::RateLimited,
            format!("slow down: retry in {seconds} s"),
        )
        .retry_after(retry_after)
    }

    /// A binding sent as something other than JSON.
    pub fn not_json() -> Self {
        Self::new(
            Kind::UnsupportedMediaType,
            "send the binding as Content-Type: application/json",
        )
    }

    /// A request body the extractor refused: over `limit` bytes, or unreadable.
    pub fn body_rejected(rejection: BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                Kind::PayloadTooLarge,
                format!("the body is larger than {limit} bytes"),
            )
        } else {
            Self::new(Kind::BadRequest, rejection.body_text())
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(&self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            let challenge = self.challenge.unwrap_or(BEARER_CHALLENGE);
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        let retry_after = self
            .retry_after
            .or((status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Whole seconds for `Retry-After`, at least one.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// How a webhook is answered: a problem document, or the delivery summary with a status.
enum WebhookAnswer {
    Problem(Problem),
    Summary(StatusCode, Summary),
}

/// A status callback's or an Event Streams delivery's answer, and the `outcome` label of
/// `callrelay_events_total` for a refusal. Refusals of the account or its credentials are
/// answered (and logged, and rate-limited) exactly as the call-notification webhook's.
pub fn event_answer(result: Result<Ingested, EventError>) -> (&'static str, Response) {
    match result {
        Ok(ingested) => ("accepted", (StatusCode::OK, Json(ingested)).into_response()),
        Err(EventError::Invalid(e)) => (
            "bad_request",
            Problem::new(Kind::InvalidEvent, e.to_string()).into_response(),
        ),
        Err(EventError::UnknownAccount(sid)) => {
            webhook_answer(Err(WebhookError::UnknownAccount(sid)))
        }
        Err(EventError::Unauthenticated(why)) => {
            webhook_answer(Err(WebhookError::Unauthenticated(why)))
        }
        Err(EventError::Store(e)) => {
            tracing::error!(error = %e, "store error while keeping events");
            ("unavailable", Problem::store_unavailable().into_response())
        }
    }
}

/// The webhook's answer and the `outcome` label of `callrelay_webhooks_total` for it.
pub fn webhook_answer(result: Result<Summary, WebhookError>) -> (&'static str, Response) {
    match result {
        Ok(summary) => {
            let outcome = if summary.duplicate {
                "duplicate"
            } else {
                "delivered"
            };
            (outcome, (StatusCode::OK, Json(summary)).into_response())
        }
        Err(e) => {
            e.log();
            let (answer, outcome) = e.answer();
            let response = match answer {
                WebhookAnswer::Problem(problem) => problem.into_response(),
                WebhookAnswer::Summary(status, summary) => (status, Json(summary)).into_response(),
            };
            (outcome, response)
        }
    }
}

/// The status and `outcome` label a webhook's result is answered with, without answering it:
/// what the call trace records.
pub fn webhook_status(result: &Result<Summary, WebhookError>) -> (u16, &'static str) {
    match result {
        Ok(summary) if summary.duplicate => (200, "duplicate"),
        Ok(_) => (200, "delivered"),
        Err(e) => {
            let (answer, outcome) = e.answer();
            let status = match answer {
                WebhookAnswer::Problem(problem) => problem.status,
                WebhookAnswer::Summary(status, _) => status.as_u16(),
            };
            (status, outcome)
        }
    }
}

/// A webhook body the extractor refused, and its `outcome` label.
pub fn webhook_body_rejected(rejection: BytesRejection, limit: usize) -> (&'static str, Response) {
    let outcome = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        "bad_request"
    };
    (
        outcome,
        Problem::body_rejected(rejection, limit).into_response(),
    )
}

impl WebhookError {
    /// The answer (its status through the problem's kind) and the `outcome` label each error
    /// is counted under, side by side.
    fn answer(&self) -> (WebhookAnswer, &'static str) {
        use WebhookAnswer::Summary;
        let problem = |kind, detail: String| WebhookAnswer::Problem(Problem::new(kind, detail));
        match self {
            WebhookError::Invalid(e) => (
                problem(Kind::InvalidNotification, e.to_string()),
                "bad_request",
            ),
            WebhookError::UnknownAccount(_) => (
                problem(
                    Kind::UnknownAccount,
                    "the notification's account is not configured on this relay".into(),
                ),
                "forbidden",
            ),
            // Twilio's first try at a webhook whose URL carries Basic credentials: the
            // challenge makes it send them.
            WebhookError::Unauthenticated(WebhookAuthError::MissingBasic) => (
                WebhookAnswer::Problem(Problem {
                    challenge: Some(BASIC_CHALLENGE),
                    ..Problem::new(
                        Kind::WebhookAuthenticationRequired,
                        "this account's webhook requires HTTP Basic credentials",
                    )
                }),
                "challenged",
            ),
            // Why is for the operator; the caller learns only that it failed.
            WebhookError::Unauthenticated(_) => (
                problem(
                    Kind::WebhookAuthenticationFailed,
                    "the request's signature or credentials did not verify".into(),
                ),
                "forbidden",
            ),
            WebhookError::NoBinding => (
                problem(
                    Kind::NoBinding,
                    "no binding matches the callee's account and identity".into(),
                ),
                "not_found",
            ),
            WebhookError::AllRemoved(s) => (Summary(StatusCode::NOT_FOUND, *s), "not_found"),
            WebhookError::AllFailed(s) => (Summary(StatusCode::BAD_GATEWAY, *s), "failed"),
            WebhookError::InProgress { retry_after } => (
                WebhookAnswer::Problem(
                    Problem::new(
                        Kind::NotificationInProgress,
                        format!(
                            "another attempt is still delivering this twi_message_id, or it stopped and its claim lapses shortly; retry in {} s",
                            whole_seconds(*retry_after)
                        ),
                    )
                    .retry_after(*retry_after),
                ),
                "in_progress",
            ),
            WebhookError::Store(_) => (
                WebhookAnswer::Problem(Problem::store_unavailable()),
                "unavailable",
            ),
        }
    }

    /// The `outcome` label of `callrelay_webhooks_total` for this error.
    pub fn metric_label(&self) -> &'static str {
        self.answer().1
    }

    /// What the operator learns of an error the caller learns little about. Only lines that
    /// would be written are counted against the throttle.
    fn log(&self) {
        match self {
            WebhookError::UnknownAccount(sid) => {
                if tracing::enabled!(tracing::Level::WARN)
                    && let Some(suppressed) =
                        throttle::auth_failures().admit("webhook_unknown_account")
                {
                    tracing::warn!(account = %sid, suppressed, "webhook for an account that is not configured");
                }
            }
            // Routine, so not a warning.
            WebhookError::Unauthenticated(WebhookAuthError::MissingBasic) => {
                if tracing::enabled!(tracing::Level::DEBUG)
                    && let Some(suppressed) =
                        throttle::auth_failures().admit(WebhookAuthError::MissingBasic.reason())
                {
                    tracing::debug!(suppressed, "webhook without Basic credentials: challenged");
                }
            }
            WebhookError::Unauthenticated(why) => {
                if tracing::enabled!(tracing::Level::WARN)
                    && let Some(suppressed) = throttle::auth_failures().admit(why.reason())
                {
                    tracing::warn!(reason = %why, suppressed, "webhook authentication failed");
                }
            }
            WebhookError::Store(e) => {
                tracing::error!(error = %e, "store error while answering a webhook");
            }
            WebhookError::Invalid(_)
            | WebhookError::NoBinding
            | WebhookError::AllRemoved(_)
            | WebhookError::AllFailed(_)
            | WebhookError::InProgress { .. } => {}
        }
    }
}

impl IntoResponse for BindingError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

impl From<BindingError> for Problem {
    fn from(e: BindingError) -> Self {
        match e {
            BindingError::Invalid(e) => Problem::new(Kind::InvalidBinding, e.to_string()),
            BindingError::BadRequest(detail) => Problem::new(Kind::BadRequest, detail),
            BindingError::Unauthenticated(why) => {
                if tracing::enabled!(tracing::Level::INFO)
                    && let Some(suppressed) = throttle::auth_failures().admit(bearer_reason(&why))
                {
                    tracing::info!(reason = %why, suppressed, "bindings API authentication failed");
                }
                Problem::new(
                    Kind::Unauthenticated,
                    "present a Twilio Access Token or an admin key as a Bearer credential",
                )
            }
            BindingError::Forbidden(detail) => Problem::new(Kind::Forbidden, detail),
            BindingError::NotFound => Problem::new(
                Kind::BindingNotFound,
                "no binding with this id for this identity",
            ),
            BindingError::TooManyBindings(limit) => Problem::new(
                Kind::TooManyBindings,
                format!("the identity already has {limit} bindings; delete unused ones first"),
            ),
            BindingError::App(detail) => Problem::new(Kind::AppNotConfigured, detail),
            BindingError::Store(e) => {
                tracing::error!(error = %e, "store error in the bindings API");
                Problem::store_unavailable()
            }
        }
    }
}

impl IntoResponse for TargetError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

impl From<TargetError> for Problem {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::Unauthenticated(why) => Problem::from(BindingError::Unauthenticated(why)),
            TargetError::AdminOnly => Problem::new(Kind::Forbidden, e.to_string()),
            TargetError::Invalid(detail) => Problem::new(Kind::BadRequest, detail),
            TargetError::UnknownAccount(_) => Problem::new(Kind::BadRequest, e.to_string()),
            TargetError::Configured(_) => Problem::new(Kind::TargetConfigured, e.to_string()),
            TargetError::NotFound(_) => Problem::new(Kind::NotFound, e.to_string()),
            TargetError::Store(e) => {
                tracing::error!(error = %e, "store error in the event targets API");
                Problem::store_unavailable()
            }
        }
    }
}

impl IntoResponse for RecordError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

impl From<RecordError> for Problem {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Forbidden(detail) => Problem::new(Kind::Forbidden, detail),
            RecordError::BadRequest(detail) => Problem::new(Kind::BadRequest, detail),
            RecordError::NotFound(detail) => Problem::new(Kind::NotFound, detail),
            RecordError::Store(e) => {
                tracing::error!(error = %e, "store error reading call traces or room ledgers");
                Problem::store_unavailable()
            }
        }
    }
}

impl IntoResponse for UpgradeError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

impl From<UpgradeError> for Problem {
    fn from(e: UpgradeError) -> Self {
        match e {
            UpgradeError::Query => Problem::new(Kind::BadRequest, "the query string is malformed"),
            UpgradeError::Unauthenticated(AuthError::Missing) => Problem::new(
                Kind::Unauthenticated,
                "present a Twilio Access Token as a Bearer credential or the access_token parameter",
            ),
            UpgradeError::Unauthenticated(why) => {
                // Anyone can cause this line, so it is rate-limited; the token (perhaps from
                // the query string) is never in it.
                if tracing::enabled!(tracing::Level::INFO)
                    && let Some(suppressed) = throttle::auth_failures().admit(bearer_reason(&why))
                {
                    tracing::info!(reason = %why, suppressed, "WebSocket authentication failed");
                }
                Problem::new(Kind::Unauthenticated, "the access token was refused")
            }
            UpgradeError::DeviceId => Problem::new(
                Kind::BadRequest,
                "device_id must be 1 to 256 bytes without control characters",
            ),
            UpgradeError::NotAnUpgrade(rejection) => Problem {
                // axum says which part of the handshake is missing, and answers `400` or `426`.
                status: rejection.status().as_u16(),
                ..Problem::new(Kind::WebsocketUpgradeRequired, rejection.body_text())
            },
            UpgradeError::Connect(e) => Problem::from(e),
            UpgradeError::AdminOnly => Problem::new(
                Kind::Forbidden,
                "the event feed is for app backends: present an admin key",
            ),
            UpgradeError::Invalid(detail) => Problem::new(Kind::BadRequest, detail),
        }
    }
}

impl From<ConnectError> for Problem {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Store(e) => {
                tracing::error!(error = %e, "cannot announce a new socket");
                Problem::store_unavailable()
            }
            e @ ConnectError::TooManyForIdentity(_) => {
                Problem::new(Kind::TooManySockets, e.to_string())
            }
            e @ ConnectError::OverCapacity(_) => {
                tracing::warn!(error = %e, "refusing a socket");
                Problem::new(
                    Kind::OverCapacity,
                    "this replica holds all the sockets it may; reconnect to another",
                )
            }
        }
    }
}

/// The throttle's reason for a refused bearer credential: one bucket per kind of failure.
fn bearer_reason(why: &AuthError) -> &'static str {
    match why {
        AuthError::Missing => "bearer_missing",
        AuthError::Scheme => "bearer_scheme",
        AuthError::UnknownAdminKey => "bearer_unknown_admin_key",
        AuthError::Token(_) => "bearer_token_refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_slug_and_a_client_or_server_error_status() {
        let mut slugs: Vec<&str> = Kind::ALL.iter().map(|k| k.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), Kind::ALL.len(), "a slug is used twice");
        for &kind in Kind::ALL {
            assert!(
                kind.status().is_client_error() || kind.status().is_server_error(),
                "{kind:?}"
            );
            assert!(
                kind.slug()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn webhook_answers_and_their_counters_agree() {
        let summary = Summary::default();
        let cases: Vec<(WebhookError, u16, &str)> = vec![
            (WebhookError::NoBinding, 404, "not_found"),
            (WebhookError::AllRemoved(summary), 404, "not_found"),
            (WebhookError::AllFailed(summary), 502, "failed"),
            (
                WebhookError::Unauthenticated(WebhookAuthError::MissingBasic),
                401,
                "challenged",
            ),
            (
                WebhookError::InProgress {
                    retry_after: Duration::from_millis(1500),
                },
                503,
                "in_progress",
            ),
        ];
        for (error, status, label) in cases {
            let (outcome, response) = webhook_answer(Err(error));
            assert_eq!((response.status().as_u16(), outcome), (status, label));
        }
    }
}
