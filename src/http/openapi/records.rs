//! The OpenAPI side of the call trace and the room ledger: their schemas and operations.

use serde_json::{Map, Value, json};

use super::{account_parameter, bearer, examples, problem, r};

fn nullable(kind: &str) -> Value {
    json!({"type": [kind, "null"]})
}

fn time_or_null() -> Value {
    json!({"type": ["string", "null"], "format": "date-time"})
}

pub fn schemas(out: &mut Map<String, Value>) {
    out.insert(
        "TraceTarget".into(),
        json!({
            "type": "object",
            "description": "One target a notification was delivered to or tried: a push binding (by id, never its device token) or a socket (by connection id, with the replica holding it).",
            "required": ["channel", "attempts", "outcome", "latency_ms"],
            "properties": {
                "channel": {"enum": ["apns", "fcm", "websocket"]},
                "app": nullable("string"), "binding": nullable("string"),
                "socket": nullable("string"), "replica": nullable("string"),
                "attempts": {"type": "integer", "minimum": 0, "description": "Requests made to Apple or Google (retries included); 1 for a socket."},
                "outcome": {"enum": ["delivered", "removed", "failed", "skipped"], "description": "`removed`: the address was dead and the binding or socket went. `skipped`: not sent, by a ringing rule (`detail` says which)."},
                "status": {"type": ["integer", "null"], "description": "The HTTP status Apple or Google answered last."},
                "reason": {"type": ["string", "null"], "description": "Apple's reason or Google's error code (or `timeout`, `connection_error`)."},
                "apns_id": {"type": ["string", "null"], "description": "The `apns-id` Apple gave the push."},
                "detail": {"type": ["string", "null"], "description": "callrelay's words when the target was not delivered to (null for access-token holders, as `replica` is)."},
                "latency_ms": {"type": "number", "minimum": 0}
            },
            "additionalProperties": false
        }),
    );
    out.insert(
        "TraceNotification".into(),
        json!({
            "type": "object",
            "description": "One call notification Twilio sent for the call and what it was answered.",
            "required": ["identity", "received_at", "status", "answer", "took_ms", "delivered", "removed", "failed", "duplicate", "targets"],
            "properties": {
                "identity": {"type": "string"},
                "message_id": nullable("string"), "message_type": nullable("string"),
                "from": nullable("string"), "to": nullable("string"),
                "received_at": {"type": "string", "format": "date-time"},
                "status": {"type": "integer", "description": "The HTTP status Twilio was answered."},
                "answer": {"type": "string", "description": "The outcome, as `callrelay_webhooks_total` labels it (`delivered`, `duplicate`, `not_found`, `failed`, `unavailable`…)."},
                "took_ms": {"type": "number", "minimum": 0},
                "delivered": {"type": "integer", "minimum": 0},
                "removed": {"type": "integer", "minimum": 0},
                "failed": {"type": "integer", "minimum": 0},
                "duplicate": {"type": "boolean", "description": "A retry of a notification already delivered (same `twi_message_id`): nothing was sent again."},
                "replica": {"type": ["string", "null"], "description": "The replica that answered (null for access-token holders)."},
                "targets": {"type": "array", "items": {"$ref": "#/components/schemas/TraceTarget"}}
            },
            "additionalProperties": false
        }),
    );
    out.insert(
        "CallSummary".into(),
        json!({
            "type": "object",
            "description": "A Voice Insights call summary Event Streams delivered for the call.",
            "required": ["type", "event_id", "received_at"],
            "properties": {
                "type": {"type": "string"}, "event_id": {"type": "string"},
                "received_at": {"type": "string", "format": "date-time"},
                "call_state": nullable("string"),
                "duration": {"type": ["integer", "null"], "minimum": 0},
                "connect_duration": {"type": ["integer", "null"], "minimum": 0},
                "disconnected_by": nullable("string"), "processing_state": nullable("string"),
                "start_time": nullable("string"), "end_time": nullable("string"),
                "callee": nullable("string")
            },
            "additionalProperties": false
        }),
    );
    out.insert(
        "CallTrace".into(),
        json!({
            "type": "object",
            "description": "What happened to a call: every notification Twilio sent for it, each target tried, and the Voice Insights summaries.",
            "required": ["account_sid", "call_sid", "notifications", "insights"],
            "properties": {
                "account_sid": {"type": "string"}, "call_sid": {"type": "string"},
                "identity": nullable("string"), "from": nullable("string"), "to": nullable("string"),
                "notifications": {"type": "array", "items": {"$ref": "#/components/schemas/TraceNotification"}},
                "insights": {"type": "array", "items": {"$ref": "#/components/schemas/CallSummary"}},
                "acks": {"type": "array", "description": "Acknowledgements from sockets opened with `ack=1`; absent when none.", "items": {"$ref": "#/components/schemas/CallAck"}}
            },
            "additionalProperties": false
        }),
    );
    out.insert(
        "CallAck".into(),
        json!({
            "type": "object",
            "description": "A client acknowledged a notification it received over its socket.",
            "required": ["identity", "socket", "acknowledged_at", "after_ms"],
            "properties": {
                "message_id": {"type": "string"},
                "identity": {"type": "string"},
                "socket": {"type": "string", "description": "The socket's connection id."},
                "replica": {"type": "string", "description": "The replica holding the socket (admin keys only)."},
                "acknowledged_at": {"type": "string", "format": "date-time"},
                "after_ms": {"type": "number", "minimum": 0, "description": "From the hand-off to the socket to the acknowledgement."}
            },
            "additionalProperties": false
        }),
    );
    out.insert(
        "Room".into(),
        json!({
            "type": "object",
            "description": "A room's ledger, computed from its room and participant status callbacks (ordered by `Timestamp`, repeats counted once).",
            "required": ["account_sid", "room_sid", "status", "participants", "billing", "events"],
            "properties": {
                "account_sid": {"type": "string"}, "room_sid": {"type": "string"},
                "room_name": nullable("string"),
                "status": {"enum": ["in-progress", "ended"]},
                "created_at": time_or_null(), "ended_at": time_or_null(),
                "room_duration": {"type": ["integer", "null"], "description": "Twilio's `RoomDuration` (seconds)."},
                "session": {
                    "description": "From the first moment two or more participants were connected to the last moment fewer were; null if never two at once.",
                    "oneOf": [
                        {"type": "null"},
                        {"type": "object", "required": ["started_at", "ended_at", "seconds"], "properties": {
                            "started_at": {"type": "string", "format": "date-time"},
                            "ended_at": time_or_null(),
                            "seconds": {"type": "integer", "minimum": 0}
                        }, "additionalProperties": false}
                    ]
                },
                "participants": {"type": "array", "items": {"type": "object",
                    "required": ["participant_sid", "connected_seconds", "billable_seconds"],
                    "properties": {
                        "participant_sid": {"type": "string"}, "identity": nullable("string"),
                        "connected_at": time_or_null(), "disconnected_at": time_or_null(),
                        "closed_by": {"enum": ["participant-disconnected", "room-ended", null], "description": "null: still connected."},
                        "participant_duration": {"type": ["integer", "null"], "description": "Twilio's `ParticipantDuration`."},
                        "connected_seconds": {"type": "integer", "minimum": 0},
                        "billable_seconds": {"type": "integer", "minimum": 0}
                    }, "additionalProperties": false}},
                "billing": {"type": "object", "required": ["rule", "billable_seconds", "billable_minutes"], "properties": {
                    "rule": {"enum": ["per_started_minute", "per_second"]},
                    "billable_seconds": {"type": "integer", "minimum": 0},
                    "billable_minutes": {"type": "number", "minimum": 0}
                }, "additionalProperties": false},
                "events": {"type": "integer", "minimum": 0, "description": "Distinct events the ledger was built from."}
            },
            "additionalProperties": false
        }),
    );
}

fn call_sid_parameter() -> Value {
    json!({"name": "call_sid", "in": "path", "required": true, "description": "The call's SID.", "schema": {"type": "string", "pattern": "^CA[A-Za-z0-9]{1,62}$"}, "example": "CA8c4b2e1f9d7a3b5c6e0f1a2b3c4d5e6f"})
}

fn room_sid_parameter() -> Value {
    json!({"name": "room_sid", "in": "path", "required": true, "description": "The room's SID.", "schema": {"type": "string", "pattern": "^RM[A-Za-z0-9]{1,62}$"}, "example": "RM1a2b3c4d5e6f708192a3b4c5d6e7f809"})
}

fn optional_account() -> Value {
    let mut p = account_parameter();
    p["required"] = json!(false);
    p["description"] =
        json!("The account; required with an admin key, implied by an access token.");
    p
}

fn time_parameter(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string", "format": "date-time"}, "example": "2026-12-01T00:00:00Z"})
}

fn csv_content() -> Value {
    json!({"text/csv": {"schema": {"type": "string"}, "example": examples::room_csv()}})
}

pub fn paths(out: &mut Map<String, Value>) {
    out.insert("/v1/calls".into(), json!({"get": {
        "operationId": "listCalls",
        "tags": ["Call trace"],
        "summary": "An identity's recent calls",
        "description": "The calls to an identity since `since` (the trace's retention without it), newest first, each with its whole trace. An admin key names `account_sid` and `identity`; an access token reads its own identity's.",
        "security": bearer(),
        "parameters": [
            optional_account(),
            {"name": "identity", "in": "query", "required": false, "description": "The callee; required with an admin key.", "schema": {"type": "string"}, "example": "alice"},
            time_parameter("since", "The earliest first notification listed."),
            {"name": "limit", "in": "query", "required": false, "description": "At most this many calls (1 to 200).", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}}
        ],
        "responses": {
            "200": {"description": "The calls.", "content": {"application/json": {"schema": {"type": "object", "required": ["calls"], "properties": {"calls": {"type": "array", "items": {"$ref": "#/components/schemas/CallTrace"}}}, "additionalProperties": false}, "examples": examples::call_list()}}},
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"), "429": r("RateLimited"), "503": r("StoreUnavailable")
        }
    }}));
    out.insert("/v1/calls/{call_sid}".into(), json!({
        "parameters": [call_sid_parameter()],
        "get": {
            "operationId": "getCallTrace",
            "tags": ["Call trace"],
            "summary": "What happened to a call",
            "description": "Every call notification Twilio sent for the call (the answer, how long it took, each target tried with what Apple or Google said) and the Voice Insights summaries Event Streams brought. Kept for `calls.retention_secs`. An access token reads only calls to its own identity.",
            "security": bearer(),
            "parameters": [optional_account()],
            "responses": {
                "200": {"description": "The call's trace.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CallTrace"}, "examples": examples::call_trace()}}},
                "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
                "404": problem("No trace of this call (never seen, past the retention, or another identity's)."),
                "429": r("RateLimited"), "503": r("StoreUnavailable")
            }
        }
    }));
    out.insert("/v1/rooms".into(), json!({"get": {
        "operationId": "listRooms",
        "tags": ["Room ledger"],
        "summary": "Rooms and their ledgers (admin keys)",
        "description": "The rooms whose earliest event falls between `from` and `to` (the last 31 days without them), newest first, each with its ledger, a page at a time; as CSV with `Accept: text/csv` (one row per participant). Billable time follows `rooms.billing` as configured when the ledger is read.",
        "security": bearer(),
        "parameters": [
            account_parameter(),
            time_parameter("from", "The earliest room listed (by its first event)."),
            time_parameter("to", "The latest room listed (by its first event); now without it."),
            {"name": "status", "in": "query", "required": false, "schema": {"enum": ["in-progress", "ended"]}},
            {"name": "limit", "in": "query", "required": false, "description": "At most this many rooms (1 to 1000).", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
            {"name": "offset", "in": "query", "required": false, "description": "Where this page starts: the previous page's `next_offset`.", "schema": {"type": "integer", "minimum": 0, "default": 0}}
        ],
        "responses": {
            "200": {"description": "The rooms. When more follow, `next_offset` (and a `Link` header with `rel=\"next\"`, for CSV) says where the next page starts.", "headers": {"Link": {"description": "The next page, when there is one.", "schema": {"type": "string"}}}, "content": {
                "application/json": {"schema": {"type": "object", "required": ["rooms", "next_offset"], "properties": {"rooms": {"type": "array", "items": {"$ref": "#/components/schemas/Room"}}, "next_offset": {"type": ["integer", "null"], "minimum": 0}}, "additionalProperties": false}, "examples": examples::room_list()},
                "text/csv": csv_content()["text/csv"]
            }},
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"), "429": r("RateLimited"), "503": r("StoreUnavailable")
        }
    }}));
    out.insert("/v1/rooms/{room_sid}".into(), json!({
        "parameters": [room_sid_parameter()],
        "get": {
            "operationId": "getRoom",
            "tags": ["Room ledger"],
            "summary": "A room's ledger (admin keys)",
            "description": "Created and ended times, each participant's connected and billable time, the session span and the billable total under `rooms.billing`; as CSV with `Accept: text/csv`.",
            "security": bearer(),
            "parameters": [account_parameter()],
            "responses": {
                "200": {"description": "The ledger.", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Room"}, "examples": examples::room()},
                    "text/csv": csv_content()["text/csv"]
                }},
                "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
                "404": problem("No event of this room is kept."),
                "429": r("RateLimited"), "503": r("StoreUnavailable")
            }
        }
    }));
}
