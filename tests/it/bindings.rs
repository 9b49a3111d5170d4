//! The bindings API: lifecycle, token moves, authentication and authorisation, validation.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

fn config() -> TestConfig {
    TestConfig {
        fake_apps: vec![("ios", "apns"), ("android", "fcm")],
        ..TestConfig::redis()
    }
}

fn ts(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap()
}

#[tokio::test]
async fn create_with_an_access_token() {
    let app = spawn_with(config()).await;
    let r = app
        .api(
            Method::POST,
            "/v1/bindings",
            &token("bob"),
            Some(json!({"channel": "apns", "address": APNS_TOKEN, "device_id": "iphone-15"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let b = &r.body;
    let id = b["id"].as_str().unwrap();
    assert_eq!(r.headers["location"], format!("/v1/bindings/{id}"));
    assert_eq!(b["account_sid"], ACCOUNT);
    assert_eq!(b["identity"], "bob");
    assert_eq!(b["channel"], "apns");
    assert_eq!(b["address"], APNS_TOKEN);
    assert_eq!(b["app"], "ios");
    assert_eq!(b["apns_environment"], "production");
    assert_eq!(b["push_type"], "voip");
    assert_eq!(b["device_id"], "iphone-15");
    assert_eq!(b["ttl_seconds"], 31_536_000);
    assert_eq!(
        ts(&b["expires_at"]) - ts(&b["created_at"]),
        time::Duration::seconds(31_536_000)
    );
    let got = app
        .api(
            Method::GET,
            &format!("/v1/bindings/{id}"),
            &token("bob"),
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, r.body);
    // Delivered through the app's channel.
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    assert_eq!(app.fake("ios").addresses(), vec![APNS_TOKEN.to_string()]);
}

#[tokio::test]
async fn put_creates_then_replaces_keeping_created_at() {
    let app = spawn_with(config()).await;
    let path = "/v1/bindings/bob.pixel_8";
    let first = app
        .api(
            Method::PUT,
            path,
            &token("bob"),
            Some(json!({"channel": "fcm", "address": "fcm-token:one", "ttl_seconds": 60})),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.body["id"], "bob.pixel_8");
    assert_eq!(
        ts(&first.body["expires_at"]) - ts(&first.body["created_at"]),
        time::Duration::seconds(60)
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = app
        .api(
            Method::PUT,
            path,
            &token("bob"),
            Some(json!({"id": "bob.pixel_8", "channel": "fcm", "address": "fcm-token:two"})),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.body["created_at"], first.body["created_at"]);
    assert!(ts(&second.body["updated_at"]) > ts(&first.body["updated_at"]));
    assert_eq!(second.body["address"], "fcm-token:two");
    assert_eq!(second.body["ttl_seconds"], 31_536_000);
    let list = app
        .api(Method::GET, "/v1/bindings", &token("bob"), None)
        .await;
    assert_eq!(list.body["bindings"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn list_delete_and_delete_all() {
    let app = spawn_with(config()).await;
    for (i, addr) in ["t:1", "t:2", "t:3"].iter().enumerate() {
        let r = app
            .api(
                Method::PUT,
                &format!("/v1/bindings/b{i}"),
                &token("bob"),
                Some(json!({"channel": "fcm", "address": addr})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let _socket = app.connect_ws("bob").await;
    let list = app
        .api(Method::GET, "/v1/bindings", &token("bob"), None)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<&str> = list.body["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b0", "b1", "b2"]);
    assert_eq!(list.body["sockets"].as_array().unwrap().len(), 1);

    let r = app
        .api(Method::DELETE, "/v1/bindings/b1", &token("bob"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app
        .api(Method::DELETE, "/v1/bindings/b1", &token("bob"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["type"], "urn:callrelay:problem:binding-not-found");
    let r = app
        .api(Method::GET, "/v1/bindings/b1", &token("bob"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = app
        .api(Method::DELETE, "/v1/bindings", &token("bob"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"deleted": 2}));
    let list = app
        .api(Method::GET, "/v1/bindings", &token("bob"), None)
        .await;
    assert_eq!(list.body["bindings"], json!([]));
}

#[tokio::test]
async fn a_token_registered_by_another_identity_moves() {
    let app = spawn_with(config()).await;
    let body = json!({"channel": "apns", "address": APNS_TOKEN});
    let r = app
        .api(
            Method::POST,
            "/v1/bindings",
            &token("bob"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);

    // The phone now belongs to alice (e.g. she logged in on it).
    let r = app
        .api(Method::POST, "/v1/bindings", &token("alice"), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let bob = app
        .api(Method::GET, "/v1/bindings", &token("bob"), None)
        .await;
    assert_eq!(bob.body["bindings"], json!([]));
    assert_eq!(app.notify("bob").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.notify("alice").await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_apns_token_in_upper_case_is_the_same_device_in_lower_case() {
    let app = spawn_with(config()).await;
    let upper = json!({"channel": "apns", "address": APNS_TOKEN.to_ascii_uppercase()});
    let r = app
        .api(Method::POST, "/v1/bindings", &token("bob"), Some(upper))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["address"], APNS_TOKEN, "kept in lowercase");

    // The same phone, its token rendered in lowercase, now signs in as alice: it moves.
    let lower = json!({"channel": "apns", "address": APNS_TOKEN});
    let r = app
        .api(Method::POST, "/v1/bindings", &token("alice"), Some(lower))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let bob = app
        .api(Method::GET, "/v1/bindings", &token("bob"), None)
        .await;
    assert_eq!(bob.body["bindings"], json!([]));
    assert_eq!(app.notify("bob").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.notify("alice").await.status, StatusCode::OK);
    assert_eq!(app.fake("ios").addresses(), vec![APNS_TOKEN.to_string()]);
}

#[tokio::test]
async fn admin_keys_manage_any_identity_of_configured_accounts() {
    let app = spawn_with(config()).await;
    let r = app
        .api(
            Method::POST,
            "/v1/bindings",
            ADMIN_KEY,
            Some(json!({"account_sid": OTHER_ACCOUNT, "identity": "bob", "channel": "fcm", "address": "tok"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let q = format!("?account_sid={OTHER_ACCOUNT}&identity=bob");
    let list = app
        .api(Method::GET, &format!("/v1/bindings{q}"), ADMIN_KEY, None)
        .await;
    assert_eq!(list.body["bindings"][0]["id"], id.as_str());
    let got = app
        .api(
            Method::GET,
            &format!("/v1/bindings/{id}{q}"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    // The same identity in the main account has nothing.
    let mine = app
        .api(Method::GET, "/v1/bindings", &token("bob"), None)
        .await;
    assert_eq!(mine.body["bindings"], json!([]));

    // Admin callers must say whom they mean, and only configured accounts exist.
    let r = app
        .api(Method::GET, "/v1/bindings?identity=bob", ADMIN_KEY, None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .api(
            Method::GET,
            &format!("/v1/bindings?account_sid={OTHER_ACCOUNT}"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .api(
            Method::GET,
            &format!("/v1/bindings?account_sid={UNCONFIGURED_ACCOUNT}&identity=bob"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The account and identity may also be named in the query string when registering.
    let r = app
        .api(
            Method::PUT,
            &format!("/v1/bindings/by-query{q}"),
            ADMIN_KEY,
            Some(json!({"channel": "fcm", "address": "tok-2"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["account_sid"], OTHER_ACCOUNT);
    assert_eq!(r.body["identity"], "bob");
    let r = app
        .api(
            Method::POST,
            &format!("/v1/bindings?account_sid={OTHER_ACCOUNT}&identity=alice"),
            ADMIN_KEY,
            Some(json!({"identity": "bob", "channel": "fcm", "address": "tok-3"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "body and query disagree: {}",
        r.text
    );

    let r = app
        .api(Method::DELETE, &format!("/v1/bindings{q}"), ADMIN_KEY, None)
        .await;
    assert_eq!(r.body, json!({"deleted": 2}));
}

#[tokio::test]
async fn every_authentication_failure_is_401() {
    let app = spawn_with(config()).await;
    let body = json!({"channel": "fcm", "address": "tok"});
    let expired = callrelay::auth::access_token::mint_at(
        &callrelay::domain::AccountSid::parse(ACCOUNT).unwrap(),
        &callrelay::domain::ApiKeySid::parse(API_KEY).unwrap(),
        &callrelay::config::Secret::new(API_SECRET),
        &callrelay::domain::Identity::parse("bob").unwrap(),
        (OffsetDateTime::now_utc().unix_timestamp() - 7200) as u64,
        Duration::from_secs(3600),
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization", None),
        ("Basic scheme", Some(format!("Basic {ADMIN_KEY}"))),
        ("empty bearer", Some("Bearer ".into())),
        (
            "unknown admin key",
            Some("Bearer admin-key-that-is-not-configured-00".into()),
        ),
        ("garbage token", Some("Bearer a.b.c".into())),
        ("expired token", Some(format!("Bearer {expired}"))),
        (
            "wrong API key secret",
            Some(format!(
                "Bearer {}",
                mint(
                    ACCOUNT,
                    API_KEY,
                    "wrong-secret",
                    "bob",
                    Duration::from_secs(600)
                )
            )),
        ),
        (
            "unconfigured account",
            Some(format!(
                "Bearer {}",
                mint(
                    UNCONFIGURED_ACCOUNT,
                    API_KEY,
                    API_SECRET,
                    "bob",
                    Duration::from_secs(600)
                )
            )),
        ),
        (
            "another account's API key",
            Some(format!(
                "Bearer {}",
                mint(
                    ACCOUNT,
                    OTHER_API_KEY,
                    OTHER_API_SECRET,
                    "bob",
                    Duration::from_secs(600)
                )
            )),
        ),
    ];
    for (what, header) in cases {
        for (method, path) in [
            (Method::POST, "/v1/bindings"),
            (Method::GET, "/v1/bindings"),
            (Method::GET, "/v1/bindings/x"),
            (Method::PUT, "/v1/bindings/x"),
            (Method::DELETE, "/v1/bindings/x"),
            (Method::DELETE, "/v1/bindings"),
        ] {
            let mut request = app.http.request(method.clone(), app.url(path)).json(&body);
            if let Some(h) = &header {
                request = request.header("authorization", h);
            }
            let r = answer(request.send().await.unwrap()).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{what}: {method} {path}: {}",
                r.text
            );
            assert_eq!(r.headers["www-authenticate"], "Bearer", "{what}");
            assert_eq!(r.body["type"], "urn:callrelay:problem:unauthenticated");
            assert!(!r.text.contains(API_SECRET) && !r.text.contains(ADMIN_KEY));
        }
    }
}

#[tokio::test]
async fn an_access_token_only_reaches_its_own_identity() {
    let app = spawn_with(config()).await;
    let bob = token("bob");
    let r = app
        .api(
            Method::POST,
            "/v1/bindings",
            &bob,
            Some(json!({"identity": "alice", "channel": "fcm", "address": "tok"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = app
        .api(
            Method::POST,
            "/v1/bindings",
            &bob,
            Some(json!({"account_sid": OTHER_ACCOUNT, "channel": "fcm", "address": "tok"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .api(
            Method::POST,
            "/v1/bindings?identity=alice",
            &bob,
            Some(json!({"channel": "fcm", "address": "tok"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a query naming another identity: {}",
        r.text
    );
    for (method, path) in [
        (Method::GET, "/v1/bindings?identity=alice"),
        (Method::DELETE, "/v1/bindings?identity=alice"),
        (Method::GET, "/v1/bindings/x?identity=alice"),
        (Method::DELETE, "/v1/bindings/x?identity=alice"),
    ] {
        let r = app.api(method.clone(), path, &bob, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(r.body["type"], "urn:callrelay:problem:forbidden");
    }
    // Naming oneself explicitly is fine.
    let r = app
        .api(
            Method::POST,
            "/v1/bindings",
            &bob,
            Some(json!({"identity": "bob", "account_sid": ACCOUNT, "channel": "fcm", "address": "tok"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Alice cannot read bob's binding by id: ids are per identity.
    let id = r.body["id"].as_str().unwrap();
    let r = app
        .api(
            Method::GET,
            &format!("/v1/bindings/{id}"),
            &token("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn invalid_bindings_are_refused_with_the_field_named() {
    let app = spawn_with(config()).await;
    let bob = token("bob");
    let cases = [
        (json!({"address": "t"}), "channel"),
        (json!({"channel": "sms", "address": "t"}), "channel"),
        (json!({"channel": "apns", "address": "not-hex"}), "address"),
        (json!({"channel": "fcm", "address": "has space"}), "address"),
        (
            json!({"channel": "fcm", "address": "t", "push_type": "voip"}),
            "push_type",
        ),
        (
            json!({"channel": "fcm", "address": "t", "ttl_seconds": 10}),
            "ttl_seconds",
        ),
        (
            json!({"channel": "fcm", "address": "t", "ttl_seconds": "60"}),
            "ttl_seconds",
        ),
        (
            json!({"channel": "fcm", "address": "t", "expires_at": "2030-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"channel": "fcm", "address": "t", "identity": "a\u{1}b"}),
            "identity",
        ),
        (
            json!({"channel": "fcm", "address": "t", "device_id": ""}),
            "device_id",
        ),
        (json!([1]), ""),
    ];
    for (body, field) in cases {
        let r = app
            .api(Method::POST, "/v1/bindings", &bob, Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(
            r.body["type"], "urn:callrelay:problem:invalid-binding",
            "{body}"
        );
        let detail = r.body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(field),
            "{body}: detail `{detail}` names `{field}`"
        );
    }
    // Malformed JSON.
    let r = answer(
        app.http
            .post(app.url("/v1/bindings"))
            .bearer_auth(&bob)
            .header("content-type", "application/json")
            .body("{\"channel\":")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Not JSON at all.
    let r = answer(
        app.http
            .post(app.url("/v1/bindings"))
            .bearer_auth(&bob)
            .body("channel=fcm")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Oversize.
    let r = app
        .api(
            Method::POST,
            "/v1/bindings",
            &bob,
            Some(json!({"channel": "fcm", "address": "t", "device_id": "x".repeat(20_000)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // A bad id in the path.
    let r = app
        .api(
            Method::PUT,
            "/v1/bindings/a%20b",
            &bob,
            Some(json!({"channel": "fcm", "address": "t"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // The body's id must match the path's; POST does not take one.
    let r = app
        .api(
            Method::PUT,
            "/v1/bindings/a",
            &bob,
            Some(json!({"id": "b", "channel": "fcm", "address": "t"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .api(
            Method::POST,
            "/v1/bindings",
            &bob,
            Some(json!({"id": "b", "channel": "fcm", "address": "t"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Nothing was stored by any of it.
    let list = app.api(Method::GET, "/v1/bindings", &bob, None).await;
    assert_eq!(list.body["bindings"], json!([]));
}

#[tokio::test]
async fn push_bindings_need_a_configured_app() {
    let app = spawn_with(TestConfig {
        fake_apps: vec![("ios", "apns"), ("ios-beta", "apns")],
        ..TestConfig::default()
    })
    .await;
    let bob = token("bob");
    let cases = [
        (json!({"channel": "fcm", "address": "t"}), "no fcm app"),
        (
            json!({"channel": "apns", "address": APNS_TOKEN}),
            "several apns apps",
        ),
        (
            json!({"channel": "apns", "address": APNS_TOKEN, "app": "android"}),
            "no app named",
        ),
    ];
    for (body, expected) in cases {
        let r = app
            .api(Method::POST, "/v1/bindings", &bob, Some(body))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.body["type"], "urn:callrelay:problem:app-not-configured");
        assert!(
            r.body["detail"].as_str().unwrap().contains(expected),
            "{}",
            r.text
        );
    }
    let r = app
        .api(
            Method::POST,
            "/v1/bindings",
            &bob,
            Some(json!({"channel": "apns", "address": APNS_TOKEN, "app": "ios-beta", "apns_environment": "sandbox"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["app"], "ios-beta");
    assert_eq!(r.body["apns_environment"], "sandbox");
}

#[tokio::test]
async fn store_outage_is_503_not_data_loss() {
    let mut redis = crate::helpers::redis::RedisServer::start();
    let app = spawn_with(TestConfig {
        fake_apps: vec![("android", "fcm")],
        ..TestConfig::with_engine(Engine::RedisAt(redis.url()))
    })
    .await;
    let bob = token("bob");
    let r = app
        .api(
            Method::PUT,
            "/v1/bindings/keep",
            &bob,
            Some(json!({"channel": "fcm", "address": "t1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    redis.stop();
    let r = app
        .api(
            Method::PUT,
            "/v1/bindings/new",
            &bob,
            Some(json!({"channel": "fcm", "address": "t2"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = app.api(Method::GET, "/v1/bindings", &bob, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || async {
            let r = app.api(Method::GET, "/v1/bindings", &bob, None).await;
            r.status == StatusCode::OK && r.body["bindings"].as_array().unwrap().len() == 1
        })
        .await
    );
}

/// Refusals made before a handler runs (authentication, the rate limit, a body that is not
/// JSON) are counted with the operation like every other answer.
#[tokio::test]
async fn every_answer_is_counted_by_operation_and_status() {
    let app = spawn_with(config()).await;
    let binding = json!({"channel": "fcm", "address": "fcm-token"});
    let r = app
        .api(Method::POST, "/v1/bindings", &token("bob"), Some(binding))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = app.api(Method::GET, "/v1/bindings", "nonsense", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .http
        .put(app.url(&format!("/v1/bindings/{id}")))
        .bearer_auth(token("bob"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = app
        .api(
            Method::DELETE,
            &format!("/v1/bindings/{id}"),
            &token("bob"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let metrics = app.metrics().await;
    for line in [
        r#"callrelay_binding_requests_total{operation="create",status="201"} 1"#,
        r#"callrelay_binding_requests_total{operation="list",status="401"} 1"#,
        r#"callrelay_binding_requests_total{operation="replace",status="415"} 1"#,
        r#"callrelay_binding_requests_total{operation="delete",status="204"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
}
