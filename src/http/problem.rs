//! The one place where errors become HTTP answers: RFC 9457 problem documents with a stable
//! `type` per kind of client error (listed in the README). Internal causes are logged here and
//! never sent; authentication failures, which anyone can cause, through the process's log
//! throttle (`telemetry::throttle`), so that a flood of them cannot flood the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::auth::webhook::WebhookAuthError;
use crate::relay::{BindingError, Summary, WebhookError};
use crate::telemetry::throttle;

/// The challenge a `401` carries unless the problem names another.
const BEARER_CHALLENGE: &str = "Bearer";
/// What Twilio waits for before it sends the Basic credentials of the webhook URL.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"callrelay\"";

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Sent as `Retry-After` (seconds) when set.
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// Sent as `WWW-Authenticate` with a `401`; `Bearer` when not set.
    #[serde(skip)]
    pub challenge: Option<&'static str>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: format!("urn:callrelay:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            challenge: None,
        }
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            detail,
        )
    }

    /// A fault of callrelay's own (a handler panicked): nothing about it is sent, the log has
    /// it under the request id the answer carries.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "Internal error",
            "callrelay could not answer this request; the fault is logged under this request's X-Request-Id",
        )
    }

    pub fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Store unavailable",
            "the binding store cannot be reached; retry shortly",
        )
    }

    pub fn rate_limited(retry_after: std::time::Duration) -> Self {
        let seconds = whole_seconds(retry_after);
        Self {
            retry_after: Some(seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                format!("slow down: retry in {seconds} s"),
            )
        }
    }

    /// For a request body the extractor refused (too large, unreadable).
    pub fn body_rejected(status: StatusCode, detail: impl Into<String>) -> Self {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(status, "payload-too-large", "Payload too large", detail)
        } else {
            Self::new(status, "bad-request", "Bad request", detail)
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

fn summary(status: StatusCode, summary: Summary) -> Response {
    (status, Json(summary)).into_response()
}

/// Whole seconds for `Retry-After`, at least one.
fn whole_seconds(d: std::time::Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

impl WebhookError {
    /// The `outcome` label of `callrelay_webhooks_total` for this answer, beside the status
    /// it maps to below.
    pub fn metric_label(&self) -> &'static str {
        match self {
            WebhookError::Invalid(_) => "bad_request",
            WebhookError::Unauthenticated(WebhookAuthError::MissingBasic) => "challenged",
            WebhookError::UnknownAccount(_) | WebhookError::Unauthenticated(_) => "forbidden",
            WebhookError::NoBinding | WebhookError::AllRemoved(_) => "not_found",
            WebhookError::AllFailed(_) => "failed",
            WebhookError::InProgress { .. } => "in_progress",
            WebhookError::Store(_) => "unavailable",
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        match self {
            WebhookError::Invalid(e) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-notification",
                "Invalid call notification",
                e.to_string(),
            )
            .into_response(),
            WebhookError::UnknownAccount(sid) => {
                // Only lines that would be written are counted against the throttle.
                if tracing::enabled!(tracing::Level::WARN)
                    && let Some(suppressed) =
                        throttle::auth_failures().admit("webhook_unknown_account")
                {
                    tracing::warn!(account = %sid, suppressed, "webhook for an account that is not configured");
                }
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "unknown-account",
                    "Account not configured",
                    "the notification's account is not configured on this relay",
                )
                .into_response()
            }
            // Twilio's first try at a webhook whose URL carries Basic credentials: the challenge
            // makes it send them. Routine, so not a warning.
            WebhookError::Unauthenticated(WebhookAuthError::MissingBasic) => {
                if tracing::enabled!(tracing::Level::DEBUG)
                    && let Some(suppressed) =
                        throttle::auth_failures().admit(WebhookAuthError::MissingBasic.reason())
                {
                    tracing::debug!(suppressed, "webhook without Basic credentials: challenged");
                }
                Problem {
                    challenge: Some(BASIC_CHALLENGE),
                    ..Problem::new(
                        StatusCode::UNAUTHORIZED,
                        "webhook-authentication-required",
                        "Webhook authentication required",
                        "this account's webhook requires HTTP Basic credentials",
                    )
                }
                .into_response()
            }
            WebhookError::Unauthenticated(why) => {
                // Why is for the operator; the caller learns only that it failed.
                if tracing::enabled!(tracing::Level::WARN)
                    && let Some(suppressed) = throttle::auth_failures().admit(why.reason())
                {
                    tracing::warn!(reason = %why, suppressed, "webhook authentication failed");
                }
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "webhook-authentication-failed",
                    "Webhook authentication failed",
                    "the request's signature or credentials did not verify",
                )
                .into_response()
            }
            WebhookError::NoBinding => Problem::new(
                StatusCode::NOT_FOUND,
                "no-binding",
                "No binding",
                "no binding matches the callee's account and identity",
            )
            .into_response(),
            WebhookError::AllRemoved(s) => summary(StatusCode::NOT_FOUND, s),
            WebhookError::AllFailed(s) => summary(StatusCode::BAD_GATEWAY, s),
            WebhookError::InProgress { retry_after } => {
                let seconds = whole_seconds(retry_after);
                Problem {
                    retry_after: Some(seconds),
                    ..Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "notification-in-progress",
                        "Notification in progress",
                        format!(
                            "another attempt is still delivering this twi_message_id, or it stopped and its claim lapses shortly; retry in {seconds} s"
                        ),
                    )
                }
                .into_response()
            }
            WebhookError::Store(e) => {
                tracing::error!(error = %e, "store error while answering a webhook");
                Problem::store_unavailable().into_response()
            }
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
            BindingError::Invalid(e) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-binding",
                "Invalid binding",
                e.to_string(),
            ),
            BindingError::BadRequest(detail) => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Bad request",
                detail,
            ),
            BindingError::Unauthenticated(why) => {
                if tracing::enabled!(tracing::Level::INFO)
                    && let Some(suppressed) = throttle::auth_failures().admit(bearer_reason(&why))
                {
                    tracing::info!(reason = %why, suppressed, "bindings API authentication failed");
                }
                Problem::unauthenticated(
                    "present a Twilio Access Token or an admin key as a Bearer credential",
                )
            }
            BindingError::Forbidden(detail) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
            }
            BindingError::NotFound => Problem::new(
                StatusCode::NOT_FOUND,
                "binding-not-found",
                "Binding not found",
                "no binding with this id for this identity",
            ),
            BindingError::TooManyBindings(limit) => Problem::new(
                StatusCode::CONFLICT,
                "too-many-bindings",
                "Too many bindings",
                format!("the identity already has {limit} bindings; delete unused ones first"),
            ),
            BindingError::App(detail) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "app-not-configured",
                "Push app not configured",
                detail,
            ),
            BindingError::Store(e) => {
                tracing::error!(error = %e, "store error in the bindings API");
                Problem::store_unavailable()
            }
        }
    }
}

/// The throttle's reason for a refused bearer credential: one bucket per kind of failure.
pub fn bearer_reason(why: &AuthError) -> &'static str {
    match why {
        AuthError::Missing => "bearer_missing",
        AuthError::Scheme => "bearer_scheme",
        AuthError::UnknownAdminKey => "bearer_unknown_admin_key",
        AuthError::Token(_) => "bearer_token_refused",
    }
}
