//! `/console` on the admin listener: a page for support engineers (plain HTML and a little
//! JavaScript, served from the binary, nothing from the internet) and the one endpoint only it
//! needs, `POST /v1/console/test-notification`. The page holds no data: everything it shows
//! comes from the API on the same listener, each request carrying the admin key the engineer
//! typed (kept in the tab's session storage). A strict Content-Security-Policy (scripts,
//! styles and requests from this origin only, no inline code, no framing) keeps what Twilio or
//! an app put in identities and room names from ever running as code; the page also writes
//! every value as text.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::auth::Caller;
use crate::domain::{AccountSid, Identity};
use crate::relay::RecordError;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub async fn page() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

#[derive(Debug, Deserialize)]
pub struct AccountParam {
    account_sid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    identity: String,
}

pub async fn test_notification(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AccountParam>, QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Response, RecordError> {
    let Query(query) =
        query.map_err(|_| RecordError::BadRequest("the query string is malformed".into()))?;
    let account = query
        .account_sid
        .as_deref()
        .map(|a| {
            AccountSid::parse(a).map_err(|e| RecordError::BadRequest(format!("account_sid: {e}")))
        })
        .transpose()?;
    let body: TestBody = serde_json::from_slice(&body)
        .map_err(|e| RecordError::BadRequest(format!("the body: {e}")))?;
    let identity = Identity::parse(&body.identity)
        .map_err(|e| RecordError::BadRequest(format!("identity: {e}")))?;
    let answer = state
        .relay
        .send_test_notification(&caller, account, identity)
        .await?;
    Ok(Json(answer).into_response())
}
