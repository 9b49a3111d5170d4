//! Several callrelay replicas sharing one Redis: a webhook on one reaches a socket held by
//! another, and a replica that goes away takes its sockets' bindings with it.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

/// Two replicas configured alike: same Redis, same key prefix.
fn pair_config() -> TestConfig {
    TestConfig {
        presence_ttl_ms: 2000,
        ..TestConfig::redis()
    }
}

#[tokio::test]
async fn webhook_on_one_replica_reaches_a_socket_on_another() {
    let config = pair_config();
    let a = spawn_with(config.clone()).await;
    let b = spawn_with(config).await;
    let mut bob = b.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let r = a.webhook(body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 1, "failed": 0, "removed": 0}));
    assert_eq!(bob.next_text(WAIT).await.unwrap().as_bytes(), &body[..]);

    // Sockets on both replicas, webhook on either: both receive.
    let mut bob_on_a = a.connect_ws("bob").await;
    let r = b.notify("bob").await;
    assert_eq!(r.body["delivered"], 2);
    assert!(bob.next_text(WAIT).await.is_some());
    assert!(bob_on_a.next_text(WAIT).await.is_some());
}

/// A replica whose clock is ten minutes off, either way, neither hides another replica's live
/// socket (nor sweeps it away for everyone) nor has its own sockets lapse for the others:
/// leases are judged by Redis's clock.
#[tokio::test]
async fn a_replica_whose_clock_is_minutes_off_cannot_make_live_sockets_vanish() {
    let config = pair_config();
    let lease = Duration::from_millis(config.presence_ttl_ms);
    let skewed = SkewedClock::default();
    let a = spawn_with_clock(config.clone(), Some(Arc::new(skewed.clone()))).await;
    let b = spawn_with(config).await;
    let mut on_a = a.connect_ws("bob").await;
    let mut on_b = b.connect_ws("bob").await;
    for offset in [600, -600] {
        skewed.set_offset_seconds(offset);
        // Longer than a lease: every lease now in Redis was renewed, and every webhook judged
        // it, with the clock off.
        tokio::time::sleep(lease * 3 / 2).await;
        for (via, which) in [(&a, "the skewed replica"), (&b, "the replica on time")] {
            let r = via.notify("bob").await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "via {which}, clock off by {offset} s: {}",
                r.text
            );
            assert_eq!(
                r.body["delivered"], 2,
                "via {which}, clock off by {offset} s: both sockets"
            );
            assert!(
                on_a.next_text(WAIT).await.is_some(),
                "socket on the skewed replica"
            );
            assert!(
                on_b.next_text(WAIT).await.is_some(),
                "socket on the replica on time"
            );
        }
    }
}

#[tokio::test]
async fn a_socket_closed_on_the_other_replica_stops_counting() {
    let config = pair_config();
    let a = spawn_with(config.clone()).await;
    let b = spawn_with(config).await;
    let bob = b.connect_ws("bob").await;
    assert_eq!(a.notify("bob").await.status, StatusCode::OK);
    bob.abort();
    assert!(
        eventually(Duration::from_millis(2500), || async {
            a.notify("bob").await.status == StatusCode::NOT_FOUND
        })
        .await,
        "404 within the presence window after the socket died"
    );
}

#[tokio::test]
async fn a_killed_replica_takes_its_sockets_bindings_with_it_within_seconds() {
    let config = pair_config();
    let a = spawn_with(config.clone()).await;
    let mut b = ProcessApp::start(&config).await;
    let mut bob = WsClient::connect(&b.base, &token("bob"), None)
        .await
        .unwrap();
    let r = a.notify("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(bob.next_text(WAIT).await.is_some());

    b.kill();
    let killed = std::time::Instant::now();
    // Until the lease runs out the socket still counts, but it is not reported delivered.
    let r = a.notify("bob").await;
    assert_ne!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.notify("bob").await.status == StatusCode::NOT_FOUND
        })
        .await,
        "the dead replica's socket must stop counting"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(4),
        "took {:?} (lease 2 s)",
        killed.elapsed()
    );
}

#[tokio::test]
async fn a_replica_stopped_with_sigterm_closes_sockets_and_withdraws_them_at_once() {
    let config = TestConfig {
        // A long lease: a 404 right away proves the presence was withdrawn, not expired.
        presence_ttl_ms: 60_000,
        ..TestConfig::redis()
    };
    let a = spawn_with(config.clone()).await;
    let mut b = ProcessApp::start(&config).await;
    let mut bob = WsClient::connect(&b.base, &token("bob"), None)
        .await
        .unwrap();
    assert_eq!(a.notify("bob").await.status, StatusCode::OK);
    assert!(bob.next_text(WAIT).await.is_some());
    let status = b.terminate();
    assert!(status.success(), "graceful exit: {status:?}");
    let frame = bob.closed(WAIT).await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1001);
    assert_eq!(a.notify("bob").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_notification_refused_for_a_lapsed_socket_is_delivered_when_retried_later() {
    let config = pair_config();
    let a = spawn_with(config.clone()).await;
    let mut b = ProcessApp::start(&config).await;
    let _bob = WsClient::connect(&b.base, &token("bob"), None)
        .await
        .unwrap();
    b.kill();
    // The dead replica's presence lingers in Redis after its lease lapsed: the lookup sees an
    // entry, and must not keep the notification claimed when it answers 404.
    let body = with_message_id(
        &payload(ACCOUNT, "bob"),
        "RMlapsed0000000000000000000000000",
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.webhook(body.clone()).await.status == StatusCode::NOT_FOUND
        })
        .await,
        "404 once the lease lapsed"
    );
    // Twilio retries the same notification after the callee came back.
    let mut bob = a.connect_ws("bob").await;
    let r = a.webhook(body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 1, "failed": 0, "removed": 0}));
    assert_eq!(bob.next_text(WAIT).await.unwrap().as_bytes(), &body[..]);
}

/// Many webhooks at once through one replica to sockets held by another: the delivery
/// requests and their acknowledgements travel together on the replica bus, and each arrives
/// whole, once, at its own socket.
#[tokio::test]
async fn a_burst_of_webhooks_reaches_sockets_on_another_replica_each_exactly_once() {
    const SOCKETS: usize = 8;
    const PER_SOCKET: usize = 25;
    let config = pair_config();
    let a = spawn_with(config.clone()).await;
    let b = spawn_with(config).await;
    let mut sockets = Vec::new();
    for i in 0..SOCKETS {
        sockets.push(b.connect_ws(&format!("burst{i}")).await);
    }
    let bodies: Vec<(usize, Vec<u8>)> = (0..SOCKETS * PER_SOCKET)
        .map(|n| {
            (
                n % SOCKETS,
                payload(ACCOUNT, &format!("burst{}", n % SOCKETS)),
            )
        })
        .collect();
    let answers =
        futures_util::future::join_all(bodies.iter().map(|(_, body)| a.webhook(body.clone())))
            .await;
    for r in &answers {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body, json!({"delivered": 1, "failed": 0, "removed": 0}));
    }
    for (i, socket) in sockets.iter_mut().enumerate() {
        let mut expected: Vec<String> = bodies
            .iter()
            .filter(|(to, _)| *to == i)
            .map(|(_, body)| String::from_utf8(body.clone()).unwrap())
            .collect();
        let mut received = Vec::new();
        while let Some(text) = socket.next_text(Duration::from_millis(500)).await {
            received.push(text);
        }
        expected.sort();
        received.sort();
        assert_eq!(received, expected, "socket burst{i}");
    }
}
