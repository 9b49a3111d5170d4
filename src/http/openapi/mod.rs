//! The OpenAPI 3.1 description of the public API, built here next to the routes it
//! describes and served at `/openapi.json`. The binding schemas come from `bindings-schema/`,
//! so the API description and the JSON Schemas cannot drift apart; `openapi.json` at the
//! repository root is this document, committed, and a test fails when the two differ
//! (`cargo run -q -- openapi > openapi.json` regenerates it).

mod examples;
mod records;

use serde_json::{Map, Value, json};

const BINDING_REQUEST: &str = include_str!("../../../bindings-schema/binding-request.schema.json");
const BINDING: &str = include_str!("../../../bindings-schema/binding.schema.json");
const BINDING_LIST: &str = include_str!("../../../bindings-schema/binding-list.schema.json");

const PROBLEM_JSON: &str = "application/problem+json";

/// The whole document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    for (name, text) in [
        ("BindingRequest", BINDING_REQUEST),
        ("Binding", BINDING),
        ("BindingList", BINDING_LIST),
    ] {
        hoist(
            name,
            serde_json::from_str(text).expect("bindings-schema files are JSON"),
            &mut schemas,
        );
    }
    schemas.insert("Problem".into(), problem_schema());
    schemas.insert("DeliverySummary".into(), summary_schema());
    schemas.insert("CallNotification".into(), notification_schema());
    schemas.insert("EventsKept".into(), events_kept_schema());
    schemas.insert("StatusCallback".into(), status_callback_schema());
    schemas.insert("CloudEvents".into(), cloud_events_schema());
    let (target, settings) = target_schemas();
    schemas.insert("EventTarget".into(), target);
    schemas.insert("EventTargetSettings".into(), settings);
    records::schemas(&mut schemas);
    schemas.insert(
        "Deleted".into(),
        json!({
            "type": "object",
            "required": ["deleted"],
            "properties": {"deleted": {"type": "integer", "minimum": 0, "description": "How many bindings were removed."}},
            "additionalProperties": false
        }),
    );

    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "callrelay",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "Relays Twilio Voice call notifications to devices over APNs, FCM and WebSockets.",
            "description": "Errors are RFC 9457 problem documents whose `type` is `urn:callrelay:problem:<slug>`; the README lists them.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "servers": [{
            "url": "{publicUrl}",
            "description": "This deployment: the URL Twilio and devices reach callrelay at.",
            "variables": {"publicUrl": {
                "default": "http://localhost:8080",
                "description": "`server.public_url` (callrelay itself listens on `server.listen`, 0.0.0.0:8080 unless configured; put a TLS-terminating proxy in front)."
            }}
        }],
        "tags": [
            {"name": "Twilio webhook", "description": "Called by Twilio for each call to a client identity; signed with the account's Auth Token."},
            {"name": "Twilio events", "description": "Status callbacks (Video Rooms, Recordings, Compositions, Composition Hooks, Media Processors, Player Streamers) and Event Streams sinks: kept in the account's event log before Twilio is answered."},
            {"name": "Bindings", "description": "An identity's push bindings (APNs, FCM), managed by the app with a Twilio Access Token, or by the app's backend with an admin key."},
            {"name": "WebSocket", "description": "A live binding: the device holds a socket and receives each call notification as a text frame."},
            {"name": "Call trace", "description": "What happened to each call notification: read by the app's backend with an admin key, or by a client for its own identity's calls."},
            {"name": "Room ledger", "description": "Per room and participant, connected and billable time, built from Twilio's room status callbacks (admin keys)."},
            {"name": "Document", "description": "This OpenAPI document."}
        ],
        "paths": {
            "/v1/twilio/call-notifications": {"post": webhook_operation()},
            "/v1/twilio/status-callbacks": {
                "post": status_callback_operation(false),
                "get": status_callback_operation(true)
            },
            "/v1/twilio/event-streams": {"post": event_streams_operation()},
            "/v1/bindings": {
                "post": create_operation(),
                "get": list_operation(),
                "delete": delete_all_operation()
            },
            "/v1/bindings/{id}": {
                "parameters": [{"$ref": "#/components/parameters/BindingId"}],
                "put": replace_operation(),
                "get": get_operation(),
                "delete": delete_operation()
            },
            "/v1/ws": {"get": websocket_operation()},
            "/v1/events/ws": {"get": event_feed_operation()},
            "/v1/events/targets": {"get": list_targets_operation()},
            "/v1/events/targets/{name}": {
                "parameters": [target_name_parameter()],
                "put": put_target_operation(),
                "delete": delete_target_operation()
            },
            "/v1/events/targets/{name}/failed": {
                "parameters": [target_name_parameter()],
                "get": failed_operation()
            },
            "/v1/events/targets/{name}/replay": {
                "parameters": [target_name_parameter()],
                "post": replay_operation()
            },
            "/openapi.json": {"get": {
                "operationId": "getOpenApi",
                "tags": ["Document"],
                "summary": "This document",
                "description": "The OpenAPI 3.1 description of the public listener, as this replica's version has it.",
                "security": [],
                "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}, "examples": examples::openapi_document()}}}}
            }}
        },
        "components": {
            "schemas": schemas,
            "parameters": parameters(),
            "responses": responses(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Twilio Access Token (HS256 JWT signed with an API key secret configured for its account; acts as `grants.identity`) or an admin key (manages any identity of the configured accounts)."
                },
                "twilioSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Twilio-Signature",
                    "description": "Twilio's request signature over the public URL (which carries `bodySHA256`), keyed with the account's Auth Token or a shared key named by `X-Twilio-Webhooks-Signature-Settings`."
                },
                "webhookBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "HTTP Basic credentials, when the account configures them."
                }
            }
        }
    });
    records::paths(doc["paths"].as_object_mut().expect("paths"));
    // The listener refuses an oversize request head before any route sees it.
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for (method, operation) in item.as_object_mut().expect("a path item").iter_mut() {
            if method != "parameters" {
                operation["responses"]["431"] = r("HeadTooLarge");
            }
        }
    }
    doc
}

/// Moves a bindings-schema document into `components/schemas` under `name`, its `$defs`
/// alongside it, rewriting references between the files to component references.
fn hoist(name: &str, mut schema: Value, out: &mut Map<String, Value>) {
    let object = schema
        .as_object_mut()
        .expect("a schema document is an object");
    object.remove("$schema");
    object.remove("$id");
    if let Some(Value::Object(defs)) = object.remove("$defs") {
        for (def, mut value) in defs {
            rewrite_refs(&mut value);
            out.insert(component_name(&def), value);
        }
    }
    rewrite_refs(&mut schema);
    out.insert(name.to_owned(), schema);
}

fn component_name(def: &str) -> String {
    let mut chars = def.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref") {
                let def = target.rsplit_once("#/$defs/").map(|(_, d)| d.to_owned());
                *target = match (def, target.as_str()) {
                    (Some(def), _) => format!("#/components/schemas/{}", component_name(&def)),
                    (None, "binding.schema.json") => "#/components/schemas/Binding".into(),
                    (None, "binding-request.schema.json") => {
                        "#/components/schemas/BindingRequest".into()
                    }
                    (None, other) => panic!("unexpected reference {other} in bindings-schema"),
                };
            }
            map.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem document.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "pattern": "^urn:callrelay:problem:[a-z-]+$"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"}
        },
        "additionalProperties": false
    })
}

fn summary_schema() -> Value {
    json!({
        "type": "object",
        "description": "What became of a call notification.",
        "required": ["delivered", "failed", "removed"],
        "properties": {
            "delivered": {"type": "integer", "minimum": 0, "description": "Bindings that accepted it."},
            "failed": {"type": "integer", "minimum": 0, "description": "Bindings that did not, for a reason that may pass; they are kept."},
            "removed": {"type": "integer", "minimum": 0, "description": "Bindings found dead and removed."},
            "skipped": {"type": "integer", "minimum": 1, "description": "Targets not sent to by a ringing rule (README, \"Ringing right\"): an APNs binding for a notification that is not a call, an older binding of a device, a push a socket's acknowledgement made unneeded. Absent when none."},
            "duplicate": {"type": "boolean", "const": true, "description": "Present when this twi_message_id was already delivered: nothing was sent again."}
        },
        "additionalProperties": false
    })
}

fn notification_schema() -> Value {
    json!({
        "type": "object",
        "description": "Twilio's call notification. callrelay reads the members below and forwards the document unmodified; any other member is allowed and forwarded too.",
        "required": ["twi_account_sid", "twi_to"],
        "properties": {
            "twi_account_sid": {"$ref": "#/components/schemas/AccountSid"},
            "twi_to": {"type": "string", "pattern": "^client:[^\\u0000-\\u001f\\u007f-\\u009f]+$", "description": "`client:<identity>`"},
            "twi_message_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "twi_from": {"type": "string"},
            "twi_call_sid": {"type": "string"},
            "twi_bridge_token": {"type": "string"},
            "twi_message_type": {"type": "string"},
            "twi_params": {"type": "string"}
        },
        "additionalProperties": true
    })
}

fn parameters() -> Value {
    json!({
        "BindingId": {
            "name": "id", "in": "path", "required": true,
            "description": "The binding's id: assigned by callrelay (`POST`) or chosen by the client (`PUT`).",
            "schema": {"$ref": "#/components/schemas/BindingId"},
            "example": "0f8e4c2a9b7d4e1f8a6c3b5d7e9f1a2b"
        },
        "Identity": {
            "name": "identity", "in": "query", "required": false,
            "description": "Whose bindings. Optional with an access token (its own identity); required with an admin key.",
            "schema": {"$ref": "#/components/schemas/Identity"},
            "example": "alice"
        },
        "AccountSid": {
            "name": "account_sid", "in": "query", "required": false,
            "description": "Which account. Optional with an access token (its own account); required with an admin key.",
            "schema": {"$ref": "#/components/schemas/AccountSid"},
            "example": "AC3f9a2b7c1d4e5f60718293a4b5c6d7e8"
        }
    })
}

pub(super) fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn responses() -> Value {
    let mut unauthorized = problem("No or invalid credentials.");
    unauthorized["headers"] =
        json!({"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}});
    let mut rate_limited = problem(
        "Too many requests from this credential (or, for sockets, for this identity); retry after `Retry-After` seconds.",
    );
    rate_limited["headers"] = json!({"Retry-After": {"schema": {"type": "string"}}});
    let mut unavailable = problem("The store cannot be reached; retry shortly.");
    unavailable["headers"] = json!({"Retry-After": {"schema": {"type": "string"}}});
    json!({
        "BadRequest": problem("The request is malformed; the detail says how."),
        "Unauthorized": unauthorized,
        "Forbidden": problem("The caller may not act on this account or identity."),
        "NotFound": problem("No such binding."),
        "PayloadTooLarge": problem("The body is over the limit."),
        "UnsupportedMediaType": problem("The body is not `application/json`."),
        "AppNotConfigured": problem("No push app serves the binding's channel, or the named app does not."),
        "StoreUnavailable": unavailable,
        "RequestTimeout": problem("The request (its body included) took longer than `limits.request_timeout_ms`."),
        "RateLimited": rate_limited,
        "TooManyBindings": problem("The identity has `limits.max_bindings_per_identity` bindings already."),
        "HeadTooLarge": {"description": "The request line and headers are larger than `limits.max_header_bytes` (no body)."}
    })
}

pub(super) fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/responses/{name}")})
}

fn binding_body(examples: Value) -> Value {
    json!({
        "required": true,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BindingRequest"}, "examples": examples}}
    })
}

fn binding_response(description: &str, location: bool, examples: Value) -> Value {
    let mut response = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Binding"}, "examples": examples}}
    });
    if location {
        response["headers"] = json!({"Location": {"required": true, "schema": {"type": "string"}}});
    }
    response
}

fn scope_parameters() -> Value {
    json!([
        {"$ref": "#/components/parameters/Identity"},
        {"$ref": "#/components/parameters/AccountSid"}
    ])
}

fn webhook_operation() -> Value {
    let summary = |d: &str, examples: Value| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DeliverySummary"}, "examples": examples}}});
    let mut answered = examples::delivered();
    answered.as_object_mut().expect("an examples map").extend(
        examples::duplicate()
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let mut unavailable = problem(
        "The store cannot be reached (`store-unavailable`), or another attempt at this twi_message_id had not finished by the deadline (`notification-in-progress`: it is still delivering, or it stopped and its claim lapses shortly); retry after `Retry-After` seconds.",
    );
    unavailable["headers"] = json!({"Retry-After": {"schema": {"type": "string"}}});
    unavailable["content"][PROBLEM_JSON]["examples"] = examples::in_progress();
    json!({
        "operationId": "postCallNotification",
        "tags": ["Twilio webhook"],
        "summary": "Twilio's call-notification webhook",
        "description": "Delivers the notification, unmodified, to every binding of (twi_account_sid, identity in twi_to) within the webhook deadline. A twi_message_id already delivered is answered 200 with `duplicate: true`; one that another attempt is still delivering, 503.",
        "security": [{"twilioSignature": []}, {"webhookBasic": []}],
        "parameters": [{
            "name": "bodySHA256", "in": "query", "required": true,
            "description": "Lowercase hex SHA-256 of the body, added by Twilio; the signature covers it.",
            "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
        }],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CallNotification"}, "examples": examples::notification()}}},
        "responses": {
            "200": summary("At least one binding accepted the notification (or it was a duplicate).", answered),
            "400": problem("Not a JSON object with twi_account_sid and twi_to = client:<identity>."),
            "401": basic_challenge(),
            "403": problem("The account is not configured, or the request did not authenticate (wrong HTTP Basic credentials, signature or body hash)."),
            "404": {
                "description": "No binding for the callee (a problem document), or every binding turned out dead and was removed (a summary).",
                "content": {
                    PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/DeliverySummary"}}
                }
            },
            "408": r("RequestTimeout"),
            "413": r("PayloadTooLarge"),
            "502": summary("No binding accepted the notification.", examples::not_delivered()),
            "503": unavailable
        }
    })
}

fn events_kept_schema() -> Value {
    json!({
        "type": "object",
        "description": "What became of the events of a request.",
        "required": ["accepted", "duplicates"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0, "description": "Events kept now."},
            "duplicates": {"type": "integer", "minimum": 0, "description": "Events kept before (the same id within `events.retention_secs`): acknowledged, not kept twice."}
        },
        "additionalProperties": false
    })
}

fn status_callback_schema() -> Value {
    json!({
        "type": "object",
        "description": "A status callback's parameters. callrelay reads the three below; every parameter, known or not, is kept.",
        "required": ["AccountSid"],
        "properties": {
            "AccountSid": {"type": "string", "pattern": "^AC[0-9a-fA-F]{32}$"},
            "StatusCallbackEvent": {"type": "string", "description": "The event's name, e.g. `participant-connected`, `composition-available`, `media-processor-ended`; unknown names are kept too."},
            "Timestamp": {"type": "string", "description": "Twilio's time for the event (UTC, ISO 8601)."}
        },
        "additionalProperties": {"type": "string"}
    })
}

fn cloud_events_schema() -> Value {
    json!({
        "type": "array",
        "description": "An Event Streams delivery: CloudEvents 1.0, each kept exactly as sent.",
        "items": {
            "type": "object",
            "required": ["id", "type"],
            "properties": {
                "specversion": {"type": "string"},
                "id": {"type": "string", "minLength": 1, "maxLength": 256, "description": "Unique per event (Twilio's EZ… SID): repeats are kept once."},
                "type": {"type": "string"},
                "source": {"type": "string"},
                "time": {"type": "string"},
                "data": {"description": "Kept as sent: a JSON document in a string, or an object. Its `account_sid` names the account unless the sink URL does."}
            }
        }
    })
}

fn events_responses(kept: Value, bad_request: &str) -> Value {
    json!({
        "200": {"description": "Every event is kept (or was already).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventsKept"}, "examples": kept}}},
        "400": problem(bad_request),
        "401": basic_challenge(),
        "403": problem("The account is not configured, or the request did not authenticate (wrong HTTP Basic credentials or signature)."),
        "408": r("RequestTimeout"),
        "413": r("PayloadTooLarge"),
        "503": r("StoreUnavailable")
    })
}

/// `get`: the parameters are in the query string and the signature covers the URL alone.
fn status_callback_operation(get: bool) -> Value {
    let mut operation = json!({
        "tags": ["Twilio events"],
        "security": [{"twilioSignature": []}, {"webhookBasic": []}],
        "responses": events_responses(
            examples::events_kept(),
            "No valid AccountSid, or a body that is not form-encoded UTF-8.",
        )
    });
    if get {
        operation["operationId"] = json!("getStatusCallback");
        operation["summary"] = json!("A status callback sent with GET");
        operation["description"] = json!(
            "As the POST, for resources whose StatusCallbackMethod is GET: the parameters are in the query string, and the signature covers the URL with it."
        );
        operation["parameters"] = json!([
            {"name": "AccountSid", "in": "query", "required": true, "schema": {"type": "string"}},
            {"name": "StatusCallbackEvent", "in": "query", "schema": {"type": "string"}}
        ]);
    } else {
        operation["operationId"] = json!("postStatusCallback");
        operation["summary"] = json!("A status callback (Video and Media)");
        operation["description"] = json!(
            "Point a Room's, Composition Hook's, Composition's, Media Processor's or Player Streamer's StatusCallback here. The event is kept in the account's log (every parameter, as sent) before the answer. Signed with X-Twilio-Signature over the URL and the form parameters sorted by name (no bodySHA256)."
        );
        operation["requestBody"] = json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/StatusCallback"}, "examples": examples::status_callback()}}});
    }
    operation
}

fn event_streams_operation() -> Value {
    json!({
        "operationId": "postEventStreams",
        "tags": ["Twilio events"],
        "summary": "An Event Streams webhook sink",
        "description": "Create an Event Streams webhook sink with this URL (add `?AccountSid=AC…` when the events' data does not name the account). Every CloudEvent of the array is kept in order before the answer; one whose id was kept before is acknowledged, not kept twice. Signed like the call-notification webhook: X-Twilio-Signature over the URL with bodySHA256.",
        "security": [{"twilioSignature": []}, {"webhookBasic": []}],
        "parameters": [
            {"name": "bodySHA256", "in": "query", "required": true, "description": "Lowercase hex SHA-256 of the body, added by Twilio; the signature covers it.", "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}},
            {"name": "AccountSid", "in": "query", "description": "The account the events belong to, when their data does not say (`data.account_sid`).", "schema": {"type": "string", "pattern": "^AC[0-9a-fA-F]{32}$"}}
        ],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CloudEvents"}, "examples": examples::event_streams()}}},
        "responses": events_responses(
            examples::events_kept_batch(),
            "Not a JSON array of CloudEvents with id and type, or no account named (neither `AccountSid` in the URL nor `data.account_sid`), or events of several accounts (or of another than the URL's `AccountSid`).",
        )
    })
}

/// Twilio sends a webhook without credentials first and adds the Basic credentials of its URL
/// only after this answer.
fn basic_challenge() -> Value {
    let mut response = problem(
        "The account requires HTTP Basic credentials and the request carried none; Twilio then sends it again with them.",
    );
    response["headers"] = json!({"WWW-Authenticate": {
        "required": true,
        "schema": {"type": "string", "const": super::problem::BASIC_CHALLENGE}
    }});
    response
}

pub(super) fn bearer() -> Value {
    json!([{"bearer": []}])
}

fn create_operation() -> Value {
    json!({
        "operationId": "createBinding",
        "tags": ["Bindings"],
        "summary": "Register a push binding (the id is assigned)",
        "description": "Registers a device's APNs or FCM token for the token's identity (or, with an admin key, the `account_sid` and `identity` in the body). Registering a token another identity holds moves it: one device rings for one identity.",
        "security": bearer(),
        "requestBody": binding_body(examples::apns_request()),
        "responses": {
            "201": binding_response("Created.", true, examples::apns_binding()),
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
            "408": r("RequestTimeout"), "409": r("TooManyBindings"),
            "413": r("PayloadTooLarge"), "415": r("UnsupportedMediaType"),
            "422": r("AppNotConfigured"), "429": r("RateLimited"), "503": r("StoreUnavailable")
        }
    })
}

fn replace_operation() -> Value {
    json!({
        "operationId": "putBinding",
        "tags": ["Bindings"],
        "summary": "Create or replace the binding with this id",
        "description": "Idempotent registration under an id the client chose (e.g. one per installation): the app can call it at every start with the current token.",
        "security": bearer(),
        "requestBody": binding_body(examples::fcm_request()),
        "responses": {
            "200": binding_response("Replaced (created_at kept).", false, examples::fcm_binding()),
            "201": binding_response("Created.", true, examples::fcm_binding()),
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
            "408": r("RequestTimeout"), "409": r("TooManyBindings"),
            "413": r("PayloadTooLarge"), "415": r("UnsupportedMediaType"),
            "422": r("AppNotConfigured"), "429": r("RateLimited"), "503": r("StoreUnavailable")
        }
    })
}

fn get_operation() -> Value {
    json!({
        "operationId": "getBinding",
        "tags": ["Bindings"],
        "summary": "Read one binding",
        "description": "One push binding of the identity in scope, by id.",
        "security": bearer(),
        "parameters": scope_parameters(),
        "responses": {
            "200": binding_response("The binding.", false, examples::apns_binding()),
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
            "404": r("NotFound"), "408": r("RequestTimeout"), "429": r("RateLimited"),
            "503": r("StoreUnavailable")
        }
    })
}

fn delete_operation() -> Value {
    json!({
        "operationId": "deleteBinding",
        "tags": ["Bindings"],
        "summary": "Remove one binding",
        "description": "Removes one push binding of the identity in scope (a device logging out); its token stops ringing at once.",
        "security": bearer(),
        "parameters": scope_parameters(),
        "responses": {
            "204": {"description": "Removed."},
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
            "404": r("NotFound"), "408": r("RequestTimeout"), "429": r("RateLimited"),
            "503": r("StoreUnavailable")
        }
    })
}

fn list_operation() -> Value {
    json!({
        "operationId": "listBindings",
        "tags": ["Bindings"],
        "summary": "An identity's push bindings and open sockets",
        "description": "Every unexpired push binding of the identity in scope, and its WebSockets open on any replica right now.",
        "security": bearer(),
        "parameters": scope_parameters(),
        "responses": {
            "200": {"description": "The bindings.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BindingList"}, "examples": examples::binding_list()}}},
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
            "408": r("RequestTimeout"), "429": r("RateLimited"), "503": r("StoreUnavailable")
        }
    })
}

fn delete_all_operation() -> Value {
    json!({
        "operationId": "deleteBindings",
        "tags": ["Bindings"],
        "summary": "Remove every push binding of an identity",
        "description": "Removes every push binding of the identity in scope (an account deleted, every device signed out). Open WebSockets are not bindings and stay open.",
        "security": bearer(),
        "parameters": scope_parameters(),
        "responses": {
            "200": {"description": "Removed.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Deleted"}, "examples": examples::deleted()}}},
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
            "408": r("RequestTimeout"), "429": r("RateLimited"), "503": r("StoreUnavailable")
        }
    })
}

fn websocket_operation() -> Value {
    json!({
        "operationId": "openWebSocket",
        "tags": ["WebSocket"],
        "summary": "Open a WebSocket: a live binding of the token's identity",
        "description": "Each call notification for the identity arrives as one text frame holding exactly the JSON Twilio sent; one that waited inside callrelay longer than `websocket.ringing_window_secs` is dropped, never delivered late. With `ack=1` the client may send `{\"type\":\"ack\",\"twi_message_id\":\"…\"}` for each one it has (counted in `callrelay_websocket_acks_total` and recorded in the call's trace). The server pings; a client silent for two ping intervals is dropped. Close codes the server sends: 1001 (going away: shutdown; reconnect, to another replica) and 4001 (access token expired: the token the socket was opened with is no longer accepted, at its `exp` plus 30 s of clock-skew leeway; reconnect with a fresh token, ideally before then).",
        "security": [{"bearer": []}, {}],
        "parameters": [
            {"name": "access_token", "in": "query", "required": false, "description": "A Twilio Access Token, for clients that cannot set headers (browsers).", "schema": {"type": "string", "maxLength": 8192}, "example": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIn0.payload.signature"},
            {"name": "device_id", "in": "query", "required": false, "description": "Names the device, so its sockets and bindings can be told apart in the list.", "schema": {"$ref": "#/components/schemas/DeviceId"}, "example": "laptop-browser"},
            {"name": "ack", "in": "query", "required": false, "description": "`1`: the client acknowledges what it receives. Without it, nothing the client sends is read as an acknowledgement.", "schema": {"type": "string", "enum": ["0", "1"]}, "example": "1"},
            {"name": "replay_since", "in": "query", "required": false, "description": "Unix milliseconds of the moment the client lost its previous socket: the call notifications its identity received since then, within `websocket.ringing_window_secs`, are sent first (oldest first). Drop repeats by `twi_message_id`.", "schema": {"type": "string", "pattern": "^-?[0-9]{1,19}$"}, "example": "1796674014564"}
        ],
        "responses": {
            "101": {"description": "Switching protocols: the socket is open."},
            "400": r("BadRequest"),
            "401": r("Unauthorized"),
            "426": problem("The request is not a WebSocket upgrade this server can accept."),
            "429": r("RateLimited"),
            "503": problem("The store cannot be reached, or this replica holds all the sockets it may; retry (another replica).")
        }
    })
}

fn target_schemas() -> (Value, Value) {
    let types = json!({"type": "array", "items": {"type": "string"}, "description": "Event types forwarded; `*` matches any run of characters. All types when empty."});
    let target = json!({
        "type": "object",
        "description": "A forwarding target: every event of the account whose type matches is POSTed to `url` as its envelope, signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature).",
        "required": ["name", "url", "types", "source"],
        "properties": {
            "name": {"type": "string"},
            "url": {"type": "string"},
            "types": types,
            "source": {"enum": ["configuration", "api"], "description": "Where the target is defined; the API changes only its own."},
            "secret": {"type": "string", "description": "The signing secret (`whsec_…`), only in the answer that created it, when callrelay generated it."}
        },
        "additionalProperties": false
    });
    let settings = json!({
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "description": "http or https, without query string or credentials."},
            "types": types,
            "secret": {"type": "string", "description": "A Standard Webhooks secret, `whsec_` and 24 to 64 bytes in base64; leave it out to have one generated (returned once)."}
        },
        "additionalProperties": false
    });
    (target, settings)
}

fn target_name_parameter() -> Value {
    json!({"name": "name", "in": "path", "required": true, "description": "The target's name, unique within the account.", "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "example": "billing"})
}

fn failed_operation() -> Value {
    json!({
        "operationId": "listFailedForwards",
        "tags": ["Twilio events"],
        "summary": "Events a target did not take (admin keys)",
        "description": "The log positions of events set aside after `events.forward_retry_secs`, oldest first (the most recent 10,000). The events stay in the log for its retention.",
        "security": bearer(),
        "parameters": [account_parameter()],
        "responses": {
            "200": {"description": "The positions.", "content": {"application/json": {"schema": {"type": "object", "required": ["failed"], "properties": {"failed": {"type": "array", "items": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"}}}, "additionalProperties": false}, "examples": examples::failed_forwards()}}},
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
            "404": problem("The account has no target of this name."),
            "429": r("RateLimited"), "503": r("StoreUnavailable")
        }
    })
}

fn replay_operation() -> Value {
    json!({
        "operationId": "replayFailedForwards",
        "tags": ["Twilio events"],
        "summary": "Send a target's set-aside events again (admin keys)",
        "description": "Queues every event set aside for the target to be sent again, oldest first, before its next events, each with a fresh retry budget; one the log no longer keeps is skipped. Events the target still does not take are set aside again.",
        "security": bearer(),
        "parameters": [account_parameter()],
        "responses": {
            "200": {"description": "How many were queued.", "content": {"application/json": {"schema": {"type": "object", "required": ["replaying"], "properties": {"replaying": {"type": "integer", "minimum": 0}}, "additionalProperties": false}, "examples": examples::replaying()}}},
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
            "404": problem("The account has no target of this name."),
            "429": r("RateLimited"), "503": r("StoreUnavailable")
        }
    })
}

pub(super) fn account_parameter() -> Value {
    json!({"name": "account_sid", "in": "query", "required": true, "description": "The account (configured on this relay).", "schema": {"type": "string", "pattern": "^AC[0-9a-fA-F]{32}$"}, "example": "AC3f9a2b7c1d4e5f60718293a4b5c6d7e8"})
}

fn list_targets_operation() -> Value {
    json!({
        "operationId": "listEventTargets",
        "tags": ["Twilio events"],
        "summary": "An account's forwarding targets (admin keys)",
        "description": "The targets of the configuration and those added through this API, without their secrets.",
        "security": bearer(),
        "parameters": [account_parameter()],
        "responses": {
            "200": {"description": "The targets.", "content": {"application/json": {"schema": {"type": "object", "required": ["targets"], "properties": {"targets": {"type": "array", "items": {"$ref": "#/components/schemas/EventTarget"}}}, "additionalProperties": false}, "examples": examples::event_targets()}}},
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"), "429": r("RateLimited"), "503": r("StoreUnavailable")
        }
    })
}

fn put_target_operation() -> Value {
    json!({
        "operationId": "putEventTarget",
        "tags": ["Twilio events"],
        "summary": "Add or replace a forwarding target (admin keys)",
        "description": "Every replica starts forwarding to it within a few seconds, from the oldest event the log keeps. Without a secret one is generated and shown in this answer only.",
        "security": bearer(),
        "parameters": [account_parameter()],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventTargetSettings"}, "examples": examples::event_target_settings()}}},
        "responses": {
            "200": {"description": "The target as kept.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventTarget"}, "examples": examples::event_target_created()}}},
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
            "409": problem("The configuration file defines a target of this name (`target-configured`): change it there."),
            "413": r("PayloadTooLarge"), "429": r("RateLimited"), "503": r("StoreUnavailable")
        }
    })
}

fn delete_target_operation() -> Value {
    json!({
        "operationId": "deleteEventTarget",
        "tags": ["Twilio events"],
        "summary": "Remove a forwarding target (admin keys)",
        "description": "Every replica stops forwarding to it within a few seconds.",
        "security": bearer(),
        "parameters": [account_parameter()],
        "responses": {
            "204": {"description": "Removed."},
            "400": r("BadRequest"), "401": r("Unauthorized"), "403": r("Forbidden"),
            "404": problem("No target of this name was added through the API."),
            "409": problem("The configuration file defines this target (`target-configured`)."),
            "429": r("RateLimited"), "503": r("StoreUnavailable")
        }
    })
}

fn event_feed_operation() -> Value {
    json!({
        "operationId": "openEventFeed",
        "tags": ["Twilio events"],
        "summary": "Follow an account's events live (app backends)",
        "description": "A WebSocket on which every event of the account's log that the filter matches arrives as one text frame `{\"position\": \"<ms>-<seq>\", \"event\": <envelope>}` (the envelope: bindings-schema/event-envelope.schema.json), oldest first: first those after `after` (or everything kept, without it), then each new one as it is kept. Reconnect with `after` set to the last position seen to miss nothing kept since; events past `events.retention_secs` are gone. The server pings; a client silent for two ping intervals is dropped; 1001 at shutdown (reconnect, to any replica).",
        "security": [{"bearer": []}],
        "parameters": [
            {"name": "account_sid", "in": "query", "required": true, "description": "The account whose events to follow (configured on this relay).", "schema": {"type": "string", "pattern": "^AC[0-9a-fA-F]{32}$"}, "example": "AC3f9a2b7c1d4e5f60718293a4b5c6d7e8"},
            {"name": "types", "in": "query", "required": false, "description": "Comma-separated event types to receive; `*` matches any run of characters. All types without it.", "schema": {"type": "string"}, "example": "participant-*,room-ended"},
            {"name": "resource", "in": "query", "required": false, "description": "Only events that name this resource SID (a room, participant, call…).", "schema": {"type": "string"}, "example": "RM1a2b3c4d5e6f708192a3b4c5d6e7f809"},
            {"name": "after", "in": "query", "required": false, "description": "The position of the last event received: the feed resumes after it.", "schema": {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$"}, "example": "1765101602114-0"}
        ],
        "responses": {
            "101": {"description": "Switching protocols: the feed is open."},
            "400": r("BadRequest"),
            "401": r("Unauthorized"),
            "403": problem("An access token instead of an admin key: the feed is for app backends."),
            "426": problem("The request is not a WebSocket upgrade this server can accept."),
            "503": problem("This replica holds all the sockets it may (`limits.max_sockets`); retry (another replica).")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_inside_the_document() {
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20);
        for r in all {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }
}
