//! Ringing right (README, "Ringing right"): what goes out as a VoIP push, one ring per
//! device, acknowledgements, no late rings and no missed calls.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::apns::{KEY_ID, TEAM, TOPIC, start};
use crate::helpers::*;
use callrelay::domain::PushChannel;
use callrelay_testkit::apns::{MockApns, Reply, TeamKey};
use callrelay_testkit::fcm::MockFcm;

/// `body` with its `twi_message_type` set to `kind`.
fn of_type(body: &[u8], kind: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    v["twi_message_type"] = json!(kind);
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn only_a_call_goes_out_as_a_voip_push_and_other_types_reach_sockets_and_fcm_unmodified() {
    let key = TeamKey::generate(TEAM, KEY_ID);
    let apns = MockApns::token_auth(&[&key]).await;
    let fcm = MockFcm::start().await;
    let app = spawn_with(TestConfig {
        extra: apns.token_app("ios", TOPIC, &key, "") + &fcm.app_toml("android", "voice-project"),
        ..TestConfig::default()
    })
    .await;
    app.register_apns("bob", APNS_TOKEN).await;
    app.register_fcm("bob", "fcm-token:bob-pixel").await;
    let mut socket = app.connect_ws("bob").await;

    for kind in ["twilio.voice.cancel", "twilio.voice.something-new"] {
        let body = of_type(&payload(ACCOUNT, "bob"), kind);
        let r = app.webhook(body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text);
        assert_eq!(
            r.body,
            json!({"delivered": 2, "failed": 0, "removed": 0, "skipped": 1}),
            "{kind}"
        );
        let frame = socket.next_text(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            frame.as_bytes(),
            &body[..],
            "{kind}: the socket gets Twilio's bytes"
        );
        let last = fcm.messages().pop().unwrap();
        assert_eq!(last["data"]["twi_message_type"], kind);
    }
    assert!(
        apns.requests().is_empty(),
        "no APNs push for a notification that is not a call"
    );
    let m = app.metrics().await;
    assert!(
        m.contains(r#"callrelay_deliveries_total{channel="apns",outcome="skipped"} 2"#),
        "{m}"
    );
    assert!(
        !m.contains(r#"result="skipped_not_a_call""#),
        "a skip is not a push attempt: {m}"
    );
    assert!(
        m.contains(r#"callrelay_skipped_targets_total{rule="not_a_call"} 2"#),
        "{m}"
    );

    // A call still rings as a VoIP push.
    let call = payload(ACCOUNT, "bob");
    assert_eq!(app.webhook(call.clone()).await.status, StatusCode::OK);
    let pushes = apns.requests();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].header("apns-push-type"), "voip");
    assert_eq!(pushes[0].body, call);
}

#[tokio::test]
async fn a_payload_without_a_type_is_not_a_voip_push() {
    let s = start("").await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    let mut v: Value = serde_json::from_slice(&payload(ACCOUNT, "bob")).unwrap();
    v.as_object_mut().unwrap().remove("twi_message_type");
    let r = s.app.webhook(serde_json::to_vec(&v).unwrap()).await;
    // Skipped by rule, not failed: Twilio is not asked to retry.
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["skipped"], 1);
    assert!(s.apns.requests().is_empty());
}

/// Registers Bob's regular (not PushKit) APNs token for `push_type` pushes, and his PushKit
/// token beside it.
async fn regular_and_voip(app: &TestApp, push_type: &str) {
    app.register(
        "bob",
        PushChannel::Apns,
        APNS_TOKEN_2,
        json!({"push_type": push_type}),
    )
    .await;
    app.register_apns("bob", APNS_TOKEN).await;
}

#[tokio::test]
async fn an_app_may_send_other_types_to_regular_tokens_as_background_or_alert_pushes_never_voip() {
    let s = start(r#"non_call_push = "background""#).await;
    regular_and_voip(&s.app, "background").await;
    let cancel = of_type(&payload(ACCOUNT, "bob"), "twilio.voice.cancel");
    let r = s.app.webhook(cancel.clone()).await;
    // The PushKit token is skipped even so: it takes VoIP pushes only, and Apple would
    // answer DeviceTokenNotForTopic (and the binding would go) to anything else.
    assert_eq!(
        r.body,
        json!({"delivered": 1, "failed": 0, "removed": 0, "skipped": 1})
    );
    let pushes = s.apns.requests();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].device_token, APNS_TOKEN_2);
    assert_eq!(pushes[0].header("apns-push-type"), "background");
    assert_eq!(pushes[0].header("apns-topic"), TOPIC, "not the .voip topic");
    assert_eq!(pushes[0].header("apns-priority"), "5");
    let sent: Value = serde_json::from_slice(&pushes[0].body).unwrap();
    assert_eq!(sent["aps"], json!({"content-available": 1}));
    assert_eq!(sent["twi_message_type"], "twilio.voice.cancel");

    let s = start(
        r#"non_call_push = "alert"
non_call_alert_template = "{from} hung up""#,
    )
    .await;
    regular_and_voip(&s.app, "alert").await;
    assert_eq!(s.app.webhook(cancel).await.status, StatusCode::OK);
    let pushes = s.apns.requests();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].device_token, APNS_TOKEN_2);
    assert_eq!(pushes[0].header("apns-push-type"), "alert");
    assert_eq!(pushes[0].header("apns-topic"), TOPIC);
    let sent: Value = serde_json::from_slice(&pushes[0].body).unwrap();
    assert_eq!(sent["aps"]["alert"]["body"], "alice hung up");

    // By default a regular token is skipped too.
    let s = start("").await;
    regular_and_voip(&s.app, "alert").await;
    let cancel = of_type(&payload(ACCOUNT, "bob"), "twilio.voice.cancel");
    let r = s.app.webhook(cancel).await;
    assert_eq!(r.body["skipped"], 2);
    assert!(s.apns.requests().is_empty());
}

/// A socket for `identity` opened with `query` (beside the access token).
async fn open(app: &TestApp, identity: &str, query: &str) -> WsClient {
    let q = format!("access_token={}&{query}", token(identity));
    WsClient::connect(&app.base, "", Some(&q))
        .await
        .expect("WebSocket connects")
}

fn acks(metrics: &str, outcome: &str) -> u64 {
    let series = format!(r#"callrelay_websocket_acks_total{{outcome="{outcome}"}} "#);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_opened_with_ack_acknowledges_and_the_trace_and_metrics_say_so() {
    let app = spawn_with(TestConfig::default()).await;
    let mut socket = open(&app, "bob", "ack=1&device_id=laptop").await;
    let body = payload(ACCOUNT, "bob");
    let call = crate::calls::call_sid(&body);
    let id = serde_json::from_slice::<Value>(&body).unwrap()["twi_message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.webhook(body.clone()).await.status, StatusCode::OK);
    // With ack=1 the frame is still exactly Twilio's bytes.
    let frame = socket.next_text(Duration::from_secs(5)).await.unwrap();
    assert_eq!(frame.as_bytes(), &body[..]);

    let ack = json!({"type": "ack", "twi_message_id": id}).to_string();
    socket.send_text(&ack).await.unwrap();
    socket.send_text(&ack).await.unwrap();
    socket
        .send_text(r#"{"type":"ack","twi_message_id":"RMnever-sent"}"#)
        .await
        .unwrap();
    socket.send_text("hello").await.unwrap();
    let counted = eventually(Duration::from_secs(5), || async {
        let m = app.metrics().await;
        acks(&m, "acknowledged") == 1
            && acks(&m, "repeated") == 1
            && acks(&m, "unknown") == 1
            && acks(&m, "invalid") == 1
    })
    .await;
    assert!(counted, "{}", app.metrics().await);

    // The acknowledgement joins the call's trace, naming the socket that gave it.
    let started = std::time::Instant::now();
    let trace = loop {
        let t = crate::calls::trace(&app, &call, 1).await;
        if t["acks"].as_array().is_some_and(|a| !a.is_empty()) {
            break t;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no ack in {t}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let socket_id = trace["notifications"][0]["targets"][0]["socket"].clone();
    assert_eq!(trace["acks"].as_array().unwrap().len(), 1, "{trace}");
    assert_eq!(trace["acks"][0]["socket"], socket_id);
    assert_eq!(trace["acks"][0]["message_id"], id.as_str());
    assert!(trace["acks"][0]["after_ms"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn a_socket_opened_without_ack_is_never_read_as_acknowledging() {
    let app = spawn_with(TestConfig::default()).await;
    let mut socket = app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let id = serde_json::from_slice::<Value>(&body).unwrap()["twi_message_id"].clone();
    assert_eq!(app.webhook(body).await.status, StatusCode::OK);
    assert!(socket.next_text(Duration::from_secs(5)).await.is_some());
    socket
        .send_text(&json!({"type": "ack", "twi_message_id": id}).to_string())
        .await
        .unwrap();
    // The server reads a socket's frames in order: once it has answered the close frame, it
    // has read the acknowledgement before it.
    assert!(socket.close_answered().await);
    let m = app.metrics().await;
    for outcome in ["acknowledged", "repeated", "unknown", "invalid"] {
        assert_eq!(acks(&m, outcome), 0, "{outcome}: {m}");
    }
}

#[tokio::test]
async fn ack_and_replay_since_must_be_readable() {
    let app = spawn_with(TestConfig::default()).await;
    for query in ["ack=yes", "replay_since=yesterday"] {
        let q = format!("access_token={}&{query}", token("bob"));
        let refused = WsClient::connect(&app.base, "", Some(&q)).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 400, "{query}")
            }
            other => panic!("{query}: expected a 400, got {:?}", other.map(|_| ())),
        }
    }
}

fn unix_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// A client that lost its socket and reconnects while the call still rings gets what it
/// missed, once, byte for byte; what arrived before it left, or before the window, it does
/// not get again.
async fn a_reconnecting_client_gets_the_calls_it_missed(engine: Engine) {
    let app = spawn_with(TestConfig::with_engine(engine)).await;
    let mut socket = open(&app, "bob", "ack=1").await;
    let before = payload(ACCOUNT, "bob");
    assert_eq!(app.webhook(before.clone()).await.status, StatusCode::OK);
    assert!(socket.next_text(Duration::from_secs(5)).await.is_some());
    let left = unix_ms();
    socket.close().await;
    // The socket's presence goes with it: nobody is bound, Twilio is answered 404, and the
    // call keeps ringing on Twilio's side.
    let missed = payload(ACCOUNT, "bob");
    let gone = eventually(Duration::from_secs(5), || async {
        app.admin_get(&format!("/v1/bindings?account_sid={ACCOUNT}&identity=bob"))
            .await
            .body["sockets"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;
    assert!(gone, "the closed socket was still a binding");
    assert_eq!(
        app.webhook(missed.clone()).await.status,
        StatusCode::NOT_FOUND
    );

    let mut back = open(&app, "bob", &format!("ack=1&replay_since={left}")).await;
    let replayed = back.next_text(Duration::from_secs(5)).await.unwrap();
    assert_eq!(replayed.as_bytes(), &missed[..], "replayed byte for byte");
    back.expect_silence(Duration::from_millis(300)).await;

    // A client that says it left later than that is given nothing.
    let mut later = open(&app, "bob", &format!("replay_since={}", unix_ms())).await;
    later.expect_silence(Duration::from_millis(300)).await;
    let m = app.metrics().await;
    assert!(m.contains("callrelay_websocket_replayed_total 1"), "{m}");
}

#[tokio::test]
async fn a_reconnecting_client_gets_the_calls_it_missed_on_the_memory_store() {
    a_reconnecting_client_gets_the_calls_it_missed(Engine::Memory).await;
}

#[tokio::test]
async fn a_reconnecting_client_gets_the_calls_it_missed_on_redis() {
    a_reconnecting_client_gets_the_calls_it_missed(Engine::Redis).await;
}

#[tokio::test]
async fn nothing_is_replayed_once_the_ringing_window_has_passed() {
    let app = spawn_with(TestConfig {
        ringing_window_secs: 1,
        ..TestConfig::default()
    })
    .await;
    let left = unix_ms();
    assert_eq!(
        app.webhook(payload(ACCOUNT, "bob")).await.status,
        StatusCode::NOT_FOUND
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // Still ringing: posted now, within the window.
    let recent = payload(ACCOUNT, "bob");
    assert_eq!(
        app.webhook(recent.clone()).await.status,
        StatusCode::NOT_FOUND
    );
    let mut back = open(&app, "bob", &format!("replay_since={left}")).await;
    let replayed = back.next_text(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        replayed.as_bytes(),
        &recent[..],
        "only the one still ringing"
    );
    back.expect_silence(Duration::from_millis(300)).await;
}

/// Bob's iPhone registered twice: `APNS_TOKEN` first, `APNS_TOKEN_2` (the newest) after.
async fn stale_then_fresh(app: &TestApp) {
    let phone = json!({"device_id": "bobs-iphone"});
    app.register("bob", PushChannel::Apns, APNS_TOKEN, phone.clone())
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.register("bob", PushChannel::Apns, APNS_TOKEN_2, phone)
        .await;
}

#[tokio::test]
async fn a_device_with_a_stale_and_a_fresh_binding_rings_once_on_the_fresh_one() {
    let s = start("").await;
    stale_then_fresh(&s.app).await;
    // Another device of Bob's still rings.
    s.app
        .register(
            "bob",
            PushChannel::Apns,
            "cd".repeat(32).as_str(),
            json!({"device_id": "bobs-ipad"}),
        )
        .await;
    let body = payload(ACCOUNT, "bob");
    let call = crate::calls::call_sid(&body);
    let r = s.app.webhook(body).await;
    assert_eq!(
        r.body,
        json!({"delivered": 2, "failed": 0, "removed": 0, "skipped": 1})
    );
    let mut tokens: Vec<String> = s
        .apns
        .requests()
        .iter()
        .map(|r| r.device_token.clone())
        .collect();
    tokens.sort();
    let mut expected = vec![APNS_TOKEN_2.to_owned(), "cd".repeat(32)];
    expected.sort();
    assert_eq!(tokens, expected, "the stale token was not pushed");
    let trace = crate::calls::trace(&s.app, &call, 1).await;
    let skipped: Vec<&Value> = trace["notifications"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{trace}");
    assert!(
        skipped[0]["detail"]
            .as_str()
            .unwrap()
            .contains("one ring per device")
    );
    let m = s.app.metrics().await;
    assert!(
        m.contains(r#"callrelay_skipped_targets_total{rule="older_binding"} 1"#),
        "{m}"
    );
}

/// callrelay(s) on Redis, sharing one APNs mock whose app `ios` prefers sockets.
async fn socket_first_replicas(n: usize) -> (Vec<TestApp>, MockApns) {
    let key = TeamKey::generate(TEAM, KEY_ID);
    let apns = MockApns::token_auth(&[&key]).await;
    let config = TestConfig {
        extra: apns.token_app("ios", TOPIC, &key, r#"delivery = "prefer_websocket""#),
        ..TestConfig::redis()
    };
    let mut apps = Vec::new();
    for _ in 0..n {
        apps.push(spawn_with(config.clone()).await);
    }
    (apps, apns)
}

/// Bob's phone: a PushKit binding and a socket opened with `ack=1`, both naming the device.
async fn phone(push_on: &TestApp, socket_on: &TestApp) -> WsClient {
    push_on
        .register(
            "bob",
            PushChannel::Apns,
            APNS_TOKEN,
            json!({"device_id": "bobs-phone"}),
        )
        .await;
    open(socket_on, "bob", "ack=1&device_id=bobs-phone").await
}

/// The webhook on `app`, answered while the test plays the client.
fn webhook_in_background(app: &TestApp, body: Vec<u8>) -> tokio::task::JoinHandle<Answer> {
    let base = app.base.clone();
    let client = app.http.clone();
    let url = format!("{base}{}", webhook_path(&body));
    tokio::spawn(async move {
        let signature = sign(AUTH_TOKEN, &url);
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-twilio-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        answer(response).await
    })
}

async fn ack(socket: &mut WsClient, frame: &str) {
    let id = serde_json::from_str::<Value>(frame).unwrap()["twi_message_id"].clone();
    socket
        .send_text(&json!({"type": "ack", "twi_message_id": id}).to_string())
        .await
        .unwrap();
}

/// `delivery = "prefer_websocket"`: a socket that acknowledges in time spares the device its
/// push, on the same replica and across replicas.
async fn an_acknowledging_socket_spares_the_push(remote: bool) {
    let (apps, apns) = socket_first_replicas(if remote { 2 } else { 1 }).await;
    let (webhook_on, socket_on) = (&apps[0], apps.last().unwrap());
    let mut socket = phone(webhook_on, socket_on).await;
    let body = payload(ACCOUNT, "bob");
    let call = crate::calls::call_sid(&body);
    let answered = webhook_in_background(webhook_on, body.clone());
    let frame = socket.next_text(Duration::from_secs(5)).await.unwrap();
    assert_eq!(frame.as_bytes(), &body[..]);
    ack(&mut socket, &frame).await;
    let r = answered.await.unwrap();
    assert_eq!(
        r.body,
        json!({"delivered": 1, "failed": 0, "removed": 0, "skipped": 1}),
        "{}",
        r.text
    );
    assert!(apns.requests().is_empty(), "the push was sent anyway");
    let trace = crate::calls::trace(webhook_on, &call, 1).await;
    let push = trace["notifications"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["channel"] == "apns")
        .unwrap()
        .clone();
    assert_eq!(push["outcome"], "skipped");
    assert!(push["detail"].as_str().unwrap().contains("acknowledged"));
    let m = webhook_on.metrics().await;
    assert!(
        m.contains(r#"callrelay_socket_first_deliveries_total{outcome="acknowledged"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"callrelay_skipped_targets_total{rule="socket_acknowledged"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn with_prefer_websocket_an_acknowledging_socket_spares_the_push() {
    an_acknowledging_socket_spares_the_push(false).await;
}

#[tokio::test]
async fn with_prefer_websocket_a_socket_on_another_replica_spares_the_push_too() {
    an_acknowledging_socket_spares_the_push(true).await;
}

#[tokio::test]
async fn with_prefer_websocket_a_silent_socket_is_followed_by_the_push_inside_the_deadline() {
    let (apps, apns) = socket_first_replicas(2).await;
    let mut socket = phone(&apps[0], &apps[1]).await;
    let body = payload(ACCOUNT, "bob");
    let started = std::time::Instant::now();
    let answered = webhook_in_background(&apps[0], body.clone());
    // The client gets the frame and says nothing.
    assert!(socket.next_text(Duration::from_secs(5)).await.is_some());
    let r = answered.await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 2, "failed": 0, "removed": 0}));
    let pushes = apns.requests();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].body, body);
    // The push waited for the acknowledgement timeout (1 s by default), not the deadline.
    assert!(took >= Duration::from_millis(1_000), "{took:?}");
    assert!(
        took < Duration::from_millis(2_900),
        "{took:?}: past the deadline"
    );
    let m = apps[0].metrics().await;
    assert!(
        m.contains(r#"callrelay_socket_first_deliveries_total{outcome="pushed"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn without_prefer_websocket_the_socket_and_the_push_ring_together() {
    let s = start("").await;
    let mut socket = phone(&s.app, &s.app).await;
    let r = s.app.notify("bob").await;
    assert_eq!(r.body, json!({"delivered": 2, "failed": 0, "removed": 0}));
    assert!(socket.next_text(Duration::from_secs(5)).await.is_some());
    assert_eq!(s.apns.requests().len(), 1);
}

#[tokio::test]
async fn a_device_whose_newest_binding_is_dead_rings_on_the_next() {
    let s = start("").await;
    stale_then_fresh(&s.app).await;
    // The newest token is dead; the older one still works.
    s.apns
        .script([Reply::error(410, "Unregistered"), Reply::ok()]);
    let r = s.app.notify("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 1, "failed": 0, "removed": 1}));
    let tokens: Vec<String> = s
        .apns
        .requests()
        .iter()
        .map(|r| r.device_token.clone())
        .collect();
    assert_eq!(
        tokens,
        [APNS_TOKEN_2, APNS_TOKEN],
        "newest first, then the next"
    );
}

#[tokio::test]
async fn with_prefer_websocket_a_socket_that_cannot_acknowledge_does_not_hold_the_push() {
    let (apps, apns) = socket_first_replicas(1).await;
    let app = &apps[0];
    app.register(
        "bob",
        PushChannel::Apns,
        APNS_TOKEN,
        json!({"device_id": "bobs-phone"}),
    )
    .await;
    // Opened without ack=1: it can never acknowledge, so nothing waits for it.
    let mut socket = open(app, "bob", "device_id=bobs-phone").await;
    let started = std::time::Instant::now();
    let r = app.notify("bob").await;
    assert_eq!(r.body, json!({"delivered": 2, "failed": 0, "removed": 0}));
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "waited {:?} for an acknowledgement that could not come",
        started.elapsed()
    );
    assert!(socket.next_text(Duration::from_secs(5)).await.is_some());
    assert_eq!(apns.requests().len(), 1);
}
