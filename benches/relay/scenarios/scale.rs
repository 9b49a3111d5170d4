//! Scenario 9, cost at scale: what a million devices cost in Redis, and whether anything gets
//! slower as the store grows.
//!
//! - Memory per binding: N FCM bindings (152-character tokens, 32-character ids, one per
//!   identity) registered through the store itself (`Store::put_binding`, 256 at a time) in a
//!   Redis of their own; `used_memory` after minus before, over N, index included. Beside it,
//!   the same N written as versions before 0.2 laid them out (JSON per binding, an owner key
//!   and a claims hash per token), in another Redis of its own.
//! - Flat cost: lookup (`404`) and FCM delivery at c=32 against a store holding 1,000
//!   bindings and against the one holding the largest N, in turn (the order turning every
//!   run); then delivery to identities with 1 and with 20 bindings (the cost of each extra
//!   target).
//! - The bindings API: registrations per second through `PUT /v1/bindings/{id}` at c=32, and
//!   the CPU each takes in callrelay and in Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use time::OffsetDateTime;

use super::{CpuMeter, check_quiet, webhooks_for};
use crate::Bench;
use crate::client;
use crate::load;
use crate::procs::{ACCOUNT, ADMIN_KEY, Callrelay, Error, Redis};
use crate::report::{Better, Latency, Samples};
use crate::webhooks::Webhook;
use callrelay::domain::{AccountSid, Binding, BindingId, Identity, PushChannel, whole_millis};
use callrelay::store::Store;
use callrelay::store::redis::Keys;
use callrelay_testkit::fcm::MockFcm;

const SCENARIO: &str = "9. cost at scale";
/// Registrations the store is given at once while a store is filled.
const IN_FLIGHT: usize = 256;
/// Identities every delivery run sends to: present in the small and the large store alike.
const DELIVERED_TO: usize = 1000;
/// Bindings of each identity in the fan-out measurement.
const FAN_OUT: usize = 20;
const CEILING: f64 = 40_000.0;

/// An FCM registration token of the usual length, unique to `i`.
fn fcm_token(i: usize) -> String {
    let head = format!("c{i:09}:APA91b");
    let mut token = head.clone();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while token.len() < 152 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        token.push(alphabet[(x % 64) as usize] as char);
    }
    token
}

fn identity(i: usize) -> String {
    format!("user-{i:07}")
}

/// Like a server-assigned id: 32 hexadecimal digits.
fn binding_id(i: usize, k: usize) -> String {
    format!(
        "{:016x}{:016x}",
        i as u64 ^ 0x5bd1_e995,
        (k as u64) << 32 | 0x2545_f491
    )
}

fn binding(i: usize, k: usize, token: usize, now: OffsetDateTime) -> Binding {
    let now = whole_millis(now);
    Binding {
        id: BindingId::parse(&binding_id(i, k)).expect("a valid id"),
        account_sid: AccountSid::parse(ACCOUNT).expect("a valid account"),
        identity: Identity::parse(&identity(i)).expect("a valid identity"),
        channel: PushChannel::Fcm,
        address: fcm_token(token),
        app: "android".into(),
        apns_environment: None,
        push_type: None,
        device_id: None,
        ttl_seconds: callrelay::domain::DEFAULT_TTL_SECONDS,
        created_at: now,
        updated_at: now,
        expires_at: now + Duration::from_secs(callrelay::domain::DEFAULT_TTL_SECONDS),
    }
}

async fn open_store(redis: &Redis, prefix: &str) -> Result<Arc<dyn Store>, Error> {
    let config = callrelay::config::from_toml_str(&format!(
        "[store]\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\ncommand_timeout_ms = 10000\n",
        redis.url()
    ))
    .map_err(|e| format!("{e:?}"))?;
    Ok(callrelay::store::open(&config.store)
        .await
        .map_err(|e| e.to_string())?)
}

/// Registers identities `range`, each with `per_identity` bindings, through the store.
async fn fill(
    store: &Arc<dyn Store>,
    range: std::ops::Range<usize>,
    per_identity: usize,
) -> Result<(), Error> {
    let now = OffsetDateTime::now_utc();
    let jobs = range.flat_map(|i| (0..per_identity).map(move |k| (i, k)));
    let mut puts = futures_util::stream::iter(jobs)
        .map(|(i, k)| {
            let store = store.clone();
            async move { store.put_binding(binding(i, k, i * FAN_OUT + k, now)).await }
        })
        .buffer_unordered(IN_FLIGHT);
    while let Some(result) = puts.next().await {
        result.map_err(|e| format!("registering a binding: {e}"))?;
    }
    Ok(())
}

/// Writes identities `0..n` (one binding each) as versions before 0.2 did: the binding's
/// JSON in the identity's hash, the token's owner string and claims hash.
async fn fill_before_0_2(redis: &Redis, prefix: &str, n: usize) -> Result<(), Error> {
    let client = redis::Client::open(redis.url()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let keys = Keys::new(prefix);
    let now = OffsetDateTime::now_utc();
    let ttl_ms = callrelay::domain::DEFAULT_TTL_SECONDS * 1000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let mut b = binding(i, 0, i * FAN_OUT, now);
            // As registered then: nanoseconds in the times.
            b.created_at = now;
            b.updated_at = now;
            let claim = 1_765_150_000_000_000 + i as u64;
            let json = serde_json::to_string(&b).map_err(|e| e.to_string())?;
            let committed = format!("{},\"claim\":{claim}}}", &json[..json.len() - 1]);
            let owner = serde_json::to_string(&(b.identity.as_str(), b.id.as_str()))
                .map_err(|e| e.to_string())?;
            let hash = keys.legacy_bindings(&b.account_sid, &b.identity);
            let address = keys.legacy_address(&b.account_sid, b.channel, &b.address);
            let claims = keys.legacy_claims(&b.account_sid, b.channel, &b.address);
            pipe.hset(&hash, b.id.as_str(), committed)
                .ignore()
                .pexpire(&hash, ttl_ms as i64)
                .ignore()
                .cmd("SET")
                .arg(&address)
                .arg(&owner)
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .hset_multiple(&claims, &[(owner.as_str(), claim), ("#seq", claim)])
                .ignore()
                .pexpire(&claims, ttl_ms as i64)
                .ignore();
        }
        let () = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A Redis of its own holding `n` bindings of the current layout (registered through the
/// store), with its memory per binding and the registrations per second it took.
struct Filled {
    redis: Redis,
    prefix: String,
    per_binding: f64,
    rate: f64,
}

async fn filled(b: &mut Bench, n: usize, per_identity: usize) -> Result<Filled, Error> {
    let redis = Redis::start()?;
    let prefix = b.prefix();
    let store = open_store(&redis, &prefix).await?;
    let empty = redis.used_memory()?;
    let started = Instant::now();
    fill(&store, 0..n, per_identity).await?;
    let rate = (n * per_identity) as f64 / started.elapsed().as_secs_f64();
    let per_binding = redis.used_memory()?.saturating_sub(empty) as f64 / (n * per_identity) as f64;
    Ok(Filled {
        redis,
        prefix,
        per_binding,
        rate,
    })
}

/// Lookup (`404`) and FCM delivery runs against one store: throughput and p99 under `name`.
async fn measure(
    b: &mut Bench,
    relay: &Callrelay,
    fcm: &MockFcm,
    name: &str,
    targets: usize,
    samples: &mut Samples,
) -> Result<(), Error> {
    let seconds = b.duration.as_secs_f64();
    let c = b.concurrency;
    let run = b.run_id();
    let nobody = |i: usize| format!("nobody{}", i % 10_000);
    let hooks = webhooks_for(relay.addr, run, CEILING, seconds, nobody);
    let t = load::closed_loop(relay.addr, hooks, c, b.duration).await;
    t.expect_all(404, &format!("{name} lookup"))?;
    samples.add(&format!("{name} lookup"), t.per_second());
    samples.add_latency(&format!("{name} lookup"), Latency::of(t.latencies_ns));

    let run = b.run_id();
    let hooks = webhooks_for(relay.addr, run, CEILING, seconds, |i| {
        identity(i % DELIVERED_TO)
    });
    let cpu = CpuMeter::start(&[relay.pid()]);
    let before = fcm.sent_count();
    let t = load::closed_loop(relay.addr, hooks, c, b.duration).await;
    t.expect_all(200, &format!("{name} delivery"))?;
    let pushes = fcm.sent_count() - before;
    if (pushes as u64) < t.count(200) * targets as u64 {
        return Err(format!("{name}: {} webhooks but {pushes} pushes", t.count(200)).into());
    }
    samples.add(&format!("{name} delivery"), t.per_second());
    samples.add(
        &format!("{name} pushes"),
        pushes as f64 / t.elapsed.as_secs_f64(),
    );
    samples.add(
        &format!("{name} cpu per webhook"),
        cpu.micros_per(t.answered()),
    );
    samples.add_latency(&format!("{name} delivery"), Latency::of(t.latencies_ns));
    Ok(())
}

async fn warm_up(b: &mut Bench, relay: &Callrelay) -> Result<(), Error> {
    let run = b.run_id();
    let hooks = webhooks_for(relay.addr, run, 1000.0, 1.0, |i| identity(i % DELIVERED_TO));
    load::closed_loop(relay.addr, hooks, b.concurrency, Duration::from_secs(1))
        .await
        .expect_all(200, "scale warm-up")
}

/// `PUT /v1/bindings/{id}` requests registering identities `from..from + n`, one binding each.
fn registrations(addr: std::net::SocketAddr, from: usize, n: usize) -> Arc<Vec<Webhook>> {
    let authorization = format!("Bearer {ADMIN_KEY}");
    let headers = [
        ("Authorization", authorization.as_str()),
        ("Content-Type", "application/json"),
    ];
    Arc::new(
        (from..from + n)
            .map(|i| {
                let path = format!(
                    "/v1/bindings/{}?account_sid={ACCOUNT}&identity={}",
                    binding_id(i, 0),
                    identity(i)
                );
                let body = format!(
                    r#"{{"channel":"fcm","address":"{}","app":"android"}}"#,
                    fcm_token(i * FAN_OUT)
                );
                Webhook {
                    wire: client::request(
                        "PUT",
                        &path,
                        &addr.to_string(),
                        &headers,
                        body.as_bytes(),
                    ),
                }
            })
            .collect(),
    )
}

pub async fn run(b: &mut Bench) -> Result<(), Error> {
    let sizes: Vec<usize> = if b.smoke {
        vec![2_000]
    } else {
        vec![10_000, 100_000, 1_000_000]
    };
    let mut samples = Samples::default();

    // Memory per binding, before and after, at every size; the largest store stays for the
    // flat-cost runs.
    let mut largest = None;
    for &n in &sizes {
        let before = Redis::start()?;
        let prefix = b.prefix();
        let empty = before.used_memory()?;
        fill_before_0_2(&before, &prefix, n).await?;
        let old = before.used_memory()?.saturating_sub(empty) as f64 / n as f64;
        drop(before);
        let after = filled(b, n, 1).await?;
        println!(
            "    {n} bindings: {:.0} bytes each (before 0.2: {old:.0}); registered through the store at {:.0}/s",
            after.per_binding, after.rate
        );
        b.curves.point(
            "memory",
            &[
                ("bindings", n as f64),
                ("bytes", after.per_binding),
                ("before", old),
            ],
        );
        samples.add(&format!("memory {n}"), after.per_binding);
        samples.add(&format!("memory before {n}"), old);
        b.row(
            SCENARIO,
            &format!("Redis memory per FCM binding, {n} registered"),
            &samples,
            (&format!("memory {n}"), None),
            Better::Less,
            "bytes",
        );
        b.row(
            SCENARIO,
            &format!("the same, as laid out before 0.2, {n}"),
            &samples,
            (&format!("memory before {n}"), None),
            Better::Less,
            "bytes",
        );
        largest = Some((n, after));
    }
    let (big_n, big) = largest.expect("at least one size");

    // Flat cost: the same work against 1,000 bindings and against `big_n`.
    let small = filled(b, DELIVERED_TO, 1).await?;
    let fan = filled(b, DELIVERED_TO, FAN_OUT).await?;
    let fcm = MockFcm::start().await;
    fcm.answer_at_once();
    let app = fcm.app_toml("android", "callrelay-bench");
    let on_small = Callrelay::start(&small.redis, &small.prefix, &app)?;
    let on_big = Callrelay::start(&big.redis, &big.prefix, &app)?;
    let on_fan = Callrelay::start(&fan.redis, &fan.prefix, &app)?;
    for relay in [&on_small, &on_big, &on_fan] {
        warm_up(b, relay).await?;
    }
    let big_name = format!("{big_n}");
    for run in 0..b.runs {
        // The order turns every run, so that the machine's drift falls on both stores alike.
        let mut pair = [(&on_small, "1000"), (&on_big, big_name.as_str())];
        if run % 2 == 1 {
            pair.reverse();
        }
        for (relay, name) in pair {
            measure(b, relay, &fcm, name, 1, &mut samples).await?;
        }
        measure(b, &on_fan, &fcm, "fan", FAN_OUT, &mut samples).await?;
        let ratio = |s: &Samples, what: &str| {
            let last = |name: &str| s.all(name).last().copied();
            last(&format!("{big_name} {what}")).zip(last(&format!("1000 {what}")))
        };
        for what in ["lookup", "delivery", "lookup p99", "delivery p99"] {
            if let Some((big, small)) = ratio(&samples, what) {
                samples.add(&format!("ratio {what}"), big / small);
            }
        }
        let last = |name: &str| samples.all(name).last().copied().unwrap_or(f64::NAN);
        let extra =
            (last("fan cpu per webhook") - last("1000 cpu per webhook")) / (FAN_OUT - 1) as f64;
        samples.add("cpu per extra target", extra);
    }
    let c = b.concurrency;
    for (what, unit, better) in [
        ("lookup", "req/s", Better::More),
        ("delivery", "req/s", Better::More),
        ("lookup p99", "ms", Better::Less),
        ("delivery p99", "ms", Better::Less),
    ] {
        b.row(
            SCENARIO,
            &format!("{what}, c={c}, 1,000 bindings present"),
            &samples,
            (&format!("1000 {what}"), None),
            better,
            unit,
        );
        b.row(
            SCENARIO,
            &format!("{what}, c={c}, {big_n} bindings present"),
            &samples,
            (&format!("{big_name} {what}"), None),
            better,
            unit,
        );
        b.row(
            SCENARIO,
            &format!("{what}: {big_n} ÷ 1,000 bindings"),
            &samples,
            (&format!("ratio {what}"), None),
            Better::More,
            "x",
        );
    }
    for (measure, name, unit, better) in [
        (
            "FCM deliveries/s, 1 binding per identity",
            "1000 delivery",
            "req/s",
            Better::More,
        ),
        (
            "FCM deliveries/s, 20 bindings per identity",
            "fan delivery",
            "req/s",
            Better::More,
        ),
        (
            "FCM pushes/s, 20 bindings per identity",
            "fan pushes",
            "pushes/s",
            Better::More,
        ),
        (
            "server CPU per webhook, 1 binding",
            "1000 cpu per webhook",
            "µs",
            Better::Less,
        ),
        (
            "server CPU per webhook, 20 bindings",
            "fan cpu per webhook",
            "µs",
            Better::Less,
        ),
        (
            "server CPU per extra target",
            "cpu per extra target",
            "µs",
            Better::Less,
        ),
    ] {
        b.row(SCENARIO, measure, &samples, (name, None), better, unit);
    }
    for relay in [&on_small, &on_big, &on_fan] {
        check_quiet(relay)?;
    }
    drop((on_small, on_big, on_fan, small, big, fan));

    // The bindings API, on a store of its own.
    let api = Redis::start()?;
    let prefix = b.prefix();
    let relay = Callrelay::start(&api, &prefix, &app)?;
    let per_run = if b.smoke { 2_000 } else { 40_000 };
    let mut next = 0;
    for _ in 0..b.runs {
        let requests = registrations(relay.addr, next, per_run);
        next += per_run;
        let cpu = CpuMeter::start(&[relay.pid()]);
        let redis_cpu = CpuMeter::start(&[api.pid()]);
        let t = load::closed_loop(relay.addr, requests, c, b.duration).await;
        t.expect_all(201, "registrations")?;
        samples.add("registrations", t.per_second());
        samples.add("registration cpu", cpu.micros_per(t.answered()));
        samples.add("registration redis cpu", redis_cpu.micros_per(t.answered()));
        samples.add_latency("registration", Latency::of(t.latencies_ns));
    }
    for (measure, name, unit, better) in [
        (
            format!("bindings API: registrations/s, c={c}"),
            "registrations",
            "req/s",
            Better::More,
        ),
        (
            "bindings API: server CPU per registration".to_owned(),
            "registration cpu",
            "µs",
            Better::Less,
        ),
        (
            "bindings API: Redis CPU per registration".to_owned(),
            "registration redis cpu",
            "µs",
            Better::Less,
        ),
        (
            "bindings API: latency p99".to_owned(),
            "registration p99",
            "ms",
            Better::Less,
        ),
    ] {
        b.row(SCENARIO, &measure, &samples, (name, None), better, unit);
    }
    check_quiet(&relay)
}
