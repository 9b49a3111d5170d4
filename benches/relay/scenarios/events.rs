//! Scenario 6, events: status callbacks kept (closed loop at c=32, answered `200`), their way
//! to a live subscriber (an event feed, open loop at a fixed rate: from each callback's
//! scheduled send to its frame), and forwarding to an HTTP target (a backlog of events handed
//! to a local receiver that answers `204`, in order, one at a time). callrelay only: the
//! baseline has no event endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{CpuMeter, public_url};
use crate::Bench;
use crate::load;
use crate::procs::{ACCOUNT, ADMIN_KEY, Backend, Callrelay, Error};
use crate::report::{Better, Latency, Samples};
use crate::webhooks::{self, Webhook};

const SCENARIO: &str = "6. events";
/// The most callbacks per second a closed-loop run is prepared for.
const CEILING: f64 = 40_000.0;
const FEED_RATE: f64 = 1000.0;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Events the forwarding run hands to its target.
const BACKLOG: u64 = 20_000;

fn callbacks(addr: SocketAddr, run: u32, count: usize) -> Arc<Vec<Webhook>> {
    let base = public_url(addr);
    Arc::new(
        (0..count)
            .map(|i| webhooks::callback(&base, run, i as u64))
            .collect(),
    )
}

pub async fn run(b: &mut Bench) -> Result<(), Error> {
    let mut samples = Samples::default();
    for _ in 0..b.runs {
        let prefix = b.prefix();
        let relay = Callrelay::start(&b.redis, &prefix, "")?;
        // The feed first, while the log is empty: a feed without `after` starts with the
        // whole backlog, which would be measured too.
        subscriber(b, &relay, &mut samples).await?;
        ingest(b, &relay, &mut samples).await?;
        super::check_quiet(&relay)?;
        drop(relay);
        forward(b, &mut samples).await?;
    }
    let throughput = format!("status callbacks kept/s, c={}", b.concurrency);
    b.row(
        SCENARIO,
        &throughput,
        &samples,
        ("kept", None),
        Better::More,
        "req/s",
    );
    b.row(
        SCENARIO,
        "server CPU per callback",
        &samples,
        ("kept cpu", None),
        Better::Less,
        "µs",
    );
    b.row(
        SCENARIO,
        "Redis CPU per callback",
        &samples,
        ("kept redis cpu", None),
        Better::Less,
        "µs",
    );
    b.row(
        SCENARIO,
        "forwarded to one target, events/s",
        &samples,
        ("forwarded", None),
        Better::More,
        "events/s",
    );
    for p in ["p50", "p99"] {
        b.row(
            SCENARIO,
            &format!("callback to subscriber {p} at {FEED_RATE}/s"),
            &samples,
            (&format!("feed {p}"), None),
            Better::Less,
            "ms",
        );
    }
    Ok(())
}

async fn ingest(b: &mut Bench, relay: &Callrelay, samples: &mut Samples) -> Result<(), Error> {
    let run = b.run_id();
    let count = (CEILING * b.duration.as_secs_f64()).ceil() as usize;
    let hooks = callbacks(relay.addr, run, count.max(1));
    let cpu = CpuMeter::start(&[relay.pid()]);
    let redis_cpu = CpuMeter::start(&b.redis.pids());
    let t = load::closed_loop(relay.addr, hooks, b.concurrency, b.duration).await;
    t.expect_all(200, "status callbacks")?;
    samples.add("kept", t.per_second());
    samples.add("kept cpu", cpu.micros_per(t.answered()));
    samples.add("kept redis cpu", redis_cpu.micros_per(t.answered()));
    Ok(())
}

/// A backlog of `BACKLOG` callbacks kept by one replica, then a second replica on the same
/// log with a target: a new target starts at the oldest event kept, so it forwards the whole
/// backlog, one event at a time.
async fn forward(b: &mut Bench, samples: &mut Samples) -> Result<(), Error> {
    let prefix = b.prefix();
    let backlog = if b.smoke { 500 } else { BACKLOG };
    let keeper = Callrelay::start(&b.redis, &prefix, "")?;
    let run = b.run_id();
    let hooks = callbacks(keeper.addr, run, backlog as usize);
    load::closed_loop(keeper.addr, hooks, b.concurrency, Duration::from_secs(600))
        .await
        .expect_all(200, "the forwarding backlog")?;
    drop(keeper);
    let prefix = prefix.as_str();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let router = axum::Router::new().route(
        "/events",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/events", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let extra = format!(
        "[[accounts.event_targets]]\nname = \"bench\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n"
    );
    let started = Instant::now();
    let forwarder = Callrelay::start(&b.redis, prefix, &extra)?;
    let limit = started + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < backlog {
        if Instant::now() > limit {
            return Err(format!(
                "forwarding: {} of {backlog} events in 120 s",
                received.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    samples.add(
        "forwarded",
        backlog as f64 / started.elapsed().as_secs_f64(),
    );
    super::check_quiet(&forwarder)?;
    drop(forwarder);
    server.abort();
    Ok(())
}

/// A feed subscriber while callbacks arrive at `FEED_RATE`: from each callback's scheduled
/// send to the frame carrying it.
async fn subscriber(b: &mut Bench, relay: &Callrelay, samples: &mut Samples) -> Result<(), Error> {
    let run = b.run_id();
    let url = format!(
        "ws://{}/v1/events/ws?account_sid={ACCOUNT}&types=participant-connected",
        relay.addr
    );
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {ADMIN_KEY}").parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    let count = ((FEED_RATE * b.duration.as_secs_f64()) as usize).max(10);
    let marker = format!("\"BenchIndex\":\"{run}-");
    let reader = tokio::spawn(async move {
        let mut arrivals: HashMap<u64, Instant> = HashMap::new();
        let (_, mut frames) = socket.split();
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        while arrivals.len() < count {
            let frame = tokio::select! {
                _ = &mut deadline => break,
                frame = frames.next() => frame,
            };
            let Some(Ok(Message::Text(text))) = frame else {
                continue;
            };
            let at = Instant::now();
            if let Some(start) = text.find(&marker) {
                let digits: String = text[start + marker.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(i) = digits.parse() {
                    arrivals.insert(i, at);
                }
            }
        }
        arrivals
    });
    let hooks = callbacks(relay.addr, run, count);
    let (tally, schedule) = load::open_loop(relay.addr, hooks, FEED_RATE, 8).await;
    tally.expect_all(200, "status callbacks for the feed")?;
    let arrivals = reader.await?;
    if arrivals.len() < count {
        return Err(format!("the feed delivered {} of {count} events", arrivals.len()).into());
    }
    let latencies: Vec<u64> = arrivals
        .iter()
        .map(|(i, at)| at.saturating_duration_since(schedule.due(*i)).as_nanos() as u64)
        .collect();
    let latency = Latency::of(latencies);
    samples.add("feed p50", latency.p50);
    samples.add("feed p99", latency.p99);
    Ok(())
}
