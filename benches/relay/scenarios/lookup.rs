//! Scenario 1, lookup: webhooks for identities nobody is bound to (the `404` path), closed
//! loop at fixed concurrency: callrelay on the standalone Redis, callrelay on Redis Cluster
//! and the baseline in turn. Each run also measures the ceiling, `redis-benchmark` GET at the
//! same concurrency on the same servers: what Redis alone answers on this machine.

use std::time::Duration;

use super::{CpuMeter, webhooks_for};
use crate::load;
use crate::procs::{Backend, Callrelay, Error, redis_benchmark_get};
use crate::report::{Better, Latency, Samples};
use crate::{Bench, CLUSTER};

/// The most requests per second a run is prepared for; a faster server ends a run early,
/// which does not change its rate.
const CALLRELAY_CEILING: f64 = 60_000.0;
const BASELINE_CEILING: f64 = 10_000.0;
/// GETs per second `redis-benchmark` is given enough requests for (it runs until they are
/// answered).
const GET_RATE: f64 = 80_000.0;

fn nobody(i: usize) -> String {
    format!("nobody{}", i % 10_000)
}

/// One closed-loop run of callrelay: its figures under `name` (`callrelay`, or `cluster
/// callrelay` on Redis Cluster).
async fn measure(
    b: &mut Bench,
    relay: &Callrelay,
    redis_pids: &[u32],
    name: &str,
    samples: &mut Samples,
) -> Result<(), Error> {
    let run = b.run_id();
    let seconds = b.duration.as_secs_f64();
    let hooks = webhooks_for(relay.addr, run, CALLRELAY_CEILING, seconds, nobody);
    let cpu = CpuMeter::start(&[relay.pid()]);
    let redis_cpu = CpuMeter::start(redis_pids);
    let t = load::closed_loop(relay.addr, hooks, b.concurrency, b.duration).await;
    t.expect_all(404, &format!("lookup, {name}"))?;
    samples.add(&format!("{name} cpu"), cpu.micros_per(t.answered()));
    samples.add(
        &format!("{name} redis cpu"),
        redis_cpu.micros_per(t.answered()),
    );
    samples.add(name, t.per_second());
    samples.add_latency(name, Latency::of(t.latencies_ns));
    Ok(())
}

async fn warm_up(b: &mut Bench, relay: &Callrelay) -> Result<(), Error> {
    // Connections, Redis scripts, allocator; not measured.
    let run = b.run_id();
    let warm = webhooks_for(relay.addr, run, 2000.0, 1.0, nobody);
    load::closed_loop(relay.addr, warm, b.concurrency, Duration::from_secs(1))
        .await
        .expect_all(404, "lookup warm-up")
}

pub async fn run(b: &mut Bench) -> Result<(), Error> {
    let prefix = b.prefix();
    let relay = Callrelay::start(&b.redis, &prefix, "")?;
    let on_cluster = match &b.cluster {
        Some(cluster) => Some(Callrelay::start(cluster, &prefix, "")?),
        None => None,
    };
    let mut samples = Samples::default();
    let seconds = b.duration.as_secs_f64();
    warm_up(b, &relay).await?;
    if let Some(r) = &on_cluster {
        warm_up(b, r).await?;
    }
    let gets = ((GET_RATE * seconds) as usize).max(10_000);
    let cluster_name = format!("{CLUSTER} callrelay");
    for _ in 0..b.runs {
        let redis_pids = b.redis.pids();
        measure(b, &relay, &redis_pids, "callrelay", &mut samples).await?;
        if let (Some(r), Some(pids)) = (&on_cluster, b.cluster.as_ref().map(Backend::pids)) {
            measure(b, r, &pids, &cluster_name, &mut samples).await?;
        }
        if let Some((addr, pid)) = b.baseline.as_ref().map(|x| (x.addr, x.pid())) {
            let run = b.run_id();
            let hooks = webhooks_for(relay.addr, run, BASELINE_CEILING, seconds, nobody);
            let cpu = CpuMeter::start(&[pid]);
            let redis_cpu = CpuMeter::start(&redis_pids);
            let t = load::closed_loop(addr, hooks, b.concurrency, b.duration).await;
            t.expect_all(404, "lookup, baseline")?;
            samples.add("baseline cpu", cpu.micros_per(t.answered()));
            samples.add("baseline redis cpu", redis_cpu.micros_per(t.answered()));
            samples.add("baseline", t.per_second());
            samples.add_latency("baseline", Latency::of(t.latencies_ns));
        }
        let (rate, cpu) = redis_benchmark_get(&b.redis, b.redis.port, false, b.concurrency, gets)?;
        samples.add("get", rate);
        samples.add("get redis cpu", cpu);
        ceiling_shares(&mut samples, "");
        if let Some(cluster) = &b.cluster {
            let port = cluster.nodes[0].port;
            let (rate, cpu) = redis_benchmark_get(cluster, port, true, b.concurrency, gets)?;
            samples.add(&format!("{CLUSTER} get"), rate);
            samples.add(&format!("{CLUSTER} get redis cpu"), cpu);
            ceiling_shares(&mut samples, &format!("{CLUSTER} "));
        }
    }
    concurrency_curve(b, &relay).await?;
    let c = b.concurrency;
    let scenario = "1. lookup (404)";
    super::closed_loop_rows(b, scenario, &samples);
    for p in ["p50", "p99", "p99.9"] {
        let (mine, theirs) = (format!("callrelay {p}"), format!("baseline {p}"));
        b.row(
            scenario,
            &format!("latency {p}, c={c}"),
            &samples,
            (&mine, Some(&theirs)),
            Better::Less,
            "ms",
        );
    }
    let rows = [
        ("lookups/s as a share of GET/s", "share", Better::More, "%"),
        (
            "Redis CPU per webhook ÷ per GET",
            "redis cpu ratio",
            Better::Less,
            "x",
        ),
    ];
    for (measure, name, better, unit) in rows {
        b.row(scenario, measure, &samples, (name, None), better, unit);
    }
    let ceiling = "0. Redis alone (redis-benchmark GET)";
    b.row(
        ceiling,
        &format!("GET/s, c={c}"),
        &samples,
        ("get", None),
        Better::More,
        "GET/s",
    );
    b.row(
        ceiling,
        "Redis CPU per GET",
        &samples,
        ("get redis cpu", None),
        Better::Less,
        "µs",
    );
    super::check_quiet(&relay)?;
    on_cluster.as_ref().map_or(Ok(()), super::check_quiet)
}

/// Throughput against concurrency, callrelay and the baseline in turn at each level: the
/// chart's curve (one run per level).
async fn concurrency_curve(b: &mut Bench, relay: &Callrelay) -> Result<(), Error> {
    let levels: &[usize] = if b.smoke {
        &[1, 8]
    } else {
        &[1, 2, 4, 8, 16, 32, 64]
    };
    let seconds = b.duration.as_secs_f64();
    for &c in levels {
        let run = b.run_id();
        let hooks = webhooks_for(relay.addr, run, CALLRELAY_CEILING, seconds, nobody);
        let t = load::closed_loop(relay.addr, hooks, c, b.duration).await;
        t.expect_all(404, &format!("lookup at c={c}"))?;
        let mine = t.per_second();
        let theirs = match b.baseline.as_ref().map(|x| x.addr) {
            Some(addr) => {
                let run = b.run_id();
                let hooks = webhooks_for(relay.addr, run, BASELINE_CEILING, seconds, nobody);
                let t = load::closed_loop(addr, hooks, c, b.duration).await;
                t.expect_all(404, &format!("baseline lookup at c={c}"))?;
                t.per_second()
            }
            None => f64::NAN,
        };
        println!("    c={c}: callrelay {mine:.0} req/s, baseline {theirs:.0} req/s");
        b.curves.point(
            "lookup-concurrency",
            &[
                ("concurrency", c as f64),
                ("callrelay", mine),
                ("baseline", theirs),
            ],
        );
    }
    Ok(())
}

/// Lookup's share of the ceiling in this run: lookups/s over GET/s, and Redis CPU per webhook
/// over Redis CPU per GET. `prefix` is `""` or `"cluster "`.
fn ceiling_shares(samples: &mut Samples, prefix: &str) {
    let last = |name: &str| samples.all(&format!("{prefix}{name}")).last().copied();
    let (lookups, gets) = (last("callrelay"), last("get"));
    let (webhook, get) = (last("callrelay redis cpu"), last("get redis cpu"));
    if let (Some(lookups), Some(gets)) = (lookups, gets) {
        samples.add(&format!("{prefix}share"), lookups * 100.0 / gets);
    }
    if let (Some(webhook), Some(get)) = (webhook, get) {
        samples.add(&format!("{prefix}redis cpu ratio"), webhook / get);
    }
}
