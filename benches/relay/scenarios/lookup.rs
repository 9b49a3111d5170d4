//! Scenario 1, lookup: webhooks for identities nobody is bound to (the `404` path), closed
//! loop at fixed concurrency, callrelay and the baseline in turn.

use std::time::Duration;

use super::{CpuMeter, webhooks_for};
use crate::Bench;
use crate::load;
use crate::procs::{Callrelay, Error};
use crate::report::{Better, Latency, Samples};

/// The most requests per second a run is prepared for; a faster server ends a run early,
/// which does not change its rate.
const CALLRELAY_CEILING: f64 = 60_000.0;
const BASELINE_CEILING: f64 = 10_000.0;

fn nobody(i: usize) -> String {
    format!("nobody{}", i % 10_000)
}

pub async fn run(b: &mut Bench) -> Result<(), Error> {
    let prefix = b.prefix();
    let relay = Callrelay::start(&b.redis, &prefix, "")?;
    let mut samples = Samples::default();
    let seconds = b.duration.as_secs_f64();
    // Warm-up: connections, Redis scripts, allocator; not measured.
    let run = b.run_id();
    let warm = webhooks_for(relay.addr, run, 2000.0, 1.0, nobody);
    load::closed_loop(relay.addr, warm, b.concurrency, Duration::from_secs(1))
        .await
        .expect_all(404, "lookup warm-up")?;
    for _ in 0..b.runs {
        let run = b.run_id();
        let hooks = webhooks_for(relay.addr, run, CALLRELAY_CEILING, seconds, nobody);
        let cpu = CpuMeter::start(&[relay.pid()]);
        let redis_cpu = CpuMeter::start(&[b.redis.pid()]);
        let t = load::closed_loop(relay.addr, hooks, b.concurrency, b.duration).await;
        t.expect_all(404, "lookup, callrelay")?;
        samples.add("callrelay cpu", cpu.micros_per(t.answered()));
        samples.add("callrelay redis cpu", redis_cpu.micros_per(t.answered()));
        samples.add("callrelay", t.per_second());
        samples.add_latency("callrelay", Latency::of(t.latencies_ns));
        if let Some((addr, pid)) = b.baseline.as_ref().map(|x| (x.addr, x.pid())) {
            let hooks = webhooks_for(relay.addr, run, BASELINE_CEILING, seconds, nobody);
            let cpu = CpuMeter::start(&[pid]);
            let redis_cpu = CpuMeter::start(&[b.redis.pid()]);
            let t = load::closed_loop(addr, hooks, b.concurrency, b.duration).await;
            t.expect_all(404, "lookup, baseline")?;
            samples.add("baseline cpu", cpu.micros_per(t.answered()));
            samples.add("baseline redis cpu", redis_cpu.micros_per(t.answered()));
            samples.add("baseline", t.per_second());
            samples.add_latency("baseline", Latency::of(t.latencies_ns));
        }
    }
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
    super::check_quiet(&relay)
}
