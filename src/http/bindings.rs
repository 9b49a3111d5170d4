//! The bindings API: `/v1/bindings` and `/v1/bindings/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;

use super::AppState;
use super::extract::{JsonBinding, Named, PathId, Scope};
use super::problem::Problem;
use crate::auth::Caller;
use crate::domain::SocketPresence;
use crate::domain::{AccountSid, Binding, Identity};
use crate::metrics::{BindingOpLabels, Metrics};

#[derive(Serialize)]
struct SocketView<'a> {
    id: &'a str,
    account_sid: &'a AccountSid,
    identity: &'a Identity,
    channel: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<&'a str>,
    #[serde(with = "time::serde::rfc3339")]
    connected_at: OffsetDateTime,
}

impl<'a> From<&'a SocketPresence> for SocketView<'a> {
    fn from(p: &'a SocketPresence) -> Self {
        Self {
            id: &p.conn_id,
            account_sid: &p.account_sid,
            identity: &p.identity,
            channel: "websocket",
            device_id: p.device_id.as_deref(),
            connected_at: p.connected_at,
        }
    }
}

#[derive(Serialize)]
struct ListView<'a> {
    bindings: &'a [Binding],
    sockets: Vec<SocketView<'a>>,
}

/// One operation of the bindings API, for `callrelay_binding_requests_total`.
#[derive(Clone)]
pub struct Operation {
    pub metrics: Arc<Metrics>,
    pub name: &'static str,
}

/// Counts every answer of an operation, the extractors' refusals included; layered around
/// each handler by the router.
pub async fn counted(State(operation): State<Operation>, response: Response) -> Response {
    operation
        .metrics
        .binding_requests
        .get_or_create(&BindingOpLabels {
            operation: operation.name,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

fn created(binding: &Binding) -> Response {
    let mut response = (StatusCode::CREATED, Json(binding)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/bindings/{}", binding.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    named: Named,
    JsonBinding(request): JsonBinding,
) -> Result<Response, Problem> {
    let (binding, _) = state
        .relay
        .register(&caller, None, request, named.into_pair())
        .await?;
    Ok(created(&binding))
}

pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    named: Named,
    JsonBinding(request): JsonBinding,
) -> Result<Response, Problem> {
    let (binding, is_new) = state
        .relay
        .register(&caller, Some(id), request, named.into_pair())
        .await?;
    Ok(if is_new {
        created(&binding)
    } else {
        Json(binding).into_response()
    })
}

pub async fn get_one(
    State(state): State<AppState>,
    _: Caller,
    PathId(id): PathId,
    Scope(scope): Scope,
) -> Result<Json<Binding>, Problem> {
    Ok(Json(state.relay.binding(&scope, &id).await?))
}

pub async fn delete_one(
    State(state): State<AppState>,
    _: Caller,
    PathId(id): PathId,
    Scope(scope): Scope,
) -> Result<StatusCode, Problem> {
    state.relay.remove(&scope, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list(State(state): State<AppState>, Scope(scope): Scope) -> Result<Response, Problem> {
    let listing = state.relay.listing(&scope).await?;
    let view = ListView {
        bindings: &listing.bindings,
        sockets: listing.sockets.iter().map(SocketView::from).collect(),
    };
    Ok(Json(view).into_response())
}

pub async fn delete_all(
    State(state): State<AppState>,
    Scope(scope): Scope,
) -> Result<Json<serde_json::Value>, Problem> {
    let deleted = state.relay.remove_all(&scope).await?;
    Ok(Json(serde_json::json!({ "deleted": deleted })))
}
