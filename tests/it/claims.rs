//! Dedupe claims when things fail: a replica killed mid-push, a client hanging up mid-delivery,
//! Redis applying a claim after callrelay stopped waiting for it. In none of them is a retry
//! answered `duplicate` unless the notification was delivered.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

use crate::apns::{KEY_ID, TEAM, TOPIC};
use crate::helpers::redis::RedisServer;
use crate::helpers::*;
use callrelay_testkit::apns::{MockApns, Reply, TeamKey};

const IN_PROGRESS: &str = "urn:callrelay:problem:notification-in-progress";

/// Waits until `check` holds, for at most `within`.
async fn until(within: Duration, what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An answer to a retry while a claim may still be pending: either `503` (in progress, with
/// `Retry-After`; or the store unavailable) or a real delivery. Never `200 duplicate` with
/// nothing delivered. Returns whether it delivered.
fn delivered_or_503(r: &Answer) -> bool {
    match r.status {
        StatusCode::OK => {
            assert_eq!(r.body["duplicate"], serde_json::Value::Null, "{}", r.text);
            assert!(r.body["delivered"].as_u64().unwrap() >= 1, "{}", r.text);
            true
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            let kind = r.body["type"].as_str().unwrap_or_default();
            assert!(
                kind == IN_PROGRESS || kind == "urn:callrelay:problem:store-unavailable",
                "{}",
                r.text
            );
            assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
            false
        }
        other => panic!("{other}: {}", r.text),
    }
}

/// Retries `body` on `app` until it is delivered, checking every answer on the way.
async fn retry_until_delivered(app: &TestApp, body: &[u8], within: Duration) -> Answer {
    let started = Instant::now();
    loop {
        let r = app.webhook(body.to_vec()).await;
        if delivered_or_503(&r) {
            return r;
        }
        assert!(
            started.elapsed() < within,
            "not delivered within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replica A takes the claim and starts a slow push, then dies (SIGKILL). The same
/// notification sent to replica B is `503` while A's claim is pending, and is delivered once
/// it lapses: nobody is told "duplicate" about a call nobody received.
#[tokio::test]
async fn a_replica_killed_mid_push_leaves_a_claim_that_lapses_never_a_duplicate() {
    let key = TeamKey::generate(TEAM, KEY_ID);
    let apns = MockApns::token_auth(&[&key]).await;
    let config = TestConfig {
        extra: apns.token_app("ios", TOPIC, &key, ""),
        deadline_ms: 3000,
        // Also the margin by which a claim outlives the deadline: long enough that B's first
        // attempt, begun a moment after A's, ends while A's claim still holds.
        command_timeout_ms: 2000,
        ..TestConfig::redis()
    };
    let survivor = spawn_with(config.clone()).await;
    let mut doomed = ProcessApp::start(&config).await;
    survivor.register_apns("bob", APNS_TOKEN).await;

    // Slow enough that the replica is killed long before APNs answers, even on a loaded
    // machine.
    apns.script([Reply::ok().after(Duration::from_secs(30))]);
    let body = with_message_id(&payload(ACCOUNT, "bob"), "RMkilledmidpush");
    let url = format!("{}{}", doomed.base, webhook_path(&body));
    let request = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("x-twilio-signature", sign(AUTH_TOKEN, &url))
        .body(body.clone())
        .send();
    let in_flight = tokio::spawn(request);
    until(Duration::from_secs(10), "the push reaches APNs", || {
        apns.request_count() == 1
    })
    .await;
    doomed.kill();
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed replica never answered"
    );
    assert_eq!(apns.answered_count(), 0, "the push was cut off");

    // Twilio retries on the other replica while the dead one's claim is pending.
    let r = survivor.webhook(body.clone()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.body["type"], IN_PROGRESS);
    let retry_after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);

    // Once the claim lapses, a retry delivers.
    let r = retry_until_delivered(&survivor, &body, Duration::from_secs(15)).await;
    assert_eq!(r.body["delivered"], 1, "{}", r.text);
    assert_eq!(apns.request_count(), 2);
    assert_eq!(apns.answered_count(), 1);
    assert_eq!(apns.requests()[1].body, body);
    // And now it is a duplicate.
    let r = survivor.webhook(body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["duplicate"], true);
    assert_eq!(apns.request_count(), 2);
}

/// Twilio (or a proxy) hangs up while a slow push is in flight. The delivery still completes
/// and its outcome is recorded: a retry long after any pending claim would have lapsed is a
/// duplicate, and APNs got the push exactly once.
#[tokio::test]
async fn a_client_hanging_up_mid_delivery_does_not_stop_it() {
    let key = TeamKey::generate(TEAM, KEY_ID);
    let apns = MockApns::token_auth(&[&key]).await;
    const DEADLINE: Duration = Duration::from_millis(2000);
    let app = spawn_with(TestConfig {
        extra: apns.token_app("ios", TOPIC, &key, ""),
        deadline_ms: DEADLINE.as_millis() as u64,
        command_timeout_ms: 500,
        ..TestConfig::redis()
    })
    .await;
    app.register_apns("bob", APNS_TOKEN).await;
    apns.script([Reply::ok().after(Duration::from_secs(1))]);
    let body = with_message_id(&payload(ACCOUNT, "bob"), "RMhungup");

    // A raw HTTP/1.1 request, so that hanging up is exactly closing the connection.
    let path = webhook_path(&body);
    let url = app.url(&path);
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let sent = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         x-twilio-signature: {}\r\ncontent-length: {}\r\n\r\n",
        sign(AUTH_TOKEN, &url),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    until(Duration::from_secs(10), "the push reaches APNs", || {
        apns.request_count() == 1
    })
    .await;
    drop(stream);

    until(Duration::from_secs(10), "the push completes", || {
        apns.answered_count() == 1
    })
    .await;
    // Well past the deadline plus any margin a pending claim gets: only a recorded
    // delivery still answers "duplicate" now.
    let lapsed = DEADLINE + Duration::from_millis(2500);
    tokio::time::sleep(lapsed.saturating_sub(sent.elapsed())).await;
    let r = app.webhook(body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["duplicate"], true, "{}", r.text);
    assert_eq!(r.body["delivered"], 0);
    assert_eq!(apns.request_count(), 1, "delivered once");
    // The hung-up request was never answered, so only the retry is counted.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("callrelay_webhooks_total{outcome=\"delivered\"} 0"),
        "{metrics}"
    );
}

/// Redis frozen while the lookup's `SET NX` is on its way: callrelay gives up at the command
/// timeout (`503`), and Redis applies the claim only when it resumes. The claim is released
/// (or lapses) rather than making the retry a `duplicate`; the retry delivers.
#[tokio::test]
async fn a_claim_applied_after_the_timeout_does_not_make_the_retry_a_duplicate() {
    let redis = RedisServer::start();
    let app = spawn_with(TestConfig {
        fake_apps: vec![("ios", "apns")],
        command_timeout_ms: 300,
        deadline_ms: 2000,
        ..TestConfig::with_engine(Engine::RedisAt(redis.url()))
    })
    .await;
    app.register_apns("bob", APNS_TOKEN).await;
    // The connection is up and the scripts are known before Redis freezes.
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    let fake = app.fake("ios");
    let before = fake.payloads().len();

    let body = with_message_id(&payload(ACCOUNT, "bob"), "RMlateclaim");
    redis.pause();
    let r = app.webhook(body.clone()).await;
    redis.resume();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.body["type"], "urn:callrelay:problem:store-unavailable");
    assert_eq!(fake.payloads().len(), before, "nothing delivered yet");

    let r = retry_until_delivered(&app, &body, Duration::from_secs(10)).await;
    assert_eq!(r.body["delivered"], 1, "{}", r.text);
    let payloads = fake.payloads();
    assert_eq!(payloads.len(), before + 1);
    assert_eq!(payloads[before], body);
    let r = app.webhook(body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["duplicate"], true);
}
