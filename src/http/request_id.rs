//! A request id for every public request: taken from `X-Request-Id` when it is sane, made up
//! otherwise; echoed in the answer and attached to every log line of the request.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

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

pub async fn layer(request: Request, next: Next) -> Response {
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
    let mut response = next.run(request).instrument(span.clone()).await;
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
