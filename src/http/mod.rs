//! HTTP: the public listener (webhook, bindings API, WebSocket) and the admin listener.
//! Handlers parse and authenticate, then call the relay; they never touch the store directly
//! except `/readyz`'s ping.

mod admin;
mod bindings;
mod console;
pub mod descriptors;
mod events;
mod extract;
pub mod openapi;
mod per_request;
pub mod problem;
mod rate_limit;
mod records;
pub mod server;
mod targets;
mod webhook;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::routing::{get, post, put};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::channels::websocket::WebSocketChannel;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::store::Store;

pub use rate_limit::RateLimiter;
pub use webhook::signed_url;

/// What every handler can reach. axum clones the state for every request, so it is one
/// `Arc` rather than a struct of them.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub relay: Arc<Relay>,
    pub auth: Arc<Authenticator>,
    pub sockets: Arc<WebSocketChannel>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn Store>,
    pub limiter: Arc<RateLimiter>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

pub fn public_router(state: AppState) -> Router {
    let binding_body_limit = DefaultBodyLimit::max(state.config.limits.max_binding_bytes);
    let counted = |name| {
        let operation = bindings::Operation {
            metrics: state.metrics.clone(),
            name,
        };
        axum::middleware::map_response_with_state(operation, bindings::counted)
    };
    Router::new()
        .route(
            "/v1/twilio/call-notifications",
            post(webhook::call_notification).layer(DefaultBodyLimit::max(webhook::MAX_BODY)),
        )
        .route(
            "/v1/twilio/status-callbacks",
            post(events::status_callback_post)
                .get(events::status_callback_get)
                .layer(DefaultBodyLimit::max(events::MAX_CALLBACK_BODY)),
        )
        .route(
            "/v1/twilio/event-streams",
            post(events::event_streams)
                .layer(DefaultBodyLimit::max(events::MAX_EVENT_STREAMS_BODY)),
        )
        .route(
            "/v1/bindings",
            post(bindings::create.layer(counted("create")))
                .get(bindings::list.layer(counted("list")))
                .delete(bindings::delete_all.layer(counted("delete_all")))
                .layer(binding_body_limit),
        )
        .route(
            "/v1/bindings/{id}",
            put(bindings::replace.layer(counted("replace")))
                .get(bindings::get_one.layer(counted("get")))
                .delete(bindings::delete_one.layer(counted("delete")))
                .layer(binding_body_limit),
        )
        .route("/v1/ws", get(ws::connect))
        .route("/v1/events/ws", get(ws::events))
        .route("/v1/events/targets", get(targets::list))
        .route(
            "/v1/events/targets/{name}",
            put(targets::put)
                .delete(targets::delete)
                .layer(DefaultBodyLimit::max(16 * 1024)),
        )
        .route("/v1/events/targets/{name}/failed", get(targets::failed))
        .route("/v1/events/targets/{name}/replay", post(targets::replay))
        .route("/v1/calls", get(records::calls))
        .route("/v1/calls/{call_sid}", get(records::call))
        .route("/v1/rooms", get(records::rooms))
        .route("/v1/rooms/{room_sid}", get(records::room))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            per_request_settings(&state),
            per_request::layer,
        ))
        .with_state(state)
}

pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        // The console and what it reads, for support engineers with an admin key.
        .route("/console", get(console::page))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route(
            "/v1/console/test-notification",
            post(console::test_notification).layer(DefaultBodyLimit::max(4 * 1024)),
        )
        .route("/v1/calls", get(records::calls))
        .route("/v1/calls/{call_sid}", get(records::call))
        .route("/v1/rooms", get(records::rooms))
        .route("/v1/rooms/{room_sid}", get(records::room))
        .route("/v1/bindings", get(bindings::list))
        .layer(axum::middleware::from_fn_with_state(
            per_request_settings(&state),
            per_request::layer,
        ))
        .with_state(state)
}

fn per_request_settings(state: &AppState) -> per_request::Settings {
    per_request::Settings {
        limit: state.config.limits.request_timeout,
        panics: state.metrics.http_panics.clone(),
    }
}

async fn openapi_json() -> axum::Json<serde_json::Value> {
    axum::Json(openapi::document())
}

async fn not_found() -> problem::Problem {
    problem::Problem::no_such_endpoint()
}
