//! `/v1/calls` (the per-call delivery trace) and `/v1/rooms` (the room ledger), on both
//! listeners. A call is read by an admin key (naming `account_sid`) or by an access token for
//! its own identity's calls; ledgers by admin keys. Rooms are also CSV (`Accept: text/csv`),
//! one row per participant, for the accounting spreadsheet.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::AppState;
use crate::auth::Caller;
use crate::domain::ledger::{self, RoomObject, RoomStatus};
use crate::domain::{AccountSid, CallSid, Identity, RoomSid};
use crate::relay::{MAX_CALLS_LISTED, MAX_ROOMS_LISTED, RecordError, RoomQuery, RoomView};

/// Calls listed when `limit` is not given.
const DEFAULT_CALLS: usize = 50;
/// Rooms listed when `limit` is not given.
const DEFAULT_ROOMS: usize = 100;

#[derive(Debug, Default, Deserialize)]
pub struct RecordParams {
    account_sid: Option<String>,
    identity: Option<String>,
    since: Option<String>,
    from: Option<String>,
    to: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

fn params(query: Result<Query<RecordParams>, QueryRejection>) -> Result<RecordParams, RecordError> {
    query
        .map(|Query(p)| p)
        .map_err(|_| RecordError::BadRequest("the query string is malformed".into()))
}

fn account(params: &RecordParams) -> Result<Option<AccountSid>, RecordError> {
    params
        .account_sid
        .as_deref()
        .map(|a| {
            AccountSid::parse(a).map_err(|e| RecordError::BadRequest(format!("account_sid: {e}")))
        })
        .transpose()
}

/// `limit`, when given, within `1..=max`.
fn limit(params: &RecordParams, default: usize, max: usize) -> Result<usize, RecordError> {
    match params.limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(RecordError::BadRequest(format!(
            "limit must be between 1 and {max}"
        ))),
    }
}

fn instant(name: &str, text: Option<&str>) -> Result<Option<OffsetDateTime>, RecordError> {
    text.map(|t| {
        OffsetDateTime::parse(t, &Rfc3339).map_err(|_| {
            RecordError::BadRequest(format!(
                "{name} must be an RFC 3339 time such as 2026-12-01T00:00:00Z"
            ))
        })
    })
    .transpose()
}

pub async fn call(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_sid): Path<String>,
    query: Result<Query<RecordParams>, QueryRejection>,
) -> Result<Response, RecordError> {
    let params = params(query)?;
    let call_sid = CallSid::parse(&call_sid).map_err(|e| RecordError::BadRequest(e.to_string()))?;
    let trace = state
        .relay
        .call_trace(&caller, account(&params)?, &call_sid)
        .await?;
    Ok(Json(trace).into_response())
}

pub async fn calls(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RecordParams>, QueryRejection>,
) -> Result<Response, RecordError> {
    let params = params(query)?;
    let identity = params
        .identity
        .as_deref()
        .map(|i| Identity::parse(i).map_err(|e| RecordError::BadRequest(format!("identity: {e}"))))
        .transpose()?;
    let since = instant("since", params.since.as_deref())?
        .unwrap_or_else(|| OffsetDateTime::now_utc() - state.config.calls.retention);
    let calls = state
        .relay
        .recent_calls(
            &caller,
            account(&params)?,
            identity,
            since,
            limit(&params, DEFAULT_CALLS, MAX_CALLS_LISTED)?,
        )
        .await?;
    Ok(Json(serde_json::json!({ "calls": calls })).into_response())
}

/// Whether the client asked for CSV rather than JSON.
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with("text/csv")))
}

fn csv(views: &[RoomView], name: &str) -> Response {
    let mut out = String::from(ledger::csv_header());
    for view in views {
        ledger::csv_rows(
            view.account_sid.as_str(),
            view.room_sid.as_str(),
            &view.ledger,
            &mut out,
        );
    }
    let mut response = out.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.csv\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    response
}

#[derive(Serialize)]
struct RoomList<'a> {
    rooms: Vec<RoomObject<'a>>,
    /// Where the next page starts; null on the last page.
    next_offset: Option<usize>,
}

/// This request's path and query with `offset` set to `next`.
fn next_page(uri: &Uri, next: usize) -> String {
    let kept = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(k, _)| k != "offset")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect::<Vec<_>>();
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(kept)
        .append_pair("offset", &next.to_string())
        .finish();
    format!("{}?{query}", uri.path())
}

fn object(view: &RoomView) -> RoomObject<'_> {
    RoomObject {
        account_sid: view.account_sid.as_str(),
        room_sid: view.room_sid.as_str(),
        ledger: &view.ledger,
    }
}

pub async fn room(
    State(state): State<AppState>,
    caller: Caller,
    Path(room_sid): Path<String>,
    headers: HeaderMap,
    query: Result<Query<RecordParams>, QueryRejection>,
) -> Result<Response, RecordError> {
    let params = params(query)?;
    let room_sid = RoomSid::parse(&room_sid).map_err(|e| RecordError::BadRequest(e.to_string()))?;
    let view = state
        .relay
        .room(&caller, account(&params)?, &room_sid)
        .await?;
    if wants_csv(&headers) {
        return Ok(csv(std::slice::from_ref(&view), view.room_sid.as_str()));
    }
    Ok(Json(object(&view)).into_response())
}

pub async fn rooms(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<RecordParams>, QueryRejection>,
) -> Result<Response, RecordError> {
    let params = params(query)?;
    let status = match params.status.as_deref() {
        None => None,
        Some("in-progress") => Some(RoomStatus::InProgress),
        Some("ended") => Some(RoomStatus::Ended),
        Some(_) => {
            return Err(RecordError::BadRequest(
                "status must be in-progress or ended".into(),
            ));
        }
    };
    let to = instant("to", params.to.as_deref())?.unwrap_or_else(OffsetDateTime::now_utc);
    let from =
        instant("from", params.from.as_deref())?.unwrap_or_else(|| to - time::Duration::days(31));
    let page = state
        .relay
        .rooms(
            &caller,
            account(&params)?,
            RoomQuery {
                from,
                to,
                status,
                limit: limit(&params, DEFAULT_ROOMS, MAX_ROOMS_LISTED)?,
                offset: params.offset.unwrap_or(0),
            },
        )
        .await?;
    let mut response = if wants_csv(&headers) {
        csv(&page.rooms, "rooms")
    } else {
        Json(RoomList {
            rooms: page.rooms.iter().map(object).collect(),
            next_offset: page.next_offset,
        })
        .into_response()
    };
    // The next page, as a link for CSV clients (and JSON ones that prefer headers).
    if let Some(next) = page.next_offset
        && let Ok(link) =
            HeaderValue::from_str(&format!("<{}>; rel=\"next\"", next_page(&uri, next)))
    {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}
