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
