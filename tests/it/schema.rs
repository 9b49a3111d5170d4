//! The JSON Schemas in `bindings-schema/` and the crate's own rules must agree: every
//! example a schema accepts, `BindingRequest::parse` (or `Binding`'s deserializer) accepts too,
//! and every example a schema refuses, the parser refuses; every event envelope the crate
//! writes passes the envelope's schema.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use callrelay::domain::{
    AccountSid, Binding, BindingId, BindingRequest, CloudEvent, DEFAULT_TTL_SECONDS, Identity,
    PushChannel, StatusCallback,
};
use jsonschema::{Registry, Validator};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
const ID_BASE: &str = "https://callrelay.dev/schemas/";
const REQUEST: &str = "binding-request.schema.json";
const BINDING: &str = "binding.schema.json";
const LIST: &str = "binding-list.schema.json";
const EVENT: &str = "event-envelope.schema.json";
const SCHEMAS: [&str; 4] = [REQUEST, BINDING, LIST, EVENT];

const ACCOUNT: &str = "AC3f9a2b7c1d4e5f60718293a4b5c6d7e8";
const APNS_TOKEN: &str = "7c4f1e2a9b3d5c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bindings-schema")
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn schema(name: &str) -> Value {
    read_json(&schema_dir().join(name))
}

/// A validator for one schema file. All three files are registered under their `$id`s, so the
/// cross-file `$ref`s resolve without network or file access; `format` (date-time) is asserted.
fn validator(name: &str) -> Validator {
    let documents: Vec<(String, Value)> = SCHEMAS
        .iter()
        .map(|file| (format!("{ID_BASE}{file}"), schema(file)))
        .collect();
    let registry = Registry::new()
        .extend(documents)
        .and_then(|builder| builder.prepare())
        .unwrap_or_else(|e| panic!("registering the schemas: {e}"));
    jsonschema::draft202012::options()
        .with_registry(&registry)
        .should_validate_formats(true)
        .build(&schema(name))
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

/// The schema's complaints about `instance`, one line each; empty when it validates.
fn schema_errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at `{}`", e, e.instance_path()))
        .collect()
}

/// The `*.json` files under `bindings-schema/examples/{sub}`, sorted; never empty, so a test
/// cannot pass by finding nothing to check.
fn examples(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = schema_dir().join("examples").join(sub);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no examples", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = format!(
                "examples/{sub}/{}",
                path.file_name().unwrap().to_string_lossy()
            );
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, bytes)
        })
        .collect()
}

fn example_json(name: &str, bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

fn assert_no_failures(what: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{what}: {} failure(s)\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_schema_is_a_valid_draft_2020_12_schema_that_compiles() {
    let mut found: Vec<String> = fs::read_dir(schema_dir())
        .expect("bindings-schema/")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".schema.json"))
        .collect();
    found.sort();
    let mut expected: Vec<String> = SCHEMAS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        found, expected,
        "every schema file in bindings-schema/ is checked here"
    );

    for name in SCHEMAS {
        let document = schema(name);
        if let Err(e) = jsonschema::draft202012::meta::validate(&document) {
            panic!("{name} is not a valid draft 2020-12 schema: {e}");
        }
        assert_eq!(document["$schema"], DRAFT_2020_12, "{name}: $schema");
        assert_eq!(document["$id"], format!("{ID_BASE}{name}"), "{name}: $id");
        validator(name);
    }
}

#[test]
fn the_schema_default_ttl_is_the_crate_default() {
    let request = schema(REQUEST);
    assert_eq!(
        request["properties"]["ttl_seconds"]["default"],
        json!(DEFAULT_TTL_SECONDS)
    );
}

#[test]
fn valid_request_examples_pass_the_schema_and_the_parser() {
    let schema = validator(REQUEST);
    let mut failures = Vec::new();
    for (name, bytes) in examples("request/valid") {
        let errors = schema_errors(&schema, &example_json(&name, &bytes));
        if !errors.is_empty() {
            failures.push(format!(
                "{name}: the schema refuses it: {}",
                errors.join("; ")
            ));
        }
        if let Err(e) = BindingRequest::parse(&bytes) {
            failures.push(format!("{name}: BindingRequest::parse refuses it: {e}"));
        }
    }
    assert_no_failures("valid request examples", failures);
}

#[test]
fn invalid_request_examples_fail_the_schema_and_the_parser() {
    let schema = validator(REQUEST);
    let mut failures = Vec::new();
    for (name, bytes) in examples("request/invalid") {
        if schema.is_valid(&example_json(&name, &bytes)) {
            failures.push(format!("{name}: the schema accepts it"));
        }
        if let Ok(parsed) = BindingRequest::parse(&bytes) {
            failures.push(format!(
                "{name}: BindingRequest::parse accepts it: {parsed:?}"
            ));
        }
    }
    assert_no_failures("invalid request examples", failures);
}

#[test]
fn valid_binding_examples_pass_the_schema_and_deserialize() {
    let schema = validator(BINDING);
    let mut failures = Vec::new();
    for (name, bytes) in examples("binding/valid") {
        let errors = schema_errors(&schema, &example_json(&name, &bytes));
        if !errors.is_empty() {
            failures.push(format!(
                "{name}: the schema refuses it: {}",
                errors.join("; ")
            ));
        }
        match serde_json::from_slice::<Binding>(&bytes) {
            Ok(binding) => {
                // What the crate writes back out must still match the schema.
                let written = serde_json::to_value(&binding).expect("a Binding serializes");
                let errors = schema_errors(&schema, &written);
                if !errors.is_empty() {
                    failures.push(format!(
                        "{name}: re-serialized, the schema refuses it: {}",
                        errors.join("; ")
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: does not deserialize as a Binding: {e}")),
        }
    }
    assert_no_failures("valid binding examples", failures);
}

#[test]
fn invalid_binding_examples_fail_the_schema() {
    let schema = validator(BINDING);
    let mut failures = Vec::new();
    for (name, bytes) in examples("binding/invalid") {
        if schema.is_valid(&example_json(&name, &bytes)) {
            failures.push(format!("{name}: the schema accepts it"));
        }
    }
    assert_no_failures("invalid binding examples", failures);
}

/// A stored binding as the relay would build it from a parsed request.
fn binding_from(request: BindingRequest, now: OffsetDateTime) -> Binding {
    let app = request
        .app
        .clone()
        .unwrap_or_else(|| match request.channel {
            PushChannel::Apns => "ios".to_owned(),
            PushChannel::Fcm => "android".to_owned(),
        });
    let id = request.id.clone().unwrap_or_else(BindingId::generate);
    let account_sid = request
        .account_sid
        .clone()
        .unwrap_or_else(|| AccountSid::parse(ACCOUNT).unwrap());
    let identity = request
        .identity
        .clone()
        .unwrap_or_else(|| Identity::parse("alice").unwrap());
    request.into_binding(id, account_sid, identity, app, now)
}

#[test]
fn bindings_built_from_valid_requests_pass_the_binding_schema() {
    let schema = validator(BINDING);
    let now = OffsetDateTime::now_utc();
    let mut failures = Vec::new();
    for (name, bytes) in examples("request/valid") {
        let request = BindingRequest::parse(&bytes)
            .unwrap_or_else(|e| panic!("{name}: BindingRequest::parse refuses it: {e}"));
        let binding = serde_json::to_value(binding_from(request, now)).expect("serializes");
        let errors = schema_errors(&schema, &binding);
        if !errors.is_empty() {
            failures.push(format!(
                "{name}: as a stored binding: {}",
                errors.join("; ")
            ));
        }
    }
    assert_no_failures("bindings built from valid requests", failures);
}

#[test]
fn a_generated_list_answer_passes_the_list_schema() {
    let list = validator(LIST);
    let now = OffsetDateTime::now_utc();
    let apns = binding_from(
        BindingRequest::parse(
            json!({"identity": "bob", "channel": "apns", "address": APNS_TOKEN})
                .to_string()
                .as_bytes(),
        )
        .expect("an apns request"),
        now,
    );
    let fcm = binding_from(
        BindingRequest::parse(
            json!({
                "id": "bob-pixel",
                "identity": "bob",
                "channel": "fcm",
                "address": "fKz8R2sWQkG3Yh1t9XcV0p:APA91bH7uQ2xZr5kLm8N-_w",
                "device_id": "pixel-8",
                "ttl_seconds": 3600,
            })
            .to_string()
            .as_bytes(),
        )
        .expect("an fcm request"),
        now,
    )
    .refreshed(now + Duration::from_secs(90));
    let connected_at = now.format(&Rfc3339).expect("formats as RFC 3339");
    let socket = json!({
        "id": uuid::Uuid::new_v4().simple().to_string(),
        "account_sid": ACCOUNT,
        "identity": "bob",
        "channel": "websocket",
        "device_id": "macbook",
        "connected_at": connected_at,
    });
    let answer = json!({
        "bindings": [serde_json::to_value(&apns).unwrap(), serde_json::to_value(&fcm).unwrap()],
        "sockets": [socket, {
            "id": "f3a1c2d4e5b64798a0b1c2d3e4f5a6b7",
            "account_sid": ACCOUNT,
            "identity": "bob",
            "channel": "websocket",
            "connected_at": connected_at,
        }],
    });
    let errors = schema_errors(&list, &answer);
    assert!(errors.is_empty(), "{answer:#}\n{}", errors.join("\n"));
    assert!(list.is_valid(&json!({"bindings": [], "sockets": []})));

    // The items are checked too, not just the envelope.
    let mut expired_field_missing = answer.clone();
    expired_field_missing["bindings"][0]
        .as_object_mut()
        .unwrap()
        .remove("expires_at");
    assert!(
        !list.is_valid(&expired_field_missing),
        "a binding without expires_at"
    );
    let mut socket_as_apns = answer.clone();
    socket_as_apns["sockets"][0]["channel"] = json!("apns");
    assert!(
        !list.is_valid(&socket_as_apns),
        "a socket whose channel is not websocket"
    );
    let mut socket_extra = answer.clone();
    socket_extra["sockets"][0]["node"] = json!("replica-1");
    assert!(
        !list.is_valid(&socket_extra),
        "a socket with an unknown member"
    );
    let mut no_sockets = answer;
    no_sockets.as_object_mut().unwrap().remove("sockets");
    assert!(!list.is_valid(&no_sockets), "an answer without sockets");
}

#[test]
fn an_apns_token_sent_in_upper_case_is_kept_in_lower_case() {
    let path = schema_dir().join("examples/request/valid/apns-token-uppercase-hex.json");
    let bytes = fs::read(&path).unwrap();
    let sent = read_json(&path)["address"].as_str().unwrap().to_owned();
    assert!(sent.bytes().any(|b| b.is_ascii_uppercase()), "{sent}");
    let request = BindingRequest::parse(&bytes).unwrap();
    assert_eq!(request.address, sent.to_ascii_lowercase());
    let stored = serde_json::to_value(binding_from(request, OffsetDateTime::now_utc())).unwrap();
    assert!(validator(BINDING).is_valid(&stored), "{stored:#}");
}

#[test]
fn event_examples_pass_or_fail_the_envelope_schema_as_named() {
    let validator = validator(EVENT);
    let mut failures = Vec::new();
    for (name, bytes) in examples("event/valid") {
        let errors = schema_errors(&validator, &example_json(&name, &bytes));
        if !errors.is_empty() {
            failures.push(format!("{name}: {}", errors.join("; ")));
        }
    }
    for (name, bytes) in examples("event/invalid") {
        if validator.is_valid(&example_json(&name, &bytes)) {
            failures.push(format!("{name}: the schema accepts it"));
        }
    }
    assert_no_failures("event examples", failures);
}

#[test]
fn envelopes_the_crate_writes_pass_the_envelope_schema() {
    let validator = validator(EVENT);
    let now = OffsetDateTime::now_utc();
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let callbacks = [
        pairs(&[
            ("AccountSid", ACCOUNT),
            ("StatusCallbackEvent", "recording-completed"),
            ("RoomSid", "RM1"),
            ("RecordingSid", "RT1"),
            ("SourceSid", "MT1"),
            ("Timestamp", "2026-12-07T10:00:00Z"),
            ("Codec", "VP8"),
        ]),
        // Nothing but the account; a name repeated; an event callrelay does not know.
        pairs(&[("AccountSid", ACCOUNT)]),
        pairs(&[
            ("AccountSid", ACCOUNT),
            ("StatusCallbackEvent", "room-renamed"),
            ("Tag", "a"),
            ("Tag", "b"),
        ]),
    ];
    let mut failures = Vec::new();
    for params in callbacks {
        let callback = StatusCallback::parse(params).unwrap();
        let envelope: Value = serde_json::from_slice(&callback.envelope(now).to_json()).unwrap();
        let errors = schema_errors(&validator, &envelope);
        if !errors.is_empty() {
            failures.push(format!("{envelope}: {}", errors.join("; ")));
        }
    }
    let batch = format!(
        r#"[{{"specversion":"1.0","type":"com.twilio.voice.insights.call-summary.partial","source":"/v1/Voice/CA1/Summary","id":"EZ1","time":"2026-12-07T10:00:00Z","data":"{{\"call_sid\":\"CA1\",\"account_sid\":\"{ACCOUNT}\"}}"}},{{"id":"EZ2","type":"x"}}]"#
    );
    let account = AccountSid::parse(ACCOUNT).unwrap();
    for event in CloudEvent::parse_batch(batch.as_bytes()).unwrap() {
        let envelope: Value =
            serde_json::from_slice(&event.envelope(&account, now).to_json()).unwrap();
        let errors = schema_errors(&validator, &envelope);
        if !errors.is_empty() {
            failures.push(format!("{envelope}: {}", errors.join("; ")));
        }
    }
    assert_no_failures("envelopes", failures);
}
