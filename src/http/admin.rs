//! The admin listener: liveness, readiness and metrics. Never exposed publicly.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready while the store answers and shutdown has not begun.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let engine = state.store.engine();
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "shutting down", "store": engine})),
        )
            .into_response();
    }
    match state.store.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ready", "store": engine})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "store unreachable", "store": engine})),
            )
                .into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
