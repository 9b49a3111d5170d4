//! The bindings API: `/v1/bindings` and `/v1/bindings/{id}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::AppState;
use super::problem::Problem;
use crate::auth::Caller;
use crate::domain::{AccountSid, Binding, BindingId, BindingRequest, Identity};
use crate::metrics::BindingOpLabels;
use crate::relay::{BindingError, BindingScope};
use crate::store::SocketPresence;

/// `?identity=…&account_sid=…`: who the request is about (a token holder may omit both).
#[derive(Debug, Default, Deserialize)]
pub struct ScopeParams {
    identity: Option<String>,
    account_sid: Option<String>,
}

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

fn record(state: &AppState, operation: &'static str, response: Response) -> Response {
    state
        .metrics
        .binding_requests
        .get_or_create(&BindingOpLabels {
            operation,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

fn respond(result: Result<Response, Problem>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Authenticates the caller, then charges the request to its rate limit.
fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, Problem> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = state
        .auth
        .authorization_header(header)
        .map_err(BindingError::from)?;
    state
        .limiter
        .check(&caller.rate_key())
        .map_err(Problem::rate_limited)?;
    Ok(caller)
}

fn scope(
    state: &AppState,
    caller: &Caller,
    params: Result<Query<ScopeParams>, QueryRejection>,
) -> Result<BindingScope, BindingError> {
    let (account_sid, identity) = scope_params(params)?;
    state.relay.scope(caller, account_sid, identity)
}

/// The `account_sid` and `identity` query parameters, parsed.
fn scope_params(
    params: Result<Query<ScopeParams>, QueryRejection>,
) -> Result<(Option<AccountSid>, Option<Identity>), BindingError> {
    let Query(params) = params.map_err(|e| BindingError::BadRequest(e.body_text()))?;
    let account_sid = params
        .account_sid
        .map(|a| {
            AccountSid::parse(&a).map_err(|e| BindingError::BadRequest(format!("account_sid: {e}")))
        })
        .transpose()?;
    let identity = params
        .identity
        .map(|i| {
            Identity::parse(&i).map_err(|e| BindingError::BadRequest(format!("identity: {e}")))
        })
        .transpose()?;
    Ok((account_sid, identity))
}

fn binding_id(raw: &str) -> Result<BindingId, BindingError> {
    BindingId::parse(raw).map_err(|e| BindingError::BadRequest(format!("id: {e}")))
}

/// The body as a binding request: JSON only, within the size limit.
fn request_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<BindingRequest, Problem> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Problem::not_json());
    }
    let body = body.map_err(|rejection| {
        Problem::body_rejected(rejection, state.config.limits.max_binding_bytes)
    })?;
    BindingRequest::parse(&body).map_err(|e| BindingError::from(e).into())
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
    headers: HeaderMap,
    params: Result<Query<ScopeParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let caller = caller(&state, &headers)?;
        let named = scope_params(params)?;
        let request = request_body(&state, &headers, body)?;
        let (binding, _) = state.relay.register(&caller, None, request, named).await?;
        Ok(created(&binding))
    }
    .await;
    record(&state, "create", respond(result))
}

pub async fn replace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<ScopeParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let caller = caller(&state, &headers)?;
        let id = binding_id(&id)?;
        let named = scope_params(params)?;
        let request = request_body(&state, &headers, body)?;
        let (binding, is_new) = state
            .relay
            .register(&caller, Some(id), request, named)
            .await?;
        Ok(if is_new {
            created(&binding)
        } else {
            (StatusCode::OK, Json(binding)).into_response()
        })
    }
    .await;
    record(&state, "replace", respond(result))
}

pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<ScopeParams>, QueryRejection>,
) -> Response {
    let result = async {
        let caller = caller(&state, &headers)?;
        let id = binding_id(&id).map_err(Problem::from)?;
        let scope = scope(&state, &caller, params).map_err(Problem::from)?;
        let binding = state
            .relay
            .binding(&scope, &id)
            .await
            .map_err(Problem::from)?;
        Ok(Json(binding).into_response())
    }
    .await;
    record(&state, "get", respond(result))
}

pub async fn delete_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<ScopeParams>, QueryRejection>,
) -> Response {
    let result = async {
        let caller = caller(&state, &headers)?;
        let id = binding_id(&id).map_err(Problem::from)?;
        let scope = scope(&state, &caller, params).map_err(Problem::from)?;
        state
            .relay
            .remove(&scope, &id)
            .await
            .map_err(Problem::from)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    record(&state, "delete", respond(result))
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ScopeParams>, QueryRejection>,
) -> Response {
    let result = async {
        let caller = caller(&state, &headers)?;
        let scope = scope(&state, &caller, params).map_err(Problem::from)?;
        let listing = state.relay.listing(&scope).await.map_err(Problem::from)?;
        let view = ListView {
            bindings: &listing.bindings,
            sockets: listing.sockets.iter().map(SocketView::from).collect(),
        };
        Ok(Json(view).into_response())
    }
    .await;
    record(&state, "list", respond(result))
}

pub async fn delete_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ScopeParams>, QueryRejection>,
) -> Response {
    let result = async {
        let caller = caller(&state, &headers)?;
        let scope = scope(&state, &caller, params).map_err(Problem::from)?;
        let deleted = state
            .relay
            .remove_all(&scope)
            .await
            .map_err(Problem::from)?;
        Ok(Json(serde_json::json!({ "deleted": deleted })).into_response())
    }
    .await;
    record(&state, "delete_all", respond(result))
}
