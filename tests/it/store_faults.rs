//! Redis going away and coming back: quick 503s, then recovery without a restart.

use std::time::{Duration, Instant};

use futures_util::FutureExt;

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

/// Redis frozen, then killed with SIGKILL and restarted, under a steady webhook load and a
/// steady stream of registrations. Every webhook answer is a correct 200 or a 503, never a 404
/// for an identity that has a binding, and none takes longer than the webhook deadline plus a
/// small margin (the store's command timeout is longer than the deadline here, so it is the
/// deadline that bounds a frozen Redis). Redis keeps an append-only file fsynced on every write,
/// so every registration it acknowledged, before the kill or after, is there after the restart.
#[tokio::test]
async fn a_redis_kill_under_load_loses_nothing_and_lies_about_nothing() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const DEADLINE: Duration = Duration::from_millis(1000);
    const MARGIN: Duration = Duration::from_millis(250);

    let mut redis = RedisServer::start();
    let app = Arc::new(
        spawn_with(TestConfig {
            fake_apps: vec![("android", "fcm")],
            deadline_ms: DEADLINE.as_millis() as u64,
            command_timeout_ms: 3000,
            ..TestConfig::with_engine(Engine::RedisAt(redis.url()))
        })
        .await,
    );
    let register = {
        let app = app.clone();
        move |identity: String| {
            let app = app.clone();
            async move {
                let binding = serde_json::json!({
                    "channel": "fcm",
                    "address": format!("token-{identity}"),
                });
                let path = "/v1/bindings/phone";
                app.api(reqwest::Method::PUT, path, &token(&identity), Some(binding))
                    .await
                    .status
            }
        }
    };
    let identities: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    for identity in &identities {
        assert_eq!(register(identity.clone()).await, StatusCode::CREATED);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let mut webhooks = Vec::new();
    for w in 0..4 {
        let app = app.clone();
        let stop = stop.clone();
        let identities = identities.clone();
        webhooks.push(tokio::spawn(async move {
            let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
            let mut slowest = Duration::ZERO;
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let identity = &identities[i % identities.len()];
                i += 1;
                let started = Instant::now();
                let r = app.notify(identity).await;
                let took = started.elapsed();
                slowest = slowest.max(took);
                *statuses.entry(r.status.as_u16()).or_default() += 1;
                assert!(
                    r.status == StatusCode::OK || r.status == StatusCode::SERVICE_UNAVAILABLE,
                    "{identity}: {} {}",
                    r.status,
                    r.text
                );
                assert!(
                    took <= DEADLINE + MARGIN,
                    "{identity}: {} after {took:?}, past the {DEADLINE:?} deadline",
                    r.status
                );
            }
            (statuses, slowest)
        }));
    }
    // New identities registered all along; those acknowledged with 201 must survive.
    let registrations = {
        let register = register.clone();
        let stop = stop.clone();
        let killed = killed.clone();
        tokio::spawn(async move {
            let (mut before_kill, mut after_kill, mut refused) = (Vec::new(), Vec::new(), 0u32);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let identity = format!("new{n}");
                n += 1;
                let was_killed = killed.load(Ordering::SeqCst);
                match register(identity.clone()).await {
                    StatusCode::CREATED if was_killed => after_kill.push(identity),
                    StatusCode::CREATED => before_kill.push(identity),
                    StatusCode::SERVICE_UNAVAILABLE => refused += 1,
                    other => panic!("{identity}: registration answered {other}"),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (before_kill, after_kill, refused)
        })
    };

    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.pause();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.resume();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    killed.store(true, Ordering::SeqCst);
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);

    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for w in webhooks {
        let (s, slow) = w.await.unwrap();
        for (status, count) in s {
            *statuses.entry(status).or_default() += count;
        }
        slowest = slowest.max(slow);
    }
    let (before_kill, after_kill, refused) = registrations.await.unwrap();
    let sent: u32 = statuses.values().sum();
    eprintln!(
        "redis frozen 1.5 s, then SIGKILL and restart, under load: {sent} webhooks sent, \
         answers by status {statuses:?}, slowest {slowest:?} (deadline {DEADLINE:?}); \
         registrations acknowledged: {} before the kill, {} after, {refused} refused with 503",
        before_kill.len(),
        after_kill.len()
    );
    let ok = statuses.get(&200).copied().unwrap_or(0);
    let unavailable = statuses.get(&503).copied().unwrap_or(0);
    assert!(
        ok > 0 && unavailable > 0,
        "the outage must be visible: {statuses:?}"
    );
    assert!(!before_kill.is_empty(), "registrations before the kill");

    // Every acknowledged binding survived the kill.
    let get = |identity: String| {
        let app = app.clone();
        async move {
            app.api(
                reqwest::Method::GET,
                "/v1/bindings/phone",
                &token(&identity),
                None,
            )
            .await
            .status
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || get(identities[0].clone())
            .map(|s| s == StatusCode::OK))
        .await,
        "reconnects after the restart"
    );
    for identity in identities.iter().chain(&before_kill).chain(&after_kill) {
        assert_eq!(
            get(identity.clone()).await,
            StatusCode::OK,
            "{identity} lost its binding"
        );
    }
    // And delivery works again for everyone.
    for identity in &identities {
        assert_eq!(app.notify(identity).await.status, StatusCode::OK);
    }
}

/// Redis lost without a TCP reset (a VM gone, an address moved by a failover): every open
/// connection stalls, new ones go through. callrelay answers `503` quickly meanwhile, replaces
/// its store connection after a few timeouts and its replica-bus subscription after a few
/// unanswered keepalive pings, and serves again without a restart: a webhook on one replica
/// reaches a socket held by the other.
#[tokio::test]
async fn connections_that_stall_silently_are_replaced() {
    const COMMAND_TIMEOUT_MS: u64 = 300;
    let redis = RedisServer::start();
    let proxy = crate::helpers::proxy::FreezableProxy::start(
        format!("127.0.0.1:{}", redis.port).parse().unwrap(),
    )
    .await;
    let config = TestConfig {
        command_timeout_ms: COMMAND_TIMEOUT_MS,
        deadline_ms: 1000,
        ..TestConfig::with_engine(Engine::RedisAt(format!("redis://{}", proxy.addr)))
    };
    let a = spawn_with(config.clone()).await;
    let b = spawn_with(config).await;
    let mut bob = a.connect_ws("bob").await;
    assert_eq!(b.notify("bob").await.status, StatusCode::OK);
    assert!(bob.next_text(Duration::from_secs(5)).await.is_some());

    let before = proxy.connections();
    proxy.freeze();
    let frozen = Instant::now();
    let first = b.notify("bob").await;
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a stalled store is a 503: {}",
        first.text
    );
    // Bounded wait: a few command timeouts for the store connection, a few keepalive
    // seconds for the subscription; minutes (TCP's own retransmissions) would fail it.
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    let recovered = loop {
        let r = b.notify("bob").await;
        *statuses.entry(r.status.as_u16()).or_default() += 1;
        // 503 while the store connection is stalled; 502 (nobody acknowledged) while only
        // the subscription is; never a 404 for a socket that is there.
        assert!(
            [
                StatusCode::OK,
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE
            ]
            .contains(&r.status),
            "{} {}",
            r.status,
            r.text
        );
        if r.status == StatusCode::OK {
            break true;
        }
        if frozen.elapsed() > Duration::from_secs(10) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = frozen.elapsed();
    eprintln!(
        "connections frozen: answers by status {statuses:?}, served again after {took:?} \
         (command timeout {COMMAND_TIMEOUT_MS} ms); proxy connections {before} before, {} after",
        proxy.connections()
    );
    assert!(
        recovered,
        "still failing {took:?} after the freeze: {statuses:?}"
    );
    assert!(
        proxy.connections() > before,
        "recovery must come from new connections"
    );
    while bob.next_text(Duration::from_millis(200)).await.is_some() {}
    let r = b.notify("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(bob.next_text(Duration::from_secs(5)).await.is_some());
    assert_eq!(a.notify("bob").await.status, StatusCode::OK);
}
