//! `GET /v1/ws`: authenticate a Twilio Access Token, register the socket as a live binding,
//! then run the session until either side ends it. `GET /v1/events/ws`: an app backend's live
//! feed of one account's events (`feed.rs`).

mod ack;
mod feed;
mod session;
#[cfg(test)]
mod test_socket;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::auth::AuthError;
use crate::channels::websocket::{ConnectError, LocalSocket};
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
    /// `1`: the client acknowledges what it receives.
    ack: Option<String>,
    /// Unix milliseconds: replay the call notifications received since, within the ringing
    /// window.
    replay_since: Option<String>,
}

/// Why an upgrade was refused; `http::problem` answers each.
#[derive(Debug)]
pub enum UpgradeError {
    /// The query string could not be read.
    Query,
    Unauthenticated(AuthError),
    DeviceId,
    NotAnUpgrade(WebSocketUpgradeRejection),
    Connect(ConnectError),
    /// The event feed is for app backends: an admin key, not an access token.
    AdminOnly,
    /// A feed parameter that cannot be used; the text says which and why.
    Invalid(String),
}

pub async fn connect(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<WsParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match accept(state, headers, params, upgrade).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn accept(
    state: AppState,
    headers: HeaderMap,
    params: Result<Query<WsParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, UpgradeError> {
    let Query(params) = params.map_err(|_| UpgradeError::Query)?;
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let verified = state
        .auth
        .socket_token(header, params.access_token.as_deref())
        .map_err(UpgradeError::Unauthenticated)?;
    if let Some(device_id) = &params.device_id
        && !valid_device_id(device_id)
    {
        return Err(UpgradeError::DeviceId);
    }
    let takes_acks = match params.ack.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(UpgradeError::Invalid("ack must be 1 or 0".into())),
    };
    let replay_since = params
        .replay_since
        .as_deref()
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| UpgradeError::Invalid("replay_since must be Unix milliseconds".into()))
        })
        .transpose()?;
    let upgrade = upgrade.map_err(UpgradeError::NotAnUpgrade)?;
    let (lease, queue) = state
        .sockets
        .connect(
            verified.account_sid,
            verified.identity,
            params.device_id,
            takes_acks,
        )
        .await
        .map_err(UpgradeError::Connect)?;
    if let Some(since) = replay_since {
        replay_missed(&state, &lease.socket, since).await;
    }

    // The socket lives as long as its token is accepted, then closes with 4001.
    let settings = session::Settings {
        ping_interval: state.config.websocket.ping_interval,
        expires: tokio::time::Instant::now() + verified.valid_for,
        ringing_window: state.config.websocket.ringing_window,
    };
    let events = ack::SocketEvents {
        socket: lease.socket.clone(),
        channel: state.sockets.clone(),
        relay: state.relay.clone(),
        metrics: state.metrics.clone(),
        ringing_window: settings.ringing_window,
        node: state.sockets.node().to_owned(),
    };
    let shutdown = state.shutdown.clone();
    let metrics = state.metrics.clone();
    let tasks = state.tasks.clone();
    Ok(sized(upgrade, state.config.limits.max_client_message_bytes).on_upgrade(move |socket| {
            // Tracked, so that shutdown waits for the close frame to go out.
            tasks.track_future(async move {
                metrics.live_sockets.inc();
                tracing::debug!(conn_id = lease.socket.conn_id, identity = %lease.socket.identity, "socket open");
                let end = session::run(socket, queue, settings, &events, shutdown).await;
                tracing::debug!(conn_id = lease.socket.conn_id, ?end, "socket closed");
                metrics.live_sockets.dec();
                drop(lease);
            })
        }))
}

/// Queues to a newly registered socket the call notifications its identity received since
/// `since` (Unix ms) and within the ringing window. Registered first, so a notification
/// arriving meanwhile is delivered live if it is not in the replay; one that is both is sent
/// once (same message id).
/// When the store cannot say, the socket opens without the replay (and the log says so).
async fn replay_missed(state: &AppState, socket: &LocalSocket, since: i64) {
    if !state.config.websocket.replay {
        return;
    }
    // Copies are written off the webhooks' path, a few milliseconds after they arrive: wait
    // for those queued before this socket registered, so a notification that found no socket
    // a moment ago is in the replay.
    state.relay.flush_records().await;
    let kept = match state
        .store
        .ringing(&socket.account_sid, &socket.identity)
        .await
    {
        Ok(kept) => kept,
        Err(e) => {
            tracing::warn!(conn_id = socket.conn_id, error = %e, "could not read the call notifications to replay");
            return;
        }
    };
    let now = crate::store::unix_ms(time::OffsetDateTime::now_utc());
    let missed =
        crate::domain::ringing::missed(&kept, since, now, state.config.websocket.ringing_window);
    if !missed.is_empty() {
        let queued = state.sockets.replay(&socket.conn_id, missed);
        tracing::debug!(
            conn_id = socket.conn_id,
            queued,
            "replayed missed call notifications"
        );
    }
}

/// The buffers and limits every socket of the public listener gets: clients have nothing to
/// say beyond pongs (anything larger than `max_client_message` is refused), and frames are
/// written at once rather than gathered.
fn sized(upgrade: WebSocketUpgrade, max_client_message: usize) -> WebSocketUpgrade {
    upgrade
        .max_message_size(max_client_message)
        .max_frame_size(max_client_message)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
}

#[derive(Debug, Default, Deserialize)]
pub struct FeedParams {
    account_sid: Option<String>,
    /// Comma-separated event types; `*` matches any run of characters.
    types: Option<String>,
    resource: Option<String>,
    /// The position of the last event the subscriber saw.
    after: Option<String>,
}

pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<FeedParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match accept_feed(state, headers, params, upgrade) {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn accept_feed(
    state: AppState,
    headers: HeaderMap,
    params: Result<Query<FeedParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, UpgradeError> {
    let Query(params) = params.map_err(|_| UpgradeError::Query)?;
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state
        .auth
        .authorization_header(header)
        .map_err(UpgradeError::Unauthenticated)?
    {
        crate::auth::Caller::Admin { .. } => {}
        crate::auth::Caller::Client { .. } => return Err(UpgradeError::AdminOnly),
    }
    let account = params
        .account_sid
        .as_deref()
        .ok_or_else(|| UpgradeError::Invalid("account_sid is required".into()))
        .and_then(|sid| {
            crate::domain::AccountSid::parse(sid)
                .map_err(|e| UpgradeError::Invalid(format!("account_sid: {e}")))
        })?;
    if state.config.account(&account).is_none() {
        return Err(UpgradeError::Invalid(format!(
            "account {account} is not configured on this relay"
        )));
    }
    if let Some(after) = &params.after
        && !feed::valid_position(after)
    {
        return Err(UpgradeError::Invalid(
            "after must be a position as feed frames give it (<milliseconds>-<sequence>)".into(),
        ));
    }
    let filter = feed::Filter {
        types: params
            .types
            .iter()
            .flat_map(|t| t.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        resource: params.resource.filter(|r| !r.is_empty()),
    };
    let upgrade = upgrade.map_err(UpgradeError::NotAnUpgrade)?;
    let slot = state.sockets.slot().map_err(UpgradeError::Connect)?;
    let feed = feed::Feed {
        log: state.relay.clone(),
        account,
        filter,
        after: params.after,
        ping_interval: state.config.websocket.ping_interval,
        kept: state.relay.events_kept(),
    };
    let shutdown = state.shutdown.clone();
    let metrics = state.metrics.clone();
    let tasks = state.tasks.clone();
    Ok(
        sized(upgrade, state.config.limits.max_client_message_bytes).on_upgrade(move |socket| {
            tasks.track_future(async move {
                metrics.event_subscribers.inc();
                let end = feed.run(socket, shutdown).await;
                tracing::debug!(?end, "event feed closed");
                metrics.event_subscribers.dec();
                drop(slot);
            })
        }),
    )
}
