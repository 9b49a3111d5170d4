//! The per-call delivery trace: every call notification answered is recorded with each target
//! tried and what Apple said (through the APNs mock), read back by call and by identity, by
//! admin keys and (for their own calls only) access tokens; Voice Insights summaries join
//! their call; nothing is recorded with the trace off.

use std::time::Duration;

use callrelay_testkit::apns::{MockApns, Reply, TeamKey};
use serde_json::{Value, json};

use crate::helpers::*;

const TOPIC: &str = "com.example.voice";

pub(crate) struct Setup {
    pub app: TestApp,
    pub apns: MockApns,
}

/// callrelay with the token-auth APNs app `ios` on the APNs mock.
pub(crate) async fn start(config: TestConfig) -> Setup {
    let key = TeamKey::generate("TEAM123456", "KEY1234567");
    let apns = MockApns::token_auth(&[&key]).await;
    let extra = format!(
        "{}\n{}",
        apns.token_app("ios", TOPIC, &key, ""),
        config.extra
    );
    let app = spawn_with(TestConfig { extra, ..config }).await;
    Setup { app, apns }
}

pub(crate) fn call_sid(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["twi_call_sid"].as_str().unwrap().to_owned()
}

/// The call's trace once it holds `notifications` notifications (it is written off the
/// answer's path, a moment after the answer).
pub(crate) async fn trace(app: &TestApp, call: &str, notifications: usize) -> Value {
    let path = format!("/v1/calls/{call}?account_sid={ACCOUNT}");
    let started = std::time::Instant::now();
    loop {
        let r = app.admin_get(&path).await;
        if r.status == 200
            && r.body["notifications"].as_array().map(Vec::len) == Some(notifications)
        {
            return r.body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the trace never showed {notifications} notifications: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_call_delivered_to_apns_and_a_socket_is_traced_target_by_target() {
    let s = start(TestConfig::default()).await;
    let binding = s.app.register_apns("bob", APNS_TOKEN).await;
    let mut ws = s.app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let call = call_sid(&body);
    let answer = s.app.webhook(body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(ws.next_text(Duration::from_secs(2)).await.is_some());

    let t = trace(&s.app, &call, 1).await;
    assert_eq!(t["call_sid"], call.as_str());
    assert_eq!(t["account_sid"], ACCOUNT);
    assert_eq!(t["identity"], "bob");
    assert_eq!(t["from"], "client:alice");
    assert_eq!(t["to"], "client:bob");
    let n = &t["notifications"][0];
    assert_eq!(n["status"], 200);
    assert_eq!(n["answer"], "delivered");
    assert_eq!(n["delivered"], 2);
    assert_eq!(n["duplicate"], false);
    assert_eq!(n["message_type"], "twilio.voice.call");
    assert_eq!(n["replica"], s.app.node().as_str());
    assert!(n["took_ms"].as_f64().unwrap() > 0.0);
    let targets = n["targets"].as_array().unwrap();
    let apns = targets.iter().find(|t| t["channel"] == "apns").unwrap();
    assert_eq!(apns["app"], "ios");
    assert_eq!(apns["binding"], binding.id.to_string().as_str());
    assert_eq!(apns["outcome"], "delivered");
    assert_eq!(apns["attempts"], 1);
    assert_eq!(apns["status"], 200);
    // The mock's apns-id, as Apple's tools would name the push.
    let apns_id = apns["apns_id"].as_str().unwrap();
    assert_eq!(apns_id.len(), 36, "{apns_id}");
    let socket = targets
        .iter()
        .find(|t| t["channel"] == "websocket")
        .unwrap();
    assert_eq!(socket["outcome"], "delivered");
    assert_eq!(socket["replica"], s.app.node().as_str());
    assert!(socket["socket"].as_str().is_some_and(|id| !id.is_empty()));
    // Never the device token.
    assert!(!t.to_string().contains(APNS_TOKEN));
    assert_eq!(s.apns.request_count(), 1);
}

#[tokio::test]
async fn a_dead_token_a_retry_and_nobody_bound_are_each_traced_with_their_answer() {
    let s = start(TestConfig::default()).await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    s.apns.script([Reply::error(410, "Unregistered")]);
    let body = payload(ACCOUNT, "bob");
    let call = call_sid(&body);
    assert_eq!(s.app.webhook(body.clone()).await.status, 404);
    let t = trace(&s.app, &call, 1).await;
    let n = &t["notifications"][0];
    assert_eq!(n["status"], 404);
    assert_eq!(n["answer"], "not_found");
    assert_eq!(n["removed"], 1);
    let apns = &n["targets"][0];
    assert_eq!(apns["outcome"], "removed");
    assert_eq!(apns["status"], 410);
    assert_eq!(apns["reason"], "Unregistered");
    assert!(apns["detail"].as_str().unwrap().contains("Unregistered"));

    // Twilio retries: nobody is bound any more.
    assert_eq!(s.app.webhook(body).await.status, 404);
    let t = trace(&s.app, &call, 2).await;
    assert_eq!(t["notifications"][1]["answer"], "not_found");
    assert_eq!(t["notifications"][1]["targets"], json!([]));

    // A delivered notification retried by Twilio is a duplicate of its original.
    let mut ws = s.app.connect_ws("carol").await;
    let body = payload(ACCOUNT, "carol");
    let call = call_sid(&body);
    assert_eq!(s.app.webhook(body.clone()).await.status, 200);
    assert!(ws.next_text(Duration::from_secs(2)).await.is_some());
    let retry = s.app.webhook(body).await;
    assert_eq!(retry.body["duplicate"], true, "{}", retry.text);
    let t = trace(&s.app, &call, 2).await;
    let (first, second) = (&t["notifications"][0], &t["notifications"][1]);
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["answer"], "duplicate");
    assert_eq!(first["message_id"], second["message_id"]);
    assert_eq!(second["targets"], json!([]));

    // An identity's calls, newest first.
    let listed = s
        .app
        .admin_get(&format!("/v1/calls?account_sid={ACCOUNT}&identity=bob"))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body["calls"].as_array().unwrap().len(), 1);
    let since = "2100-01-01T00:00:00Z";
    let none = s
        .app
        .admin_get(&format!(
            "/v1/calls?account_sid={ACCOUNT}&identity=bob&since={since}"
        ))
        .await;
    assert_eq!(none.body, json!({"calls": []}));
}

#[tokio::test]
async fn an_access_token_reads_its_own_calls_and_no_one_elses() {
    let app = spawn_app().await;
    let mut bob_ws = app.connect_ws("bob").await;
    let mut carol_ws = app.connect_ws("carol").await;
    let to_bob = payload(ACCOUNT, "bob");
    let to_carol = payload(ACCOUNT, "carol");
    let (bob_call, carol_call) = (call_sid(&to_bob), call_sid(&to_carol));
    assert_eq!(app.webhook(to_bob).await.status, 200);
    assert_eq!(app.webhook(to_carol).await.status, 200);
    assert!(bob_ws.next_text(Duration::from_secs(2)).await.is_some());
    assert!(carol_ws.next_text(Duration::from_secs(2)).await.is_some());
    trace(&app, &bob_call, 1).await;
    trace(&app, &carol_call, 1).await;

    let bob = token("bob");
    let get = |path: String| {
        let app = &app;
        let bob = &bob;
        async move { app.api(reqwest::Method::GET, &path, bob, None).await }
    };
    let own = get(format!("/v1/calls/{bob_call}")).await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(own.body["identity"], "bob");
    // Without callrelay's internal words: which replica, and why a target failed.
    assert_eq!(own.body["notifications"][0]["replica"], Value::Null);
    assert_eq!(
        own.body["notifications"][0]["targets"][0]["replica"],
        Value::Null
    );
    assert_eq!(
        own.body["notifications"][0]["targets"][0]["outcome"],
        "delivered"
    );
    // Carol's call is as unknown to Bob as a call never made.
    let other = get(format!("/v1/calls/{carol_call}")).await;
    assert_eq!(other.status, 404, "{}", other.text);
    let listed = get("/v1/calls".into()).await;
    assert_eq!(listed.body["calls"][0]["call_sid"], bob_call.as_str());
    assert_eq!(listed.body["calls"].as_array().unwrap().len(), 1);
    assert_eq!(get("/v1/calls?identity=carol".into()).await.status, 403);
    assert_eq!(get("/v1/calls?limit=0".into()).await.status, 400);
    // Admin keys name the account; a malformed SID or time is a clear 400.
    let admin = |path: String| {
        let app = &app;
        async move { app.api(reqwest::Method::GET, &path, ADMIN_KEY, None).await }
    };
    assert_eq!(admin(format!("/v1/calls/{bob_call}")).await.status, 400);
    let bad = admin(format!("/v1/calls/CA1%7B%7D?account_sid={ACCOUNT}")).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let bad = admin(format!(
        "/v1/calls?account_sid={ACCOUNT}&identity=bob&since=yesterday"
    ))
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body["detail"].as_str().unwrap().contains("RFC 3339"));
    assert_eq!(
        app.api(reqwest::Method::GET, "/v1/calls/CA1", "", None)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn voice_insights_summaries_join_their_call() {
    let app = spawn_app().await;
    let mut ws = app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let call = call_sid(&body);
    assert_eq!(app.webhook(body).await.status, 200);
    assert!(ws.next_text(Duration::from_secs(2)).await.is_some());
    let data = json!({
        "call_sid": call, "account_sid": ACCOUNT, "call_type": "client",
        "call_state": "completed", "duration": 42, "connect_duration": 40,
        "processing_state": "complete", "to": {"callee": "client:bob"},
        "properties": {"disconnected_by": "callee"}
    });
    let batch = json!([{
        "specversion": "1.0",
        "type": "com.twilio.voice.insights.call-summary.complete",
        "source": format!("/v1/Voice/{call}/Summary"),
        "id": "EZ0123456789abcdef0123456789abcdef",
        "time": "2026-12-07T10:01:00.000Z",
        "data": data.to_string()
    }]);
    let kept = app.event_streams(batch.to_string()).await;
    assert_eq!(kept.status, 200, "{}", kept.text);
    // Twilio's retry of the batch adds nothing.
    assert_eq!(
        app.event_streams(batch.to_string()).await.body["duplicates"],
        1
    );
    let path = format!("/v1/calls/{call}?account_sid={ACCOUNT}");
    let joined = eventually(Duration::from_secs(5), || {
        let r = app.admin_get(&path);
        async { r.await.body["insights"].as_array().map(Vec::len) == Some(1) }
    })
    .await;
    assert!(joined);
    let t = app.admin_get(&path).await.body;
    let summary = &t["insights"][0];
    assert_eq!(summary["call_state"], "completed");
    assert_eq!(summary["duration"], 42);
    assert_eq!(summary["connect_duration"], 40);
    assert_eq!(summary["disconnected_by"], "callee");
    assert_eq!(t["notifications"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn on_redis_a_trace_outlives_the_replica_that_wrote_it_and_expires_with_its_retention() {
    let config = TestConfig {
        extra: "[calls]\nretention_secs = 120\n".into(),
        ..TestConfig::redis()
    };
    let prefix = config.prefix.clone();
    let app = spawn_with(config).await;
    let mut ws = app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let call = call_sid(&body);
    assert_eq!(app.webhook(body).await.status, 200);
    assert!(ws.next_text(Duration::from_secs(2)).await.is_some());
    drop(ws);
    // Shutdown writes what is queued.
    app.stop().await;

    let again = spawn_with(TestConfig {
        prefix: prefix.clone(),
        ..TestConfig::redis()
    })
    .await;
    let t = trace(&again, &call, 1).await;
    assert_eq!(t["notifications"][0]["status"], 200);
    let pttl =
        |key: String| -> i64 { redis::shared().cli(&["PTTL", &key]).trim().parse().unwrap() };
    let ttl = pttl(format!("{prefix}:trace:{{{ACCOUNT}:{call}}}"));
    assert!((1..=120_000).contains(&ttl), "PTTL {ttl}");
    // The identity's list of calls lives at least the retention, at most an eighth longer.
    let ttl = pttl(format!("{prefix}:{{{ACCOUNT}:bob}}:calls"));
    assert!((100_000..=135_000).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn on_redis_an_identitys_calls_stay_within_their_cap_and_traces_kept_as_lists_are_read() {
    let config = TestConfig {
        extra: "[calls]\nmax_per_identity = 8\n".into(),
        ..TestConfig::redis()
    };
    let prefix = config.prefix.clone();
    let app = spawn_with(config).await;
    let mut calls = Vec::new();
    for _ in 0..20 {
        let body = payload(ACCOUNT, "nobody");
        calls.push(call_sid(&body));
        assert_eq!(app.webhook(body).await.status, 404);
        // One batch per call, so each is appended on its own.
        trace(&app, calls.last().unwrap(), 1).await;
    }
    // Listed: the last 8. Held: never more than 8 plus its slack (an eighth, plus one: 2),
    // trimmed back to 8 past it.
    let listed = app
        .admin_get(&format!(
            "/v1/calls?account_sid={ACCOUNT}&identity=nobody&limit=50"
        ))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let sids: Vec<&str> = listed.body["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_sid"].as_str().unwrap())
        .collect();
    let newest: Vec<&str> = calls.iter().rev().take(8).map(String::as_str).collect();
    assert_eq!(sids, newest);
    let held: usize = redis::shared()
        .cli(&["LLEN", &format!("{prefix}:{{{ACCOUNT}:nobody}}:calls")])
        .trim()
        .parse()
        .unwrap();
    assert!((8..=10).contains(&held), "{held} entries held");

    // A trace as versions before 0.2.1 kept it, a list under `…:call:{…}`, is read with
    // what is written now, older first.
    let body = payload(ACCOUNT, "nobody");
    let call = call_sid(&body);
    assert_eq!(app.webhook(body).await.status, 404);
    trace(&app, &call, 1).await;
    let entry = redis::shared().cli(&["GET", &format!("{prefix}:trace:{{{ACCOUNT}:{call}}}")]);
    let earlier = entry.trim().replace("\"status\":404", "\"status\":503");
    redis::shared().cli(&[
        "RPUSH",
        &format!("{prefix}:call:{{{ACCOUNT}:{call}}}"),
        &earlier,
    ]);
    let t = trace(&app, &call, 2).await;
    assert_eq!(t["notifications"][0]["status"], 503);
    assert_eq!(t["notifications"][1]["status"], 404);
}

#[tokio::test]
async fn with_the_trace_off_nothing_is_recorded() {
    let app = spawn_with(TestConfig {
        extra: "[calls]\ntrace = false\n".into(),
        ..TestConfig::default()
    })
    .await;
    let mut ws = app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let call = call_sid(&body);
    assert_eq!(app.webhook(body).await.status, 200);
    assert!(ws.next_text(Duration::from_secs(2)).await.is_some());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = app
        .admin_get(&format!("/v1/calls/{call}?account_sid={ACCOUNT}"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(
        !app.metrics()
            .await
            .contains("callrelay_call_trace_entries_total{outcome=\"written\"}")
    );
}

#[tokio::test]
async fn with_redis_gone_webhooks_never_wait_for_the_trace_and_tracing_resumes_when_it_returns() {
    let mut redis = crate::helpers::redis::RedisServer::start();
    let app = spawn_with(TestConfig::with_engine(Engine::RedisAt(redis.url()))).await;
    let mut ws = app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    assert_eq!(app.webhook(body.clone()).await.status, 200);
    assert!(ws.next_text(Duration::from_secs(2)).await.is_some());
    trace(&app, &call_sid(&body), 1).await;

    redis.stop();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        assert_eq!(app.notify("bob").await.status, 503);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // Those answers' entries could not be written: counted, and nothing waited for them.
    let failed = eventually(Duration::from_secs(5), || async {
        app.metrics()
            .await
            .contains("callrelay_call_trace_entries_total{outcome=\"failed\"}")
    })
    .await;
    assert!(failed, "{}", app.metrics().await);

    redis.restart();
    let body = payload(ACCOUNT, "bob");
    let call = call_sid(&body);
    let delivered = eventually(Duration::from_secs(10), || {
        let body = body.clone();
        let app = &app;
        async move { app.webhook(body).await.status == 200 }
    })
    .await;
    assert!(delivered);
    let t = trace(&app, &call, 1).await;
    assert_eq!(t["notifications"][0]["status"], 200);
}
