//! Twilio's other webhooks: `POST`/`GET /v1/twilio/status-callbacks` (form parameters) and
//! `POST /v1/twilio/event-streams` (a JSON array of CloudEvents). Parse, hand to the relay to
//! authenticate and keep, answer.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;

use super::AppState;
use super::problem;
use super::webhook::signed_url;
use crate::auth::webhook::WebhookCredentials;
use crate::domain::{AccountSid, CloudEvent, InvalidEvent, StatusCallback};
use crate::metrics::EventLabels;
use crate::relay::{EventError, Ingested};

/// Status callbacks are a few hundred bytes; an Event Streams batch may hold several events.
pub const MAX_CALLBACK_BODY: usize = 64 * 1024;
pub const MAX_EVENT_STREAMS_BODY: usize = 1024 * 1024;

pub async fn status_callback_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let (outcome, response) = problem::webhook_body_rejected(rejection, MAX_CALLBACK_BODY);
            count(&state, CALLBACK, outcome, 1);
            return response;
        }
    };
    let params = StatusCallback::decode(&body);
    keep_callback(&state, &headers, &uri, params, Some(&body)).await
}

pub async fn status_callback_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let params = StatusCallback::decode(uri.query().unwrap_or_default().as_bytes());
    keep_callback(&state, &headers, &uri, params, None).await
}

const CALLBACK: &str = "status_callback";
const STREAMS: &str = "event_streams";

/// `body`: a `POST`'s, whose parameters the signature covers; `None` for a `GET`, whose
/// parameters are in the signed URL.
async fn keep_callback(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    params: Result<Vec<(String, String)>, InvalidEvent>,
    body: Option<&Bytes>,
) -> Response {
    let callback = match params.and_then(StatusCallback::parse) {
        Ok(callback) => callback,
        Err(e) => return answer(state, CALLBACK, Err(e.into())),
    };
    let url = signed_url(&state.config.server, headers, uri);
    let signed: &[(String, String)] = if body.is_some() {
        &callback.params
    } else {
        &[]
    };
    let credentials = credentials(
        headers,
        &url,
        body.map_or(&[][..], |b| b.as_ref()),
        Some(signed),
    );
    let result = state
        .relay
        .keep_status_callback(&callback, &credentials)
        .await;
    answer(state, CALLBACK, result)
}

pub async fn event_streams(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let (outcome, response) =
                problem::webhook_body_rejected(rejection, MAX_EVENT_STREAMS_BODY);
            count(&state, STREAMS, outcome, 1);
            return response;
        }
    };
    let parsed =
        CloudEvent::parse_batch(&body).and_then(|events| Ok((events, named_account(&uri)?)));
    let (events, named) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return answer(&state, STREAMS, Err(e.into())),
    };
    let url = signed_url(&state.config.server, &headers, &uri);
    // Signed like a call notification: `bodySHA256` in the URL.
    let credentials = credentials(&headers, &url, &body, None);
    let result = state
        .relay
        .keep_event_streams(&events, named, &credentials)
        .await;
    answer(&state, STREAMS, result)
}

/// `?AccountSid=AC…` in the sink's URL, when the operator put it there.
fn named_account(uri: &Uri) -> Result<Option<AccountSid>, InvalidEvent> {
    let query = uri.query().unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "AccountSid")
        .map(|(_, v)| AccountSid::parse(&v).map_err(|e| InvalidEvent::AccountSid(e.to_string())))
        .transpose()
}

fn credentials<'a>(
    headers: &'a HeaderMap,
    url: &'a str,
    body: &'a [u8],
    params: Option<&'a [(String, String)]>,
) -> WebhookCredentials<'a> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    WebhookCredentials {
        url,
        signature: header("x-twilio-signature"),
        signature_settings: header("x-twilio-webhooks-signature-settings"),
        authorization: header("authorization"),
        body,
        params,
    }
}

/// The answer, counted in `callrelay_events_total`: kept events by what became of each, a
/// refused request once.
fn answer(
    state: &AppState,
    source: &'static str,
    result: Result<Ingested, EventError>,
) -> Response {
    if let Ok(ingested) = &result {
        count(state, source, "accepted", ingested.accepted);
        count(state, source, "duplicate", ingested.duplicates);
    }
    let (outcome, response) = problem::event_answer(result);
    if outcome != "accepted" {
        count(state, source, outcome, 1);
    }
    response
}

fn count(state: &AppState, source: &'static str, outcome: &'static str, n: usize) {
    state
        .metrics
        .events
        .get_or_create(&EventLabels { source, outcome })
        .inc_by(n as u64);
}
