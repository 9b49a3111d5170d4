//! `GET /v1/ws`: authentication, fan-out, isolation, liveness, bounded queues, shutdown.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn every_socket_of_the_identity_receives_and_no_other() {
    let app = spawn_with(TestConfig::redis()).await;
    let mut phone = app.connect_ws("bob").await;
    let mut laptop = app.connect_ws("bob").await;
    let mut alice = app.connect_ws("alice").await;
    let mut other_bob = WsClient::connect(
        &app.base,
        &mint(
            OTHER_ACCOUNT,
            OTHER_API_KEY,
            OTHER_API_SECRET,
            "bob",
            Duration::from_secs(600),
        ),
        None,
    )
    .await
    .unwrap();

    let body = payload(ACCOUNT, "bob");
    let r = app.webhook(body.clone()).await;
    assert_eq!(r.body, json!({"delivered": 2, "failed": 0, "removed": 0}));
    assert_eq!(phone.next_text(WAIT).await.unwrap().as_bytes(), &body[..]);
    assert_eq!(laptop.next_text(WAIT).await.unwrap().as_bytes(), &body[..]);
    alice.expect_silence(Duration::from_millis(300)).await;
    other_bob.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn token_in_query_parameter_and_device_id() {
    let app = spawn_app().await;
    let query = format!("access_token={}&device_id=web-1", token("bob"));
    let mut socket = WsClient::connect(&app.base, "", Some(&query))
        .await
        .unwrap();
    let list = app
        .api(reqwest::Method::GET, "/v1/bindings", &token("bob"), None)
        .await;
    let sockets = list.body["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 1, "{}", list.text);
    assert_eq!(sockets[0]["device_id"], "web-1");
    assert_eq!(sockets[0]["channel"], "websocket");
    assert_eq!(sockets[0]["identity"], "bob");
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    assert!(socket.next_text(WAIT).await.is_some());
}

#[tokio::test]
async fn connecting_without_a_valid_access_token_is_refused() {
    let app = spawn_app().await;
    let expired = {
        // Minted an hour ago, valid for a minute.
        let account = callrelay::domain::AccountSid::parse(ACCOUNT).unwrap();
        callrelay::auth::access_token::mint_at(
            &account,
            &callrelay::domain::ApiKeySid::parse(API_KEY).unwrap(),
            &callrelay::config::Secret::new(API_SECRET),
            &callrelay::domain::Identity::parse("bob").unwrap(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                - 3600,
            Duration::from_secs(60),
        )
    };
    let wrong_secret = mint(ACCOUNT, API_KEY, "wrong", "bob", Duration::from_secs(60));
    for (what, credential) in [
        ("no token", None),
        ("garbage", Some("not-a-token".to_string())),
        ("expired", Some(expired)),
        ("wrong secret", Some(wrong_secret)),
        ("admin key", Some(ADMIN_KEY.to_string())),
    ] {
        let mut request = app
            .http
            .get(app.url("/v1/ws"))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(c) = credential {
            request = request.bearer_auth(c);
        }
        let r = answer(request.send().await.unwrap()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        assert_eq!(
            r.body["type"], "urn:callrelay:problem:unauthenticated",
            "{what}"
        );
        // The real client sees a failed handshake.
    }
    assert!(WsClient::connect(&app.base, "bad", None).await.is_err());
    // A plain GET with a good token is not an upgrade.
    let r = answer(
        app.http
            .get(app.url("/v1/ws"))
            .bearer_auth(token("bob"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert_eq!(
        r.body["type"],
        "urn:callrelay:problem:websocket-upgrade-required"
    );
}

#[tokio::test]
async fn a_closed_socket_stops_counting_at_once() {
    let app = spawn_with(TestConfig::redis()).await;
    let socket = app.connect_ws("bob").await;
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    socket.close().await;
    assert!(
        eventually(WAIT, || async {
            app.notify("bob").await.status == StatusCode::NOT_FOUND
        })
        .await
    );
    // Dropping the TCP connection without a close handshake has the same effect.
    let socket = app.connect_ws("carol").await;
    socket.abort();
    assert!(
        eventually(WAIT, || async {
            app.notify("carol").await.status == StatusCode::NOT_FOUND
        })
        .await
    );
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped() {
    let app = spawn_with(TestConfig {
        ping_interval_ms: 200,
        ..TestConfig::default()
    })
    .await;
    // A client that answers pings (it reads) stays connected well past two intervals.
    let mut alive = app.connect_ws("alive").await;
    alive.expect_silence(Duration::from_millis(1000)).await;
    assert_eq!(app.notify("alive").await.status, StatusCode::OK);
    // One that never reads never answers pings, and is dropped.
    let _silent = app.connect_ws("silent").await;
    assert_eq!(app.notify("silent").await.status, StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(3), || async {
            app.notify("silent").await.status == StatusCode::NOT_FOUND
        })
        .await,
        "an unresponsive socket must stop counting"
    );
}

#[tokio::test]
async fn a_slow_reader_cannot_queue_without_limit() {
    let app = spawn_with(TestConfig {
        queue_capacity: 2,
        ..TestConfig::default()
    })
    .await;
    // Connected, but never reading: the socket's TCP buffers fill, then its queue.
    let _slow = app.connect_ws("slow").await;
    let filler = "x".repeat(60 * 1024);
    let mut refused = None;
    for i in 0..1000 {
        let body = format!(
            r#"{{"twi_account_sid":"{ACCOUNT}","twi_to":"client:slow","twi_message_id":"RM{i}","twi_params":"{filler}"}}"#
        );
        let r = app.webhook(body.into_bytes()).await;
        if r.status != StatusCode::OK {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.expect("the queue is bounded: some webhook is refused");
    assert_eq!(
        r.status,
        StatusCode::BAD_GATEWAY,
        "after {i} webhooks: {}",
        r.text
    );
    assert_eq!(r.body, json!({"delivered": 0, "failed": 1, "removed": 0}));
}

#[tokio::test]
async fn shutdown_sends_going_away_and_waits_for_in_flight_webhooks() {
    let app = spawn_with(TestConfig {
        fake_apps: vec![("ios", "apns")],
        ..TestConfig::default()
    })
    .await;
    app.register_apns("bob", APNS_TOKEN).await;
    let mut socket = app.connect_ws("carol").await;
    app.fake("ios").slow(Duration::from_millis(600));

    let in_flight = {
        let http = app.http.clone();
        let body = payload(ACCOUNT, "bob");
        let url = app.url(&webhook_path(&body));
        let sig = sign(AUTH_TOKEN, &url);
        tokio::spawn(async move {
            http.post(url)
                .header("x-twilio-signature", sig)
                .body(body)
                .send()
                .await
                .map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.begin_shutdown();
    let frame = socket.closed(WAIT).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1001);
    assert_eq!(in_flight.await.unwrap().unwrap(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn oversize_client_messages_close_the_socket() {
    let app = spawn_app().await;
    let mut small = app.connect_ws("bob").await;
    // Small messages from clients are ignored; the socket stays a binding.
    small.send_text("hello").await.unwrap();
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    assert!(small.next_text(WAIT).await.is_some());

    let mut big = app.connect_ws("carol").await;
    big.send_text(&"x".repeat(10 * 1024)).await.unwrap();
    // The server refuses the frame and drops the connection; carol is no longer reachable.
    let _ = big.closed(WAIT).await;
    assert!(
        eventually(WAIT, || async {
            app.notify("carol").await.status == StatusCode::NOT_FOUND
        })
        .await
    );
}

/// A socket lives as long as the access token it was opened with is accepted (`exp` plus the
/// 30 s leeway), then gets a `4001` close frame so the client reconnects with a fresh token.
#[tokio::test]
async fn a_socket_is_closed_with_4001_when_its_access_token_expires() {
    let app = spawn_app().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    // Expired 25 s ago by its `exp`: still accepted for 5 s more.
    let token = callrelay::auth::access_token::mint_at(
        &callrelay::domain::AccountSid::parse(ACCOUNT).unwrap(),
        &callrelay::domain::ApiKeySid::parse(API_KEY).unwrap(),
        &callrelay::config::Secret::new(API_SECRET),
        &callrelay::domain::Identity::parse("bob").unwrap(),
        now - 60,
        Duration::from_secs(35),
    );
    let mut socket = WsClient::connect(&app.base, &token, None).await.unwrap();
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    assert!(socket.next_text(WAIT).await.is_some(), "alive until then");

    let frame = socket
        .closed(Duration::from_secs(15))
        .await
        .expect("a close frame when the token expires");
    assert_eq!(u16::from(frame.code), 4001);
    assert_eq!(frame.reason.as_str(), "access token expired");
    // The binding went with it, and the same token opens nothing any more.
    assert!(
        eventually(WAIT, || async {
            app.notify("bob").await.status == StatusCode::NOT_FOUND
        })
        .await
    );
    match WsClient::connect(&app.base, &token, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_client_that_closes_gets_a_close_frame_back_and_its_binding_goes() {
    let app = spawn_app().await;
    let socket = app.connect_ws("bob").await;
    assert!(
        socket.close_answered().await,
        "the server must answer a close frame with its own (else clients see 1006)"
    );
    let gone = eventually(Duration::from_secs(5), || async {
        app.notify("bob").await.status == reqwest::StatusCode::NOT_FOUND
    })
    .await;
    assert!(gone, "the closed socket still counted as a binding");
}
