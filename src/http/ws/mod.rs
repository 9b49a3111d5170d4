//! `GET /v1/ws`: authenticate a Twilio Access Token, register the socket as a live binding,
//! then run the session until either side ends it.

mod session;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::problem::{self, Problem};
use crate::channels::websocket::ConnectError;
use crate::domain::valid_device_id;

/// tungstenite zero-fills its whole read buffer before the first read, so every idle socket
/// keeps this much resident; clients only send pongs (a larger message grows the buffer to
/// fit, up to `limits.max_client_message_bytes`).
const READ_BUFFER: usize = 512;
/// Outgoing frames are bounded by the webhook's body limit times the queue length.
const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
pub struct WsParams {
    access_token: Option<String>,
    device_id: Option<String>,
}

pub async fn connect(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<WsParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return Problem::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            "the query string is malformed",
        )
        .into_response();
    };
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let Some(token) = from_header.or(params.access_token) else {
        return Problem::unauthenticated(
            "present a Twilio Access Token as a Bearer credential or the access_token parameter",
        )
        .into_response();
    };
    let verified = match state.auth.access_token(&token) {
        Ok(v) => v,
        Err(e) => {
            // Anyone can cause this line, so it is rate-limited; the token (perhaps from the
            // query string) is never in it.
            if tracing::enabled!(tracing::Level::INFO)
                && let Some(suppressed) =
                    crate::telemetry::throttle::auth_failures().admit(problem::bearer_reason(&e))
            {
                tracing::info!(reason = %e, suppressed, "WebSocket authentication failed");
            }
            return Problem::unauthenticated("the access token was refused").into_response();
        }
    };
    if let Some(device_id) = &params.device_id
        && !valid_device_id(device_id)
    {
        return Problem::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            "device_id must be 1 to 256 bytes without control characters",
        )
        .into_response();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return Problem::new(
                rejection.status(),
                "websocket-upgrade-required",
                "WebSocket upgrade required",
                rejection.body_text(),
            )
            .into_response();
        }
    };
    let (lease, queue) = match state
        .sockets
        .connect(verified.account_sid, verified.identity, params.device_id)
        .await
    {
        Ok(registered) => registered,
        Err(ConnectError::Store(e)) => {
            tracing::error!(error = %e, "cannot announce a new socket");
            return Problem::store_unavailable().into_response();
        }
        Err(e @ ConnectError::TooManyForIdentity(_)) => {
            return Problem::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too-many-sockets",
                "Too many sockets",
                e.to_string(),
            )
            .into_response();
        }
        Err(e @ ConnectError::OverCapacity(_)) => {
            tracing::warn!(error = %e, "refusing a socket");
            return Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "over-capacity",
                "Over capacity",
                "this replica holds all the sockets it may; reconnect to another",
            )
            .into_response();
        }
    };

    // The socket lives as long as its token is accepted, then closes with 4001.
    let expires = tokio::time::Instant::now() + verified.valid_for;
    let ping_interval = state.config.websocket.ping_interval;
    let shutdown = state.shutdown.clone();
    let metrics = state.metrics.clone();
    let tasks = state.tasks.clone();
    // Clients have nothing to say beyond pongs; anything larger than the limit is refused.
    let max_client_message = state.config.limits.max_client_message_bytes;
    upgrade
        .max_message_size(max_client_message)
        .max_frame_size(max_client_message)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| {
            // Tracked, so that shutdown waits for the close frame to go out.
            tasks.track_future(async move {
                metrics.live_sockets.inc();
                tracing::debug!(conn_id = lease.socket.conn_id, identity = %lease.socket.identity, "socket open");
                let end = session::run(socket, queue, ping_interval, expires, shutdown).await;
                tracing::debug!(conn_id = lease.socket.conn_id, ?end, "socket closed");
                metrics.live_sockets.dec();
                drop(lease);
            })
        })
}
