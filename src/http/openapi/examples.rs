//! Examples for the OpenAPI document: one request and one answer for every operation. The
//! bindings come from `bindings-schema/examples/` (which the schema tests check); the rest
//! are written here, and a test checks every example against its schema.

use serde_json::{Value, json};

const APNS_REQUEST: &str =
    include_str!("../../../bindings-schema/examples/request/valid/apns-voip-explicit.json");
const FCM_REQUEST: &str =
    include_str!("../../../bindings-schema/examples/request/valid/fcm-with-app-and-device-id.json");
const APNS_BINDING: &str =
    include_str!("../../../bindings-schema/examples/binding/valid/apns-voip-production.json");
const FCM_BINDING: &str =
    include_str!("../../../bindings-schema/examples/binding/valid/fcm-android.json");

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).expect("bindings-schema examples are JSON")
}

/// `{"name": {"summary": …, "value": …}}`, the shape of an OpenAPI `examples` map.
fn one(name: &str, summary: &str, value: Value) -> Value {
    json!({ name: {"summary": summary, "value": value} })
}

/// A call notification as Twilio sends it for an incoming call to `client:alice`.
pub fn notification() -> Value {
    one(
        "incomingCall",
        "An incoming call to client:alice",
        json!({
            "twi_account_sid": "AC3f9a2b7c1d4e5f60718293a4b5c6d7e8",
            "twi_bridge_token": "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.bridge-token",
            "twi_call_sid": "CA8c4b2e1f9d7a3b5c6e0f1a2b3c4d5e6f",
            "twi_from": "client:bob",
            "twi_to": "client:alice",
            "twi_message_id": "RM5f2e8b1c9d4a7e3f6b0c1d2e3f4a5b6c",
            "twi_message_type": "twilio.voice.call",
            "twi_params": "customer=42"
        }),
    )
}

pub fn status_callback() -> Value {
    one(
        "participantConnected",
        "A participant joined a Room",
        json!({
            "AccountSid": "AC3f9a2b7c1d4e5f60718293a4b5c6d7e8",
            "RoomName": "consult-42",
            "RoomSid": "RM1a2b3c4d5e6f708192a3b4c5d6e7f809",
            "RoomStatus": "in-progress",
            "RoomType": "group",
            "StatusCallbackEvent": "participant-connected",
            "ParticipantSid": "PA9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e",
            "ParticipantStatus": "connected",
            "ParticipantIdentity": "dr-alice",
            "SequenceNumber": "3",
            "Timestamp": "2026-12-07T10:00:02.000Z"
        }),
    )
}

pub fn event_streams() -> Value {
    one(
        "callSummary",
        "A Voice Insights call summary (data a JSON document in a string, as Twilio sends it)",
        json!([{
            "specversion": "1.0",
            "type": "com.twilio.voice.insights.call-summary.complete",
            "source": "/v1/Voice/CA8c4b2e1f9d7a3b5c6e0f1a2b3c4d5e6f/Summary",
            "id": "EZ0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "dataschema": "https://events-schemas.twilio.com/VoiceInsights.CallSummary/1",
            "datacontenttype": "application/json",
            "time": "2026-12-07T10:05:00.000Z",
            "data": "{\"call_sid\":\"CA8c4b2e1f9d7a3b5c6e0f1a2b3c4d5e6f\",\"account_sid\":\"AC3f9a2b7c1d4e5f60718293a4b5c6d7e8\",\"call_state\":\"canceled\"}"
        }]),
    )
}

pub fn events_kept() -> Value {
    let mut both = one(
        "kept",
        "The event is kept",
        json!({"accepted": 1, "duplicates": 0}),
    );
    both.as_object_mut().expect("an examples map").extend(
        one(
            "repeat",
            "Twilio sent the same callback again",
            json!({"accepted": 0, "duplicates": 1}),
        )
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    both
}

pub fn events_kept_batch() -> Value {
    one(
        "batch",
        "Two events, one of them kept before",
        json!({"accepted": 1, "duplicates": 1}),
    )
}

pub fn event_targets() -> Value {
    one(
        "twoTargets",
        "One from the configuration, one added through the API",
        json!({"targets": [
            {"name": "billing", "url": "https://billing.example.com/twilio-events", "types": ["participant-*", "room-ended"], "source": "configuration"},
            {"name": "staging", "url": "https://staging.example.com/twilio-events", "types": [], "source": "api"}
        ]}),
    )
}

pub fn event_target_settings() -> Value {
    one(
        "roomsOnly",
        "Room and participant events, with a secret generated",
        json!({"url": "https://staging.example.com/twilio-events", "types": ["room-*", "participant-*"]}),
    )
}

pub fn event_target_created() -> Value {
    one(
        "created",
        "Added; the generated secret is shown this once",
        json!({
            "name": "staging",
            "url": "https://staging.example.com/twilio-events",
            "types": ["room-*", "participant-*"],
            "source": "api",
            "secret": "whsec_c2VjcmV0LWJ5dGVzLWZvci10aGUtZXhhbXBsZS0wMTIzNDU2Nzg="
        }),
    )
}

pub fn failed_forwards() -> Value {
    one(
        "twoSetAside",
        "Two events the target did not take in time",
        json!({"failed": ["1796658419594-0", "1796658421120-3"]}),
    )
}

pub fn replaying() -> Value {
    one(
        "queued",
        "Both queued to be sent again",
        json!({"replaying": 2}),
    )
}

pub fn delivered() -> Value {
    one(
        "delivered",
        "Delivered to one of two bindings; the other failed and was kept",
        json!({"delivered": 1, "failed": 1, "removed": 0}),
    )
}

pub fn duplicate() -> Value {
    one(
        "duplicate",
        "Twilio's retry of a notification already delivered",
        json!({"delivered": 0, "failed": 0, "removed": 0, "duplicate": true}),
    )
}

pub fn not_delivered() -> Value {
    one(
        "allFailed",
        "No binding accepted it",
        json!({"delivered": 0, "failed": 2, "removed": 0}),
    )
}

pub fn in_progress() -> Value {
    one(
        "inProgress",
        "Another attempt at this twi_message_id is still delivering it",
        json!({
            "type": "urn:callrelay:problem:notification-in-progress",
            "title": "Notification in progress",
            "status": 503,
            "detail": "another attempt is delivering this notification; retry after 2 s"
        }),
    )
}

pub fn apns_request() -> Value {
    one(
        "apnsVoip",
        "An iPhone's VoIP push token",
        parsed(APNS_REQUEST),
    )
}

pub fn fcm_request() -> Value {
    one(
        "fcmAndroid",
        "An Android device's FCM registration token",
        parsed(FCM_REQUEST),
    )
}

pub fn apns_binding() -> Value {
    one("apnsVoip", "An APNs VoIP binding", parsed(APNS_BINDING))
}

pub fn fcm_binding() -> Value {
    one("fcmAndroid", "An FCM binding", parsed(FCM_BINDING))
}

pub fn binding_list() -> Value {
    one(
        "phoneAndBrowser",
        "An identity with an iPhone binding and a browser tab open",
        json!({
            "bindings": [parsed(APNS_BINDING)],
            "sockets": [{
                "id": "3c9e1f7a2b4d4c6e8f0a1b2c3d4e5f60",
                "account_sid": "AC3f9a2b7c1d4e5f60718293a4b5c6d7e8",
                "identity": "alice",
                "channel": "websocket",
                "device_id": "laptop-browser",
                "connected_at": "2025-03-14T09:30:00Z"
            }]
        }),
    )
}

pub fn deleted() -> Value {
    one("two", "Two bindings removed", json!({"deleted": 2}))
}

pub fn openapi_document() -> Value {
    one(
        "abridged",
        "The start of this document",
        json!({"openapi": "3.1.0", "info": {"title": "callrelay"}}),
    )
}

fn traced_call() -> Value {
    json!({
        "account_sid": "AC3f9a2b7c1d4e5f60718293a4b5c6d7e8",
        "call_sid": "CA8c4b2e1f9d7a3b5c6e0f1a2b3c4d5e6f",
        "identity": "alice",
        "from": "client:bob",
        "to": "client:alice",
        "notifications": [{
            "identity": "alice",
            "message_id": "RM5f2e8b1c9d4a7e3f6b0c1d2e3f4a5b6c",
            "message_type": "twilio.voice.call",
            "from": "client:bob",
            "to": "client:alice",
            "received_at": "2026-12-07T17:08:02.870858942Z",
            "status": 200,
            "answer": "delivered",
            "took_ms": 41.7,
            "delivered": 2,
            "removed": 0,
            "failed": 1,
            "duplicate": false,
            "replica": "441382a1f79040b2a40cb64d7561a088",
            "targets": [
                {"channel": "apns", "app": "ios-voip", "binding": "iphone-15", "socket": null, "replica": null,
                 "attempts": 1, "outcome": "delivered", "status": 200, "reason": null,
                 "apns_id": "D5B07107-5292-4480-943D-E3617D05A613", "detail": null, "latency_ms": 38.9},
                {"channel": "fcm", "app": "android", "binding": "pixel-8", "socket": null, "replica": null,
                 "attempts": 3, "outcome": "failed", "status": 503, "reason": "UNAVAILABLE", "apns_id": null,
                 "detail": "FCM answered 503 UNAVAILABLE; no time left to retry", "latency_ms": 40.2},
                {"channel": "websocket", "app": null, "binding": null,
                 "socket": "5434b35add4a433b9f8a77ba83134ed1", "replica": "441382a1f79040b2a40cb64d7561a088",
                 "attempts": 1, "outcome": "delivered", "status": null, "reason": null, "apns_id": null,
                 "detail": null, "latency_ms": 0.1}
            ]
        }],
        "insights": [{
            "type": "com.twilio.voice.insights.call-summary.complete",
            "event_id": "EZ0123456789abcdef0123456789abcdef",
            "received_at": "2026-12-07T17:09:51.102Z",
            "call_state": "completed",
            "duration": 94,
            "connect_duration": 88,
            "disconnected_by": "callee",
            "processing_state": "complete",
            "start_time": "2026-12-07T17:08:02Z",
            "end_time": "2026-12-07T17:09:36Z",
            "callee": "client:alice"
        }]
    })
}

pub fn call_trace() -> Value {
    one(
        "deliveredTwice",
        "Rang Alice's iPhone and browser; her Android phone's FCM was unavailable",
        traced_call(),
    )
}

pub fn call_list() -> Value {
    one(
        "oneCall",
        "Alice's calls since yesterday",
        json!({"calls": [traced_call()]}),
    )
}

fn ledger() -> Value {
    json!({
        "account_sid": "AC3f9a2b7c1d4e5f60718293a4b5c6d7e8",
        "room_sid": "RM1a2b3c4d5e6f708192a3b4c5d6e7f809",
        "room_name": "consult-42",
        "status": "ended",
        "created_at": "2026-12-07T15:00:00Z",
        "ended_at": "2026-12-07T15:10:30Z",
        "room_duration": 630,
        "session": {"started_at": "2026-12-07T15:00:20Z", "ended_at": "2026-12-07T15:05:20Z", "seconds": 300},
        "participants": [
            {"participant_sid": "PA0123456789abcdef0123456789abcdef", "identity": "dr-jones",
             "connected_at": "2026-12-07T15:00:10Z", "disconnected_at": "2026-12-07T15:05:20Z",
             "closed_by": "participant-disconnected", "participant_duration": 310,
             "connected_seconds": 310, "billable_seconds": 360},
            {"participant_sid": "PAfedcba9876543210fedcba9876543210", "identity": "patient-7",
             "connected_at": "2026-12-07T15:00:20Z", "disconnected_at": "2026-12-07T15:10:30Z",
             "closed_by": "room-ended", "participant_duration": null,
             "connected_seconds": 610, "billable_seconds": 660}
        ],
        "billing": {"rule": "per_started_minute", "billable_seconds": 1020, "billable_minutes": 17.0},
        "events": 5
    })
}

pub fn room() -> Value {
    one(
        "consult",
        "A consult; the patient's disconnect never arrived and room-ended closed it",
        ledger(),
    )
}

pub fn room_list() -> Value {
    one(
        "december",
        "Rooms of December, the last page",
        json!({"rooms": [ledger()], "next_offset": null}),
    )
}

/// The same consult as CSV.
pub fn room_csv() -> &'static str {
    "account_sid,room_sid,room_name,status,created_at,ended_at,room_duration,session_seconds,participant_sid,identity,connected_at,disconnected_at,closed_by,participant_duration,connected_seconds,billable_seconds,rule\r\n\
AC3f9a2b7c1d4e5f60718293a4b5c6d7e8,RM1a2b3c4d5e6f708192a3b4c5d6e7f809,consult-42,ended,2026-12-07T15:00:00Z,2026-12-07T15:10:30Z,630,300,PA0123456789abcdef0123456789abcdef,dr-jones,2026-12-07T15:00:10Z,2026-12-07T15:05:20Z,participant-disconnected,310,310,360,per_started_minute\r\n"
}
