//! `/v1/events/targets`: an account's forwarding targets, for app backends (admin keys).
//! `GET` lists them (the configuration's and the API's), `PUT /{name}` adds or replaces one,
//! `DELETE /{name}` removes one. Secrets are never shown, except a generated one, once.
//! `GET /{name}/failed` lists the events set aside after the retry budget, and
//! `POST /{name}/replay` sends them again.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::auth::Caller;
use crate::config::RawEventTarget;
use crate::domain::AccountSid;
use crate::relay::TargetError;

#[derive(Debug, Deserialize)]
pub struct AccountQuery {
    account_sid: Option<String>,
}

/// A target's settings as `PUT` takes them; the name is the path's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    url: Option<String>,
    #[serde(default)]
    types: Vec<String>,
    secret: Option<String>,
}

fn admin_account(
    caller: &Caller,
    query: Result<Query<AccountQuery>, QueryRejection>,
) -> Result<AccountSid, TargetError> {
    if !matches!(caller, Caller::Admin { .. }) {
        return Err(TargetError::AdminOnly);
    }
    let Query(query) =
        query.map_err(|_| TargetError::Invalid("the query string is malformed".into()))?;
    let sid = query
        .account_sid
        .as_deref()
        .ok_or_else(|| TargetError::Invalid("account_sid is required".into()))?;
    AccountSid::parse(sid).map_err(|e| TargetError::Invalid(format!("account_sid: {e}")))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AccountQuery>, QueryRejection>,
) -> Result<Response, TargetError> {
    let account = admin_account(&caller, query)?;
    let targets = state.relay.list_targets(&account).await?;
    Ok(Json(serde_json::json!({ "targets": targets })).into_response())
}

pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<AccountQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, TargetError> {
    let account = admin_account(&caller, query)?;
    let body: TargetBody = serde_json::from_slice(&body)
        .map_err(|e| TargetError::Invalid(format!("the body: {e}")))?;
    let raw = RawEventTarget {
        name: Some(name),
        url: body.url,
        types: body.types,
        secret: body.secret,
        secret_file: None,
    };
    let view = state.relay.put_target(&account, raw).await?;
    Ok((StatusCode::OK, Json(view)).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<AccountQuery>, QueryRejection>,
) -> Result<Response, TargetError> {
    let account = admin_account(&caller, query)?;
    state.relay.remove_target(&account, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn failed(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<AccountQuery>, QueryRejection>,
) -> Result<Response, TargetError> {
    let account = admin_account(&caller, query)?;
    let failed = state.relay.failed_forwards(&account, &name).await?;
    Ok(Json(serde_json::json!({ "failed": failed })).into_response())
}

pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<AccountQuery>, QueryRejection>,
) -> Result<Response, TargetError> {
    let account = admin_account(&caller, query)?;
    let queued = state.relay.replay_failed(&account, &name).await?;
    Ok(Json(serde_json::json!({ "replaying": queued })).into_response())
}
