//! What the bindings API's handlers take, as extractors: the caller, the scope it acts on, the
//! binding id in the path and the JSON binding in the body. Each rejection is a problem
//! document, so a handler's signature says what it needs and no handler repeats a preamble.
//!
//! The caller comes first in every handler: a request is authenticated and charged to its
//! rate limit before anything else about it is read.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::Deserialize;

use super::AppState;
use super::problem::Problem;
use crate::auth::Caller;
use crate::domain::{AccountSid, BindingId, BindingRequest, Identity};
use crate::relay::{BindingError, BindingScope};

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        // `Scope` asks for the caller too; it is authenticated and charged once a request.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let header = parts
            .headers
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
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// `?identity=…&account_sid=…`: who the request names (a token holder may omit both).
#[derive(Debug, Default)]
pub struct Named {
    pub account_sid: Option<AccountSid>,
    pub identity: Option<Identity>,
}

impl Named {
    pub fn into_pair(self) -> (Option<AccountSid>, Option<Identity>) {
        (self.account_sid, self.identity)
    }
}

#[derive(Deserialize)]
struct NamedParams {
    identity: Option<String>,
    account_sid: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Named {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Query(params) = Query::<NamedParams>::from_request_parts(parts, state)
            .await
            .map_err(|e| BindingError::BadRequest(e.body_text()))?;
        let bad = |name: &str, e: &dyn std::fmt::Display| {
            BindingError::BadRequest(format!("{name}: {e}"))
        };
        let account_sid = params
            .account_sid
            .map(|a| AccountSid::parse(&a).map_err(|e| bad("account_sid", &e)))
            .transpose()?;
        let identity = params
            .identity
            .map(|i| Identity::parse(&i).map_err(|e| bad("identity", &e)))
            .transpose()?;
        Ok(Self {
            account_sid,
            identity,
        })
    }
}

/// The (account, identity) the caller acts on: what the query string names, if the caller
/// may act on it.
pub struct Scope(pub BindingScope);

impl FromRequestParts<AppState> for Scope {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let named = Named::from_request_parts(parts, state).await?;
        Ok(Scope(state.relay.scope(
            &caller,
            named.account_sid,
            named.identity,
        )?))
    }
}

/// The `{id}` of `/v1/bindings/{id}`.
pub struct PathId(pub BindingId);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| BindingError::BadRequest(format!("id: {}", e.body_text())))?;
        let id =
            BindingId::parse(&raw).map_err(|e| BindingError::BadRequest(format!("id: {e}")))?;
        Ok(PathId(id))
    }
}

/// The body as a binding request: JSON only, within `limits.max_binding_bytes`.
pub struct JsonBinding(pub BindingRequest);

impl FromRequest<AppState> for JsonBinding {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Problem> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(Problem::not_json());
        }
        let limit = state.config.limits.max_binding_bytes;
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| Problem::body_rejected(rejection, limit))?;
        let request = BindingRequest::parse(&body).map_err(BindingError::from)?;
        Ok(JsonBinding(request))
    }
}
