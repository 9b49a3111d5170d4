//! What every public request gets, in one middleware (each layer of its own would box and
//! poll the request once more): a request id, taken from `X-Request-Id` when it is sane and
//! made up otherwise, echoed in the answer and attached to every log line of the request; and
//! a time limit, body included, so a client trickling a body cannot hold a request open.
//! (WebSocket sessions run after their upgrade answer, outside it.)

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::problem::Problem;

pub const HEADER: &str = "x-request-id";

fn acceptable(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A new id: 16 random hex digits chosen at start-up, then a counter. Unique per process and,
/// with overwhelming odds, across replicas; no random numbers drawn per request.
fn made_up() -> String {
    static PREFIX: LazyLock<String> =
        LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_owned());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}{:016x}", *PREFIX, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `limit` is `limits.request_timeout_ms`.
pub async fn layer(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(made_up);
    // The span carries only the id: every field is formatted when the span opens, on every
    // request, whether or not anything is logged inside it.
    let span = tracing::info_span!("request", request_id = %id);
    let method = request.method().clone();
    let path = tracing::enabled!(tracing::Level::DEBUG).then(|| request.uri().path().to_owned());
    let mut response =
        match tokio::time::timeout(limit, next.run(request).instrument(span.clone())).await {
            Ok(response) => response,
            Err(_) => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "Request timeout",
                format!("the request took longer than {} ms", limit.as_millis()),
            )
            .into_response(),
        };
    if let Some(path) = path {
        span.in_scope(|| {
            tracing::debug!(%method, path, status = response.status().as_u16(), "answered");
        });
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
