//! Scenario 5, push: webhooks for identities with one APNs (VoIP) or one FCM binding,
//! delivered to the local mock APNs (HTTP/2 over TLS, ES256 provider tokens checked) and mock
//! FCM (OAuth token endpoint and `messages:send`), closed loop at fixed concurrency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{check_quiet, webhooks_for};
use crate::Bench;
use crate::client::{self, Conn};
use crate::load;
use crate::procs::{ACCOUNT, ADMIN_KEY, Callrelay, Error, Redis};
use crate::report::{Better, Samples};
use callrelay_testkit::apns::{MockApns, TeamKey};
use callrelay_testkit::fcm::MockFcm;

const CEILING: f64 = 30_000.0;

fn apps_toml(key: &TeamKey, apns: &MockApns, fcm: &MockFcm) -> String {
    apns.token_app("ios", "com.example.bench", key, "")
        + &fcm.app_toml("android", "callrelay-bench")
}

/// Registers one binding per identity through the bindings API, as an app backend would.
pub(super) async fn register(
    addr: SocketAddr,
    identities: &[String],
    binding: impl Fn(usize) -> String,
) -> Result<(), Error> {
    let mut conn = Conn::new(addr);
    for (i, identity) in identities.iter().enumerate() {
        let path =
            format!("/v1/bindings/{identity}-device?account_sid={ACCOUNT}&identity={identity}");
        let authorization = format!("Bearer {ADMIN_KEY}");
        let headers = [
            ("Authorization", authorization.as_str()),
            ("Content-Type", "application/json"),
        ];
        let body = binding(i);
        let request = client::request("PUT", &path, &addr.to_string(), &headers, body.as_bytes());
        let answer = conn.exchange(&request).await?;
        if answer.status != 201 {
            return Err(format!(
                "registering {identity}: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            )
            .into());
        }
    }
    Ok(())
}

pub async fn run(b: &mut Bench) -> Result<(), Error> {
    let key = TeamKey::generate("TEAM123456", "KEY1234567");
    let apns = MockApns::token_auth(&[&key]).await;
    let fcm = MockFcm::start().await;
    fcm.answer_at_once();
    let prefix = b.prefix();
    // A Redis of its own, so that its memory before and after the bindings are registered
    // says what a binding costs (nothing else writes to it, nothing expires meanwhile).
    let redis = Redis::start()?;
    let relay = Callrelay::start(&redis, &prefix, &apps_toml(&key, &apns, &fcm))?;
    let n = b.push_identities;
    let empty = redis.used_memory()?;
    let ios: Arc<Vec<String>> = Arc::new((0..n).map(|i| format!("ios{i}")).collect());
    let android: Arc<Vec<String>> = Arc::new((0..n).map(|i| format!("android{i}")).collect());
    register(relay.addr, &ios, |i| {
        format!(
            r#"{{"channel":"apns","address":"{:064x}","app":"ios"}}"#,
            i + 1
        )
    })
    .await?;
    register(relay.addr, &android, |i| {
        format!(r#"{{"channel":"fcm","address":"fcm-device-token-{i}","app":"android"}}"#)
    })
    .await?;
    let per_binding = redis.used_memory()?.saturating_sub(empty) as f64 / (2 * n) as f64;

    let mut samples = Samples::default();
    samples.add("redis per binding", per_binding);
    let (c, seconds) = (b.concurrency, b.duration.as_secs_f64());
    for (name, identities) in [("APNs", ios), ("FCM", android)] {
        let pushes = || {
            if name == "APNs" {
                apns.request_count()
            } else {
                fcm.sent_count()
            }
        };
        let who = |list: &Arc<Vec<String>>| {
            let list = list.clone();
            move |i: usize| list[i % list.len()].clone()
        };
        // Warm-up: TLS handshakes, the provider token, the OAuth token.
        let run = b.run_id();
        let warm = webhooks_for(relay.addr, run, 500.0, 1.0, who(&identities));
        load::closed_loop(relay.addr, warm, c, Duration::from_secs(2))
            .await
            .expect_all(200, &format!("{name} warm-up"))?;
        for _ in 0..b.runs {
            let run = b.run_id();
            let hooks = webhooks_for(relay.addr, run, CEILING, seconds, who(&identities));
            let before = pushes();
            let t = load::closed_loop(relay.addr, hooks, c, b.duration).await;
            t.expect_all(200, &format!("{name} pushes"))?;
            let sent = (pushes() - before) as u64;
            let delivered = t.count(200);
            // Every delivered webhook reached the mock; a push retried after a connection
            // error reaches it twice (at least once is what HTTP offers), so more is allowed
            // and shown.
            if sent < delivered {
                return Err(format!(
                    "{name}: {delivered} webhooks delivered but the mock saw only {sent} pushes"
                )
                .into());
            }
            if sent > delivered {
                println!(
                    "    {name}: {} pushes retried; results: {:?}",
                    sent - delivered,
                    relay.metrics("callrelay_push_results")
                );
            }
            samples.add(name, delivered as f64 / t.elapsed.as_secs_f64());
        }
    }
    let scenario = "5. push (mocks)";
    b.row(
        scenario,
        &format!("APNs VoIP pushes/s, c={c}"),
        &samples,
        ("APNs", None),
        Better::More,
        "pushes/s",
    );
    b.row(
        scenario,
        &format!("FCM data messages/s, c={c}"),
        &samples,
        ("FCM", None),
        Better::More,
        "pushes/s",
    );
    b.row(
        scenario,
        &format!("Redis memory per binding, {} registered", 2 * n),
        &samples,
        ("redis per binding", None),
        Better::Less,
        "bytes",
    );
    check_quiet(&relay)?;
    super::push_channels::run(b, &key, &apns, &fcm).await
}
