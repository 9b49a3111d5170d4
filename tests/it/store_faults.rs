//! Redis going away and coming back: quick 503s, then recovery without a restart.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::redis::RedisServer;
use crate::helpers::*;

#[tokio::test]
async fn redis_down_means_quick_503_and_recovery_when_it_returns() {
    let mut redis = RedisServer::start();
    let app = spawn_with(TestConfig::with_engine(Engine::RedisAt(redis.url()))).await;
    let mut bob = app.connect_ws("bob").await;
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    assert!(bob.next_text(Duration::from_secs(5)).await.is_some());

    redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let r = app.notify("bob").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
        assert_eq!(r.body["type"], "urn:callrelay:problem:store-unavailable");
        assert_eq!(r.headers["retry-after"], "1");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered in {:?}: must not hang",
            started.elapsed()
        );
    }
    let ready = reqwest::get(format!("{}/readyz", app.admin)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // A new socket cannot be announced, so it is refused rather than silently unreachable.
    assert!(
        WsClient::connect(&app.base, &token("carol"), None)
            .await
            .is_err()
    );

    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.notify("bob").await.status == StatusCode::OK
        })
        .await,
        "recovers by itself once Redis is back"
    );
    assert!(bob.next_text(Duration::from_secs(5)).await.is_some());
    let ready = reqwest::get(format!("{}/readyz", app.admin)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// Redis killed and restarted under a steady webhook load: every answer is a correct 200 or a
/// quick 503, never a hang and never a 404 for an identity that has a binding; with Redis
/// persistence no binding is lost.
#[tokio::test]
async fn a_redis_restart_under_load_loses_nothing_and_lies_about_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut redis = RedisServer::start();
    let app = Arc::new(
        spawn_with(TestConfig {
            fake_apps: vec![("android", "fcm")],
            deadline_ms: 1000,
            ..TestConfig::with_engine(Engine::RedisAt(redis.url()))
        })
        .await,
    );
    let identities: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    for identity in &identities {
        let r = app
            .api(
                reqwest::Method::PUT,
                "/v1/bindings/phone",
                &token(identity),
                Some(serde_json::json!({"channel": "fcm", "address": format!("token-{identity}")})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let app = app.clone();
        let stop = stop.clone();
        let identities = identities.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut unavailable, mut slowest) = (0u32, 0u32, Duration::ZERO);
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let identity = &identities[i % identities.len()];
                i += 1;
                let started = Instant::now();
                let r = app.notify(identity).await;
                slowest = slowest.max(started.elapsed());
                match r.status {
                    StatusCode::OK => ok += 1,
                    StatusCode::SERVICE_UNAVAILABLE => unavailable += 1,
                    other => panic!("{identity}: {other} {}", r.text),
                }
            }
            (ok, unavailable, slowest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut unavailable, mut slowest) = (0, 0, Duration::ZERO);
    for w in workers {
        let (o, u, s) = w.await.unwrap();
        ok += o;
        unavailable += u;
        slowest = slowest.max(s);
    }
    eprintln!(
        "redis restart under load: {ok} delivered, {unavailable} unavailable, slowest {slowest:?}"
    );
    assert!(
        ok > 0 && unavailable > 0,
        "the outage must be visible: {ok} ok, {unavailable} 503"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "an answer took {slowest:?}"
    );
    // Every binding survived the restart.
    for identity in &identities {
        let r = app
            .api(
                reqwest::Method::GET,
                "/v1/bindings/phone",
                &token(identity),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{identity} lost its binding");
    }
    // And delivery works again for everyone.
    for identity in &identities {
        assert_eq!(app.notify(identity).await.status, StatusCode::OK);
    }
}
