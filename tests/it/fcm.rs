//! The FCM HTTP v1 channel through the real webhook, against the mock FCM: the message it
//! sends, the OAuth token's life, what Google's answers do to bindings, and the metrics.

use std::time::{Duration, Instant};

use callrelay::domain::PushChannel;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use callrelay_testkit::fcm::{MockFcm, Reply};

const PROJECT: &str = "callrelay-test";
const FCM_TOKEN: &str = "dG9rZW4tb25l:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx";
const FCM_TOKEN_2: &str = "ZXhhbXBsZS0y:APA91bGQ0Tq8b5XkV9vQxWm-2nR7sLpK3jYt";
const WAIT: Duration = Duration::from_secs(5);

/// callrelay with one FCM app, `android`, served by a fresh mock.
async fn setup_with(
    extra_settings: &str,
    tweak: impl FnOnce(&mut TestConfig),
) -> (TestApp, MockFcm) {
    let mock = MockFcm::start().await;
    let mut config = TestConfig {
        extra: format!("{}{extra_settings}\n", mock.app_toml("android", PROJECT)),
        ..TestConfig::default()
    };
    tweak(&mut config);
    (spawn_with(config).await, mock)
}

async fn setup() -> (TestApp, MockFcm) {
    setup_with("", |_| {}).await
}

async fn binding_exists(app: &TestApp, identity: &str, id: &str) -> bool {
    let r = app.get_binding(identity, id).await;
    match r.status {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        other => panic!("GET binding: {other} {}", r.text),
    }
}

fn push_result(app: &str, result: &str) -> String {
    format!("callrelay_push_results_total{{app=\"{app}\",channel=\"fcm\",result=\"{result}\"}}")
}

/// The value of one metric series, if it exists.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_data_map_carries_every_member_of_the_payload_as_a_string() {
    let (app, mock) = setup().await;
    app.register_fcm("bob", FCM_TOKEN).await;
    let body = format!(
        r#"{{"twi_account_sid":"{ACCOUNT}","twi_to":"client:bob","twi_from":"client:alice",
            "twi_message_id":"RMdata1","twi_message_type":"twilio.voice.call",
            "twi_call_sid":"CA0123","twi_bridge_token":"eyJhbGciOiJkaXIi.bridge",
            "twi_params":"foo=bar%20baz&x=%C3%A9&plus=a+b",
            "twi_answer_timeout": 30, "ratio": 1.5e2, "video": false, "verified": true,
            "carrier": null, "escaped": "line\nbreak \"q\" \u00e9",
            "nested": {{ "z": [1, "two", {{"three": 3}}], "a": {{}} }}, "list": [ "x" , 2 ]}}"#
    );
    let r = app.webhook(body.into_bytes()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 1, "failed": 0, "removed": 0}));

    let sent = mock.sent();
    assert_eq!(sent.len(), 1, "one request for one binding");
    let request = &sent[0];
    assert!(request.authorised);
    assert_eq!(request.project, PROJECT, "the project comes from the key");
    assert_eq!(request.headers["content-type"], "application/json");
    let message = request.message();
    assert_eq!(
        message,
        &json!({
            "token": FCM_TOKEN,
            "data": {
                "twi_account_sid": ACCOUNT,
                "twi_to": "client:bob",
                "twi_from": "client:alice",
                "twi_message_id": "RMdata1",
                "twi_message_type": "twilio.voice.call",
                "twi_call_sid": "CA0123",
                "twi_bridge_token": "eyJhbGciOiJkaXIi.bridge",
                "twi_params": "foo=bar%20baz&x=%C3%A9&plus=a+b",
                "twi_answer_timeout": "30",
                "ratio": "1.5e2",
                "video": "false",
                "verified": "true",
                "carrier": "null",
                "escaped": "line\nbreak \"q\" é",
                "nested": r#"{"z":[1,"two",{"three":3}],"a":{}}"#,
                "list": r#"["x",2]"#
            },
            "android": {"priority": "HIGH", "ttl": "30s"}
        })
    );
    assert!(mock.rejections().is_empty(), "{:?}", mock.rejections());
}

#[tokio::test]
async fn a_configured_ttl_is_sent_and_the_project_can_be_overridden() {
    let (app, mock) = setup_with("ttl_secs = 5\nproject_id = \"other-project\"", |_| {}).await;
    app.register_fcm("bob", FCM_TOKEN).await;
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let sent = mock.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].project, "other-project");
    assert_eq!(
        sent[0].message()["android"],
        json!({"priority": "HIGH", "ttl": "5s"})
    );
}

#[tokio::test]
async fn one_token_fetch_serves_fifty_concurrent_sends() {
    let (app, mock) = setup().await;
    app.register_fcm("bob", FCM_TOKEN).await;
    let answers = futures_util::future::join_all((0..50).map(|_| app.notify("bob"))).await;
    for r in &answers {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(mock.messages().len(), 50);
    assert!(mock.sent().iter().all(|s| s.authorised));
    assert_eq!(mock.token_fetches(), 1, "{:?}", mock.rejections());
    assert_eq!(
        mock.connection_count(),
        1,
        "one HTTP/2 connection by default"
    );
    let bearers: std::collections::HashSet<String> = mock
        .sent()
        .iter()
        .map(|s| s.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(bearers.len(), 1, "every send presents the same token");
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "callrelay_push_auth_tokens_total{app=\"android\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, &push_result("android", "success")),
        Some(50.0)
    );
}

#[tokio::test]
async fn the_token_is_cached_across_webhooks() {
    let (app, mock) = setup().await;
    app.register_fcm("bob", FCM_TOKEN).await;
    for _ in 0..3 {
        assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    }
    assert_eq!(mock.messages().len(), 3);
    assert_eq!(mock.token_fetches(), 1);
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_and_the_send_goes_through() {
    let (app, mock) = setup().await;
    app.register_fcm("bob", FCM_TOKEN).await;
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    assert_eq!(mock.token_fetches(), 1);

    mock.revoke_tokens();
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["delivered"], 1);
    assert_eq!(mock.token_fetches(), 2, "exactly one renewal");
    let sent = mock.sent();
    let authorised: Vec<bool> = sent.iter().map(|s| s.authorised).collect();
    assert_eq!(authorised, vec![true, false, true]);
    assert_ne!(
        sent[1].headers["authorization"], sent[2].headers["authorization"],
        "the retry presents the new token"
    );
    // The new token is cached in turn.
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    assert_eq!(mock.token_fetches(), 2);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, &push_result("android", "UNAUTHENTICATED")),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, &push_result("android", "success")),
        Some(3.0)
    );
}

#[tokio::test]
async fn a_token_refused_even_after_renewal_is_a_failure_that_keeps_the_binding() {
    let (app, mock) = setup().await;
    let id = app.register_fcm("bob", FCM_TOKEN).await.id.to_string();
    mock.refuse_all_tokens();
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 0, "failed": 1, "removed": 0}));
    assert_eq!(mock.token_fetches(), 2, "one renewal, no more");
    assert_eq!(mock.sent_count(), 2);
    assert!(binding_exists(&app, "bob", &id).await);
}

#[tokio::test]
async fn a_failing_token_endpoint_is_reported_and_nothing_is_sent() {
    let (app, mock) = setup().await;
    let id = app.register_fcm("bob", FCM_TOKEN).await.id.to_string();
    mock.fail_token_requests(500);
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(mock.sent_count(), 0);
    assert!(binding_exists(&app, "bob", &id).await);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, &push_result("android", "token_error")),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "callrelay_push_auth_tokens_total{app=\"android\"}"
        ),
        None,
        "no token was obtained"
    );
}

#[tokio::test]
async fn unregistered_removes_the_binding() {
    let (app, mock) = setup().await;
    let id = app.register_fcm("bob", FCM_TOKEN).await.id.to_string();
    mock.answer([Reply::error("UNREGISTERED")]);
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 0, "failed": 0, "removed": 1}));
    assert!(!binding_exists(&app, "bob", &id).await);
    let next = app.notify("bob").await;
    assert_eq!(next.status, StatusCode::NOT_FOUND);
    assert_eq!(next.body["type"], "urn:callrelay:problem:no-binding");
    assert_eq!(mock.sent_count(), 1, "nothing sent to a removed binding");
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, &push_result("android", "UNREGISTERED")),
        Some(1.0)
    );
}

#[tokio::test]
async fn sender_id_mismatch_removes_the_binding() {
    let (app, mock) = setup().await;
    let id = app.register_fcm("bob", FCM_TOKEN).await.id.to_string();
    mock.answer([Reply::error("SENDER_ID_MISMATCH")]);
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(r.body["removed"], 1);
    assert!(!binding_exists(&app, "bob", &id).await);
}

#[tokio::test]
async fn invalid_argument_fails_and_keeps_the_binding() {
    let (app, mock) = setup().await;
    let id = app.register_fcm("bob", FCM_TOKEN).await.id.to_string();
    mock.answer([Reply::error("INVALID_ARGUMENT")]);
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 0, "failed": 1, "removed": 0}));
    assert_eq!(mock.sent_count(), 1, "not retried");
    assert!(binding_exists(&app, "bob", &id).await);
    // The binding still works.
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, &push_result("android", "INVALID_ARGUMENT")),
        Some(1.0)
    );
}

#[tokio::test]
async fn unavailable_with_retry_after_is_retried_after_the_delay() {
    let (app, mock) = setup().await;
    app.register_fcm("bob", FCM_TOKEN).await;
    mock.answer([Reply::error("UNAVAILABLE").retry_after(1)]);
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["delivered"], 1);
    let sent = mock.sent();
    assert_eq!(sent.len(), 2);
    let gap = sent[1].at - sent[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert_eq!(sent[0].body, sent[1].body, "the same message again");
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, &push_result("android", "UNAVAILABLE")),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, &push_result("android", "success")),
        Some(1.0)
    );
}

#[tokio::test]
async fn internal_errors_are_retried_on_the_backoff_schedule() {
    let (app, mock) = setup().await;
    app.register_fcm("bob", FCM_TOKEN).await;
    mock.answer([Reply::error("INTERNAL"), Reply::error("INTERNAL")]);
    let started = Instant::now();
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(mock.sent_count(), 3);
    assert!(started.elapsed() < Duration::from_secs(1), "short backoff");
}

#[tokio::test]
async fn quota_exceeded_with_retry_after_past_the_deadline_fails_at_once() {
    let (app, mock) = setup().await;
    let id = app.register_fcm("bob", FCM_TOKEN).await.id.to_string();
    mock.answer([Reply::error("QUOTA_EXCEEDED").retry_after(30)]);
    let started = Instant::now();
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 0, "failed": 1, "removed": 0}));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered in {:?}, not after waiting",
        started.elapsed()
    );
    assert_eq!(mock.sent_count(), 1);
    assert!(binding_exists(&app, "bob", &id).await);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, &push_result("android", "QUOTA_EXCEEDED")),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_send_with_no_answer_before_the_deadline_is_a_timeout() {
    let (app, mock) = setup_with("", |c| c.deadline_ms = 400).await;
    let id = app.register_fcm("bob", FCM_TOKEN).await.id.to_string();
    // Fetch the token first, so the slow answer is the only thing the deadline covers.
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    mock.answer([Reply::ok().delay(Duration::from_secs(2))]);
    let started = Instant::now();
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert!(binding_exists(&app, "bob", &id).await);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, &push_result("android", "timeout")),
        Some(1.0)
    );
}

#[tokio::test]
async fn connection_errors_are_retried_until_the_deadline_then_reported() {
    let mock = MockFcm::start().await;
    // Nothing listens there: every connection attempt is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let extra = format!(
        "\n[[apps]]\nname = \"android\"\nchannel = \"fcm\"\nservice_account_file = \"{}\"\nbase_url = \"{dead_url}\"\nca_file = \"{}\"\n",
        mock.service_account_file(PROJECT).display(),
        mock.ca.ca_file.display()
    );
    let app = spawn_with(TestConfig {
        extra,
        deadline_ms: 500,
        ..TestConfig::default()
    })
    .await;
    app.register_fcm("bob", FCM_TOKEN).await;
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    let metrics = app.metrics().await;
    let attempts = metric(&metrics, &push_result("android", "connection_error")).unwrap_or(0.0);
    assert!(attempts >= 2.0, "retried: {attempts} attempts\n{metrics}");
}

#[tokio::test]
async fn third_party_auth_error_is_reported_as_failed() {
    let (app, mock) = setup().await;
    let id = app.register_fcm("bob", FCM_TOKEN).await.id.to_string();
    mock.answer([Reply::error("THIRD_PARTY_AUTH_ERROR")]);
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 0, "failed": 1, "removed": 0}));
    assert_eq!(mock.sent_count(), 1, "neither retried nor a token renewal");
    assert_eq!(mock.token_fetches(), 1);
    assert!(binding_exists(&app, "bob", &id).await);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, &push_result("android", "THIRD_PARTY_AUTH_ERROR")),
        Some(1.0)
    );
}

#[tokio::test]
async fn data_over_fcms_limit_is_refused_and_nothing_is_sent() {
    let (app, mock) = setup().await;
    let id = app.register_fcm("bob", FCM_TOKEN).await.id.to_string();
    let mut body: Value = serde_json::from_slice(&payload(ACCOUNT, "bob")).unwrap();
    body["twi_params"] = json!(format!("big={}", "x".repeat(4096)));
    let r = app.webhook(serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(mock.sent_count(), 0);
    assert_eq!(mock.token_fetches(), 0);
    assert!(binding_exists(&app, "bob", &id).await);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, &push_result("android", "payload_too_large")),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_successful_push_extends_the_binding() {
    let (app, _mock) = setup().await;
    let id = app
        .register(
            "bob",
            PushChannel::Fcm,
            FCM_TOKEN,
            json!({"ttl_seconds": 60}),
        )
        .await
        .id
        .to_string();
    let get = || async {
        app.api(
            Method::GET,
            &format!("/v1/bindings/{id}"),
            &token("bob"),
            None,
        )
        .await
        .body
    };
    let before = get().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    assert!(
        eventually(WAIT, || async {
            get().await["expires_at"] != before["expires_at"]
        })
        .await,
        "expiry refreshed"
    );
}

#[tokio::test]
async fn two_fcm_apps_for_two_projects_side_by_side() {
    let mock = MockFcm::start().await;
    let extra = format!(
        "{}{}",
        mock.app_toml("android", "project-a"),
        mock.app_toml("android-beta", "project-b")
    );
    let app = spawn_with(TestConfig {
        extra,
        ..TestConfig::default()
    })
    .await;
    // With two FCM apps a binding must name its app.
    let r = app
        .api(
            Method::POST,
            "/v1/bindings",
            &token("bob"),
            Some(json!({"channel": "fcm", "address": FCM_TOKEN})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["type"], "urn:callrelay:problem:app-not-configured");
    app.register(
        "bob",
        PushChannel::Fcm,
        FCM_TOKEN,
        json!({"app": "android"}),
    )
    .await;
    app.register(
        "bob",
        PushChannel::Fcm,
        FCM_TOKEN_2,
        json!({"app": "android-beta"}),
    )
    .await;

    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 2, "failed": 0, "removed": 0}));
    let mut routed: Vec<(String, String)> = mock
        .sent()
        .iter()
        .map(|s| {
            (
                s.project.clone(),
                s.message()["token"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    routed.sort();
    assert_eq!(
        routed,
        vec![
            ("project-a".to_owned(), FCM_TOKEN.to_owned()),
            ("project-b".to_owned(), FCM_TOKEN_2.to_owned()),
        ]
    );
    assert_eq!(mock.token_fetches(), 2, "one token per service account");
    assert!(mock.rejections().is_empty(), "{:?}", mock.rejections());
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, &push_result("android", "success")),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, &push_result("android-beta", "success")),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_websocket_and_an_fcm_binding_both_receive() {
    let (app, mock) = setup().await;
    app.register_fcm("bob", FCM_TOKEN).await;
    let mut socket = app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let r = app.webhook(body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 2, "failed": 0, "removed": 0}));
    assert_eq!(socket.next_text(WAIT).await.unwrap().as_bytes(), &body[..]);
    let messages = mock.messages();
    assert_eq!(messages.len(), 1);
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        messages[0]["data"], sent,
        "every member, all strings already"
    );
}

#[tokio::test]
async fn several_connections_are_used_in_turn() {
    let (app, mock) = setup_with("connections = 4", |_| {}).await;
    app.register_fcm("bob", FCM_TOKEN).await;
    for _ in 0..8 {
        assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    }
    assert_eq!(mock.messages().len(), 8);
    assert_eq!(mock.connection_count(), 4);
    assert_eq!(mock.token_fetches(), 1);
}

mod check_config {
    use std::process::Command;

    use super::*;

    fn check(apps: &str) -> (Option<i32>, String, String) {
        let path = callrelay_testkit::tls::temp_file("check.toml", apps);
        let out = Command::new(env!("CARGO_BIN_EXE_callrelay"))
            .args(["check-config", "--config"])
            .arg(&path)
            .env_remove("CALLRELAY_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// An app whose key file holds `json`, and the file (removed when dropped).
    fn app_with_key_file(json: &str) -> (String, tempfile::TempPath) {
        let file = callrelay_testkit::tls::temp_file("firebase.json", json);
        let app = format!(
            "[[apps]]\nname = \"android\"\nchannel = \"fcm\"\nservice_account_file = \"{}\"\n",
            file.display()
        );
        (app, file)
    }

    #[tokio::test]
    async fn accepts_a_good_key_and_names_each_broken_one_without_printing_it() {
        let mock = MockFcm::start().await;
        let good = mock.service_account_json(PROJECT);
        let (app, _key) = app_with_key_file(&good);
        let (code, stdout, stderr) = check(&app);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stdout.contains("configuration OK"), "{stdout}");

        let mut missing: Value = serde_json::from_str(&good).unwrap();
        missing.as_object_mut().unwrap().remove("client_email");
        let mut bad_key: Value = serde_json::from_str(&good).unwrap();
        bad_key["private_key"] = json!(callrelay_testkit::fcm::PRIVATE_KEY.replace("MII", "MIX"));
        let truncated = &good[..good.len() / 2];
        let cases = [
            (truncated.to_owned(), "is not valid JSON"),
            (missing.to_string(), "`client_email` is missing"),
            (
                bad_key.to_string(),
                "`private_key` is not an RSA private key",
            ),
        ];
        for (json, expected) in cases {
            let (app, _key) = app_with_key_file(&json);
            let (code, stdout, stderr) = check(&app);
            assert_eq!(code, Some(2), "{expected}: {stdout}{stderr}");
            assert!(
                stderr.contains("apps[0].service_account_file: ") && stderr.contains(expected),
                "{expected}: {stderr}"
            );
            let all = format!("{stdout}{stderr}");
            assert!(
                !all.contains("PRIVATE KEY") && !all.contains("MII"),
                "the key leaks: {all}"
            );
        }

        // Inline, the key is named as the inline setting.
        let inline = format!(
            "[[apps]]\nname = \"android\"\nchannel = \"fcm\"\nservice_account = '''{}'''\n",
            missing
        );
        let (code, _, stderr) = check(&inline);
        assert_eq!(code, Some(2));
        assert!(
            stderr.contains("apps[0].service_account: ") && !stderr.contains("MII"),
            "{stderr}"
        );
    }
}

/// A binding to `FCM_TOKEN`, for sends straight through the channel.
fn direct_target() -> callrelay::domain::Binding {
    use callrelay::domain::{AccountSid, Binding, BindingId, Identity, PushChannel};
    let now = time::OffsetDateTime::now_utc();
    Binding {
        id: BindingId::parse("direct").unwrap(),
        account_sid: AccountSid::parse(ACCOUNT).unwrap(),
        identity: Identity::parse("bob").unwrap(),
        channel: PushChannel::Fcm,
        address: FCM_TOKEN.into(),
        app: "android".into(),
        apns_environment: None,
        push_type: None,
        device_id: None,
        ttl_seconds: 3600,
        created_at: now,
        updated_at: now,
        expires_at: now + time::Duration::hours(1),
    }
}

/// An FCM channel for `mock`'s project, built as the core builds it.
fn direct_channel(
    mock: &MockFcm,
    connections: usize,
) -> std::sync::Arc<callrelay::channels::fcm::FcmChannel> {
    let config = callrelay::config::from_toml_str(&format!(
        "[[apps]]\nname = \"android\"\nchannel = \"fcm\"\nservice_account_file = \"{}\"\nbase_url = \"{}\"\nca_file = \"{}\"\nconnections = {connections}\n",
        mock.service_account_file(PROJECT).display(),
        mock.url(),
        mock.ca.ca_file.display()
    ))
    .unwrap();
    let callrelay::config::AppSettings::Fcm(settings) = &config.apps[0].settings else {
        panic!("an FCM app");
    };
    std::sync::Arc::new(
        callrelay::channels::fcm::FcmChannel::new(
            "android",
            settings,
            std::sync::Arc::new(callrelay::metrics::Metrics::new()),
        )
        .unwrap(),
    )
}

/// `count` sends straight through `channel`, `in_flight` at a time.
async fn send_many(
    channel: &std::sync::Arc<callrelay::channels::fcm::FcmChannel>,
    target: &callrelay::domain::Binding,
    notification: &callrelay::domain::CallNotification,
    count: usize,
    in_flight: usize,
) -> Vec<callrelay::channels::Outcome> {
    use callrelay::channels::PushApp;
    use futures_util::StreamExt;
    futures_util::stream::iter(0..count)
        .map(|_| async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            channel.push(target, notification, deadline).await.outcome
        })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

/// A success's body is read to its end. An answer dropped unread resets its HTTP/2 stream;
/// with many in flight, the client forgets some of those streams before their body arrives,
/// counts the late data as the server's error, and after 1024 of them closes the connection,
/// failing every push on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_sends_leave_no_cancelled_streams() {
    use callrelay::channels::Outcome;
    use callrelay::domain::CallNotification;

    const SENDS: usize = 2_000;
    let mock = MockFcm::start().await;
    let notification =
        CallNotification::parse(bytes::Bytes::from(payload(ACCOUNT, "bob"))).unwrap();
    let target = direct_target();
    let channel = direct_channel(&mock, 1);
    let outcomes = send_many(&channel, &target, &notification, SENDS, 64).await;
    assert!(outcomes.iter().all(|o| *o == Outcome::Delivered));
    assert_eq!(mock.sent_count(), SENDS, "no send was retried");
    assert_eq!(
        mock.connection_count(),
        1,
        "one connection carried them all"
    );
    assert_eq!(mock.unread_answers(), 0, "every answer was read to its end");
}

/// An `[[apps]]` entry for `android` without a key file, sending through `mock`.
fn keyless_app(mock: &MockFcm, settings: &str) -> String {
    format!(
        "\n[[apps]]\nname = \"android\"\nchannel = \"fcm\"\nbase_url = \"{}\"\nca_file = \"{}\"\n{settings}\n",
        mock.url(),
        mock.ca.ca_file.display(),
    )
}

/// GKE Workload Identity and Compute Engine: no key file, the metadata server's token for the
/// workload's own service account (asked with `Metadata-Flavor: Google` and FCM's scope).
#[tokio::test]
async fn a_keyless_app_gets_its_token_from_the_metadata_server() {
    let mock = MockFcm::start().await;
    let settings = format!(
        "credentials = \"metadata_server\"\nmetadata_url = \"{}\"\nproject_id = \"{PROJECT}\"",
        mock.url()
    );
    let app = spawn_with(TestConfig {
        extra: keyless_app(&mock, &settings),
        ..TestConfig::default()
    })
    .await;
    app.register_fcm("bob", FCM_TOKEN).await;
    for _ in 0..2 {
        let r = app.notify("bob").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["delivered"], 1);
    }
    let sent = mock.sent();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|s| s.authorised && s.project == PROJECT));
    assert_eq!(mock.token_fetches(), 1, "the token is cached");
    assert!(mock.rejections().is_empty(), "{:?}", mock.rejections());
}

/// Application default credentials: the key file `GOOGLE_APPLICATION_CREDENTIALS` names is
/// used as if it were `service_account_file`, its project included.
#[tokio::test]
async fn application_default_credentials_read_the_file_google_application_credentials_names() {
    let mock = MockFcm::start().await;
    let key_file = mock.service_account_file(PROJECT);
    let config = TestConfig {
        extra: keyless_app(&mock, "credentials = \"application_default\""),
        ..TestConfig::default()
    };
    let app = ProcessApp::start_with_env(
        &config,
        &[("GOOGLE_APPLICATION_CREDENTIALS", key_file.to_str().unwrap())],
    )
    .await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/bindings", app.base))
        .bearer_auth(token("bob"))
        .json(&json!({"channel": "fcm", "address": FCM_TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body = payload(ACCOUNT, "bob");
    let url = format!("{}{}", app.base, webhook_path(&body));
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .header("x-twilio-signature", sign(AUTH_TOKEN, &url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sent = mock.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].authorised);
    assert_eq!(sent[0].project, PROJECT, "the key file names the project");
    assert!(mock.rejections().is_empty(), "{:?}", mock.rejections());
}
