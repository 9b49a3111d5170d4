//! Call notifications as Twilio sends them: realistic bodies with a unique `twi_message_id`
//! each, signed with the `bodySHA256` scheme. Built before a run starts, so that signing is
//! not part of what is measured.

use bytes::Bytes;
use callrelay::auth::signature::{self, SignatureAlgorithm};

use crate::client;
use crate::procs::{ACCOUNT, AUTH_TOKEN};

pub const PATH: &str = "/v1/twilio/call-notifications";

/// One ready-to-send webhook request, as bytes on the wire.
pub struct Webhook {
    pub wire: Bytes,
}

/// The message id of request `index` of run `run`: `MB` and 32 hex digits, like Twilio's.
pub fn message_id(run: u32, index: u64) -> String {
    format!("MB{run:08x}{index:024x}")
}

/// Finds `(run, index)` in a delivered frame; the frame is the unmodified payload.
pub fn parse_message_id(frame: &[u8]) -> Option<(u32, u64)> {
    const KEY: &[u8] = br#""twi_message_id":"MB"#;
    let start = frame.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let hex = std::str::from_utf8(frame.get(start..start + 32)?).ok()?;
    Some((
        u32::from_str_radix(&hex[..8], 16).ok()?,
        u64::from_str_radix(&hex[8..], 16).ok()?,
    ))
}

/// The body Twilio sends for a call to `client:<identity>`; about 700 bytes, most of it the
/// bridge token, as in real notifications. Each is a call of its own: its `twi_call_sid`, like
/// its message id, is unique to the run and the index, so the call trace records a new call
/// for every webhook, as it would in production.
pub fn body(identity: &str, run: u32, index: u64) -> Vec<u8> {
    let id = message_id(run, index);
    let bridge_token = "eyJ6aXAiOiJERUYiLCJraWQiOiJKd2VTM0JpZi1QcmN1Q0VfS3FDY1ROdDVONEUiLCJjdHkiOiJ0d2lsaW8tcGdrO3Y9MSIsImFsZyI6IkVDREgtRVMrQTI1NktXIn0.nGFm3yn0m-7iyZ6QIaSc3A7C2l95jxrQ5B8HqMw1Z9q5vB6Tq3bE_W7oxk2cPzEvbmL3wdVb9IfKa7nYtfbRZzA.5eGc8x0aCRd4GShm.bmv7nSe2TfWr8MCiTq2hN5XQqYlpvRB3ghAXUMfZuzVEt1w9fLz9qVUS0nW3PMBlwNO9nyZfRxHyRtK8mOzJ2Yk1QRc4aaZlI8pOF0x3TDk7xHK4Dj8";
    format!(
        concat!(
            r#"{{"twi_account_sid":"{account}","twi_bridge_token":"{bridge}","#,
            r#""twi_call_sid":"CA{run:08x}{index:024x}","twi_from":"client:alice","#,
            r#""twi_message_id":"{id}","twi_message_type":"twilio.voice.call","#,
            r#""twi_params":"reason=benchmark&ring=1","twi_to":"client:{identity}"}}"#
        ),
        account = ACCOUNT,
        bridge = bridge_token,
        run = run,
        index = index,
        id = id,
        identity = identity,
    )
    .into_bytes()
}

/// Signs a webhook for `base` (`http://host:port`, the public URL of the replica it is sent
/// to), as Twilio does for JSON bodies.
pub fn signed(base: &str, body: Vec<u8>) -> Webhook {
    let path_and_query = format!("{PATH}?bodySHA256={}", signature::body_sha256_hex(&body));
    let signature = signature::compute(
        SignatureAlgorithm::HmacSha1,
        AUTH_TOKEN.as_bytes(),
        &format!("{base}{path_and_query}"),
        &[],
    );
    let host = base.trim_start_matches("http://");
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Twilio-Signature", signature.as_str()),
        ("User-Agent", "TwilioProxy/1.1"),
    ];
    Webhook {
        wire: client::request("POST", &path_and_query, host, &headers, &body),
    }
}

/// `count` webhooks of run `run`, request `i` calling `identity(i)`.
pub fn batch(
    base: &str,
    run: u32,
    count: usize,
    identity: impl Fn(usize) -> String,
) -> Vec<Webhook> {
    (0..count)
        .map(|i| signed(base, body(&identity(i), run, i as u64)))
        .collect()
}

pub const CALLBACK_PATH: &str = "/v1/twilio/status-callbacks";

/// A Room's `participant-connected` status callback as Twilio sends it, form-encoded, with
/// `BenchIndex` = `<run>-<index>` so that a subscriber can tell when it was sent; signed over
/// the URL and the sorted parameters.
pub fn callback(base: &str, run: u32, index: u64) -> Webhook {
    let index_text = format!("{run}-{index}");
    let timestamp = format!("2026-12-07T10:00:00.{:03}Z", index % 1000);
    let params = [
        ("AccountSid", ACCOUNT),
        ("BenchIndex", index_text.as_str()),
        ("ParticipantIdentity", "dr-alice"),
        ("ParticipantSid", "PA0123456789abcdef0123456789abcdef"),
        ("ParticipantStatus", "connected"),
        ("RoomName", "consult-42"),
        ("RoomSid", "RM0123456789abcdef0123456789abcdef"),
        ("RoomStatus", "in-progress"),
        ("RoomType", "group"),
        ("SequenceNumber", "3"),
        ("StatusCallbackEvent", "participant-connected"),
        ("Timestamp", timestamp.as_str()),
    ];
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let signature = signature::compute(
        SignatureAlgorithm::HmacSha1,
        AUTH_TOKEN.as_bytes(),
        &format!("{base}{CALLBACK_PATH}"),
        &params,
    );
    let host = base.trim_start_matches("http://");
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("X-Twilio-Signature", signature.as_str()),
        ("User-Agent", "TwilioProxy/1.1"),
    ];
    Webhook {
        wire: client::request("POST", CALLBACK_PATH, host, &headers, body.as_bytes()),
    }
}
