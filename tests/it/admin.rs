//! The admin listener and cross-cutting HTTP behaviour.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let r = reqwest::get(format!("{}/healthz", app.admin))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = answer(reqwest::get(format!("{}/readyz", app.admin)).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["store"], "memory");
    let r = reqwest::get(format!("{}/metrics", app.admin))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("# TYPE callrelay_webhooks counter"), "{text}");
    assert!(text.contains("callrelay_websocket_connections 0"), "{text}");
    // The admin endpoints are not on the public listener.
    let r = answer(app.http.get(app.url("/metrics")).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["type"], "urn:callrelay:problem:not-found");
}

#[tokio::test]
async fn readiness_reports_redis() {
    let app = spawn_with(TestConfig::redis()).await;
    let r = answer(reqwest::get(format!("{}/readyz", app.admin)).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["store"], "redis");
}

#[tokio::test]
async fn request_ids_are_echoed_or_made_up() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(app.url("/v1/bindings"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app
        .http
        .get(app.url("/v1/bindings"))
        .header("x-request-id", "not an acceptable id")
        .send()
        .await
        .unwrap();
    let made_up = r.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(made_up.len(), 32);
}

#[tokio::test]
async fn wrong_methods_are_refused() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(app.url("/v1/twilio/call-notifications"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}
