//! `POST /v1/twilio/call-notifications`: parse, hand to the relay, answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use tokio::time::Instant;
use tracing::Instrument;

use super::AppState;
use super::problem;
use crate::auth::webhook::WebhookCredentials;
use crate::config::ServerConfig;
use crate::domain::CallNotification;
use crate::metrics::OutcomeLabels;
use crate::relay::WebhookError;

/// Twilio's notifications are a few hundred bytes; 64 KiB leaves room for large `twi_params`.
pub const MAX_BODY: usize = 64 * 1024;

pub async fn call_notification(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let (outcome, response) = answer(&state, &headers, &uri, body).await;
    state
        .metrics
        .webhooks
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    state
        .metrics
        .webhook_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: Result<Bytes, BytesRejection>,
) -> (&'static str, Response) {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => return problem::webhook_body_rejected(rejection, MAX_BODY),
    };
    let notification = match CallNotification::parse(body) {
        Ok(n) => Arc::new(n),
        Err(e) => return problem::webhook_answer(Err(e.into())),
    };
    let url = signed_url(&state.config.server, headers, uri);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let credentials = WebhookCredentials {
        url: &url,
        signature: header("x-twilio-signature"),
        signature_settings: header("x-twilio-webhooks-signature-settings"),
        authorization: header("authorization"),
        body: &notification.raw,
        params: None,
    };
    // Named for traces; a debug span, so the logs show it only at debug.
    let span = tracing::debug_span!(
        "webhook",
        account_sid = %notification.account_sid,
        identity = %notification.identity,
        twi_message_id = notification.message_id.as_deref().unwrap_or(""),
        outcome = tracing::field::Empty,
    );
    let result = state
        .relay
        .notify(notification.clone(), &credentials)
        .instrument(span.clone())
        .await;
    let _in_span = span.enter();
    match &result {
        Ok(summary) => tracing::info!(
            account = %notification.account_sid,
            identity = %notification.identity,
            message_id = notification.message_id.as_deref().unwrap_or(""),
            delivered = summary.delivered,
            failed = summary.failed,
            removed = summary.removed,
            duplicate = summary.duplicate,
            "call notification relayed"
        ),
        Err(
            e @ (WebhookError::NoBinding
            | WebhookError::AllRemoved(_)
            | WebhookError::AllFailed(_)
            | WebhookError::InProgress { .. }),
        ) => tracing::info!(
            account = %notification.account_sid,
            identity = %notification.identity,
            message_id = notification.message_id.as_deref().unwrap_or(""),
            outcome = e.metric_label(),
            "call notification not delivered"
        ),
        Err(_) => {}
    }
    let (outcome, response) = problem::webhook_answer(result);
    span.record("outcome", outcome);
    (outcome, response)
}

/// The URL Twilio signed: the configured public URL plus the path and query as received.
/// Without a public URL (configuration allows that only with `server.trust_forwarded_headers`
/// when accounts exist), the request's own `Host` and `X-Forwarded-Proto` stand in.
pub fn signed_url(server: &ServerConfig, headers: &HeaderMap, uri: &Uri) -> String {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    match &server.public_url {
        Some(base) => format!("{base}{path_and_query}"),
        None => {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let scheme = header("x-forwarded-proto")
                .filter(|p| *p == "https" || *p == "http")
                .unwrap_or("http");
            let host = header("host").unwrap_or_default();
            format!("{scheme}://{host}{path_and_query}")
        }
    }
}
