//! Abuse limits: slow and idle clients, oversize heads, slow bodies, request rates, bindings
//! and sockets per identity, sockets and connections per replica.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

fn limits(extra: &str) -> TestConfig {
    TestConfig {
        fake_apps: vec![("android", "fcm")],
        extra: format!("[limits]\n{extra}\n"),
        ..TestConfig::default()
    }
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<(String, Instant)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((String::from_utf8_lossy(&out).into_owned(), Instant::now()));
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    let app = spawn_with(limits("header_read_timeout_ms = 300")).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    stream
        .write_all(b"GET /v1/bindings HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Keep sending a header byte now and then, never finishing.
    let writer = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if stream.write_all(b"X").await.is_err() {
                break;
            }
        }
    };
    writer.await;
    let closed = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "the connection must be closed");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_with(limits("header_read_timeout_ms = 300")).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed_at) = read_until_closed(&mut stream, Duration::from_secs(3))
        .await
        .expect("closed after idling");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..40.min(answer.len())]
    );
    let idle = closed_at - started;
    assert!(idle < Duration::from_secs(2), "closed after {idle:?}");
}

/// A head larger than `limits.max_header_bytes` gets hyper's automatic `431` (no body: the
/// request never reaches the router) and the connection is closed. The client sends exactly the
/// limit's worth of an unfinished head, which the server reads in full before answering, so the
/// close is a clean one and the answer cannot be lost to a reset.
#[tokio::test]
async fn oversize_request_heads_are_refused() {
    let app = spawn_with(limits("max_header_bytes = 8192")).await;
    let mut stream = connect(&app).await;
    let mut head = b"GET /v1/bindings HTTP/1.1\r\nHost: x\r\nX-Filler: ".to_vec();
    head.resize(8192, b'a');
    stream.write_all(&head).await.unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3))
        .await
        .expect("the server closes the connection");
    let (status_and_headers, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let mut lines = status_and_headers.lines();
    assert_eq!(
        lines.next(),
        Some("HTTP/1.1 431 Request Header Fields Too Large"),
        "{answer}"
    );
    let headers: Vec<String> = lines.map(str::to_ascii_lowercase).collect();
    for expected in ["connection: close", "content-length: 0"] {
        assert!(
            headers.iter().any(|h| h == expected),
            "{expected}: {answer}"
        );
    }
    assert_eq!(body, "", "no body: {answer}");

    // Normal requests still work.
    let r = app
        .api(Method::GET, "/v1/bindings", &token("bob"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_sent_too_slowly_times_out() {
    let app = spawn_with(TestConfig {
        deadline_ms: 200,
        ..limits("request_timeout_ms = 400")
    })
    .await;
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /v1/bindings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        token("bob")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let mut buf = [0u8; 4096];
    // Trickle the body; the answer arrives before it is complete.
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = stream.write_all(b" ").await;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
            && n > 0
        {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
            break;
        }
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "got {answer:?}");
    assert!(answer.contains("urn:callrelay:problem:request-timeout"));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn binding_requests_are_rate_limited_per_credential() {
    let app = spawn_with(limits("binding_requests_per_minute = 5")).await;
    let bob = token("bob");
    for _ in 0..5 {
        let r = app.api(Method::GET, "/v1/bindings", &bob, None).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = app.api(Method::GET, "/v1/bindings", &bob, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.body["type"], "urn:callrelay:problem:rate-limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "Retry-After {retry}");
    // A new token for bob is still bob; alice and the admin key have their own budgets.
    let r = app
        .api(Method::GET, "/v1/bindings", &token("bob"), None)
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = app
        .api(Method::GET, "/v1/bindings", &token("alice"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .api(
            Method::GET,
            &format!("/v1/bindings?account_sid={ACCOUNT}&identity=bob"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn bindings_per_identity_are_capped() {
    let app = spawn_with(limits("max_bindings_per_identity = 2")).await;
    let bob = token("bob");
    for id in ["a", "b"] {
        let r = app
            .api(
                Method::PUT,
                &format!("/v1/bindings/{id}"),
                &bob,
                Some(json!({"channel": "fcm", "address": id})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = app
        .api(
            Method::PUT,
            "/v1/bindings/c",
            &bob,
            Some(json!({"channel": "fcm", "address": "c"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.body["type"], "urn:callrelay:problem:too-many-bindings");
    // Replacing one, or registering a token bob already holds, is fine.
    let r = app
        .api(
            Method::PUT,
            "/v1/bindings/a",
            &bob,
            Some(json!({"channel": "fcm", "address": "a2"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .api(
            Method::POST,
            "/v1/bindings",
            &bob,
            Some(json!({"channel": "fcm", "address": "b"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Other identities have their own allowance.
    let r = app
        .api(
            Method::PUT,
            "/v1/bindings/c",
            &token("alice"),
            Some(json!({"channel": "fcm", "address": "c"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_configured_binding_size_limit_is_enforced() {
    let app = spawn_with(limits("max_binding_bytes = 1024")).await;
    let bob = token("bob");
    // A valid binding of about 1.2 KiB (a long FCM token): well under the 16 KiB default.
    let big = json!({"channel": "fcm", "address": "a".repeat(1200)});
    for (method, path) in [
        (Method::PUT, "/v1/bindings/big"),
        (Method::POST, "/v1/bindings"),
    ] {
        let r = app.api(method, path, &bob, Some(big.clone())).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
        assert_eq!(r.body["type"], "urn:callrelay:problem:payload-too-large");
        assert!(
            r.body["detail"].as_str().unwrap().contains("1024 bytes"),
            "{}",
            r.text
        );
    }
    let small = json!({"channel": "fcm", "address": "a".repeat(900)});
    let r = app
        .api(Method::PUT, "/v1/bindings/small", &bob, Some(small))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_configured_client_message_limit_is_enforced() {
    let wait = Duration::from_secs(5);
    let app = spawn_with(limits("max_client_message_bytes = 256")).await;
    let mut within = app.connect_ws("bob").await;
    within.send_text(&"x".repeat(200)).await.unwrap();
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    assert!(within.next_text(wait).await.is_some());

    // 1 KiB: under the 4 KiB default, over the configured limit. The socket is closed and
    // carol is no longer reachable.
    let mut over = app.connect_ws("carol").await;
    over.send_text(&"x".repeat(1024)).await.unwrap();
    let _ = over.closed(wait).await;
    assert!(
        eventually(wait, || async {
            app.notify("carol").await.status == StatusCode::NOT_FOUND
        })
        .await
    );
}

#[tokio::test]
async fn sockets_are_capped_per_identity_and_per_replica() {
    let app = spawn_with(limits("max_sockets_per_identity = 2\nmax_sockets = 3")).await;
    let _b1 = app.connect_ws("bob").await;
    let _b2 = app.connect_ws("bob").await;
    let refused = WsClient::connect(&app.base, &token("bob"), None).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS)
        }
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    let _a1 = app.connect_ws("alice").await;
    match WsClient::connect(&app.base, &token("carol"), None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE)
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let app = spawn_with(limits(
        "max_connections = 2\nheader_read_timeout_ms = 60000",
    ))
    .await;
    let first = connect(&app).await;
    let second = connect(&app).await;
    // Give the server a moment to take both.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = {
        let http = reqwest::Client::new();
        let url = app.url("/openapi.json");
        tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a third connection must wait");
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("served once a slot frees")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    drop(second);
}

/// `limits.max_sockets` holds when many clients connect at once: the slot is taken before the
/// store round trip that counts the identity's sockets, not checked before it and taken after.
#[tokio::test]
async fn concurrent_connects_cannot_pass_the_socket_cap_together() {
    let app = spawn_with(TestConfig {
        extra: "[limits]\nmax_sockets = 3\n".into(),
        ..TestConfig::redis()
    })
    .await;
    let attempts = (0..20).map(|i| {
        let base = app.base.clone();
        async move { WsClient::connect(&base, &token(&format!("user{i}")), None).await }
    });
    let results = futures_util::future::join_all(attempts).await;
    let mut open = Vec::new();
    for result in results {
        match result {
            Ok(socket) => open.push(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE)
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(open.len(), 3, "exactly max_sockets sockets open");
    assert!(
        app.metrics()
            .await
            .contains("callrelay_websocket_connections 3")
    );
}

/// The descriptor budget: an HTTP connection counts against `limits.max_connections` until it
/// is upgraded, the WebSocket against `limits.max_sockets` from before the upgrade until its
/// connection closes. With one of each, an open socket leaves room for one request and none
/// for a second socket; once closed, its slot serves the next.
#[tokio::test]
async fn an_upgraded_socket_counts_against_max_sockets_not_max_connections() {
    let app = spawn_with(limits(
        "max_connections = 1\nmax_sockets = 1\nmax_sockets_per_identity = 5",
    ))
    .await;
    let first = app.connect_ws("bob").await;
    let moved = eventually(WAIT, || async {
        let m = app.metrics().await;
        m.contains("callrelay_http_connections 0")
            && m.contains("callrelay_websocket_connections 1")
    });
    assert!(
        moved.await,
        "the socket left the connection count and entered the socket count"
    );
    // The one connection slot is free for a request...
    let get = app
        .http
        .get(app.url("/openapi.json"))
        .header("connection", "close")
        .send();
    let r = tokio::time::timeout(WAIT, get)
        .await
        .expect("a request is served beside an open socket")
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // ...but there is no second socket slot.
    match tokio::time::timeout(WAIT, WsClient::connect(&app.base, &token("bob"), None))
        .await
        .expect("answered, not left waiting")
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE)
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // Closing the socket frees its slot.
    first.close().await;
    let again = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(socket) = WsClient::connect(&app.base, &token("bob"), None).await {
                return socket;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a new socket once the first closed");
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    drop(again);
}
