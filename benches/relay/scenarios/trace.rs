//! Scenario 7, what the per-call delivery trace costs. Two deployments of scenario 2's
//! delivery (one replica, a connected WebSocket per identity) side by side on one Redis,
//! identical but for `[calls] trace`: on (the default) and off. Their runs alternate, the
//! order turning every pair (on, off, off, on, …) so that the machine's drift falls on both
//! alike; each pair is a closed loop at c=32 on each, then an open loop at 1,000/s on each.
//! The table quotes both medians and the median of the pairs' ratios. Before the runs, while
//! the Redis is fresh, the memory a traced call takes: `used_memory` across N delivered calls
//! to each deployment; the difference divided by N is what the trace adds.

use std::time::{Duration, Instant};

use super::deliver::Deployment;
use crate::Bench;
use crate::procs::{Callrelay, Error, Redis};
use crate::report::{Better, Samples};

const SCENARIO: &str = "7. call trace";
/// The open-loop rate: a steady load well below what either deployment sustains.
const RATE: f64 = 1000.0;
/// Calls per identity in the memory measurement.
const CALLS_PER_IDENTITY: usize = 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trace {
    On = 0,
    Off = 1,
}

impl Trace {
    fn name(self) -> &'static str {
        match self {
            Trace::On => "trace on",
            Trace::Off => "trace off",
        }
    }

    /// Appended to the replica's configuration; on is also the default.
    fn config(self) -> &'static str {
        match self {
            Trace::On => "[calls]\ntrace = true\n",
            Trace::Off => "[calls]\ntrace = false\n",
        }
    }
}

/// A replica's call-trace entries so far (`callrelay_call_trace_entries_total`).
#[derive(Clone, Copy, Default)]
struct Entries {
    written: u64,
    dropped: u64,
    failed: u64,
}

impl Entries {
    fn of(relay: &Callrelay) -> Self {
        let lines = relay.metrics("callrelay_call_trace_entries_total");
        let count = |outcome: &str| {
            let label = format!("outcome=\"{outcome}\"");
            lines
                .iter()
                .filter(|l| l.contains(&label))
                .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        Self {
            written: count("written"),
            dropped: count("dropped"),
            failed: count("failed"),
        }
    }

    fn total(self) -> u64 {
        self.written + self.dropped + self.failed
    }

    /// Waits until the replica's trace writer has accounted for `calls` entries, so that
    /// nothing it still writes falls into the next measurement; fails if the store refused any.
    async fn settled(relay: &Callrelay, calls: u64) -> Result<Self, Error> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let entries = Self::of(relay);
            if entries.failed > 0 {
                return Err(format!("{} call-trace entries failed", entries.failed).into());
            }
            if entries.total() >= calls {
                return Ok(entries);
            }
            if Instant::now() > until {
                return Err(format!(
                    "after {calls} traced calls the replica accounted for {} entries",
                    entries.total()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The deployment with the trace on, and the calls it has answered so far.
struct Traced {
    calls: u64,
}

impl Traced {
    /// After `answered` more calls to `d`: waits until their entries are accounted for.
    async fn add(&mut self, d: &Deployment, answered: u64) -> Result<Entries, Error> {
        self.calls += answered;
        Entries::settled(d.front(), self.calls).await
    }
}

pub async fn run(b: &mut Bench) -> Result<(), Error> {
    let n = b.identities;
    let identities: Vec<String> = (0..n).map(|i| format!("user{i}")).collect();
    let user = move |i: usize| format!("user{}", i % n);
    // A Redis of its own: nothing else writes to it and nothing expires while its memory is
    // read; both deployments share it (and its CPU) in every run.
    let redis = Redis::start()?;
    let mut start = async |trace: Trace| {
        let prefix = b.prefix();
        Deployment::start(prefix, &redis, false, &identities, trace.config()).await
    };
    // Indexed by `Trace`.
    let mut deployments = [start(Trace::On).await?, start(Trace::Off).await?];
    let mut traced = Traced { calls: 0 };
    let warm = Duration::from_secs(1);
    for trace in [Trace::On, Trace::Off] {
        let d = &mut deployments[trace as usize];
        let t = d.send(b, 2000, warm, "trace warm-up", user).await?;
        if trace == Trace::On {
            traced.add(d, t.answered()).await?;
        }
    }

    let mut samples = Samples::default();
    // Memory: the same number of calls to each deployment; what the traced ones add.
    let calls = n * CALLS_PER_IDENTITY;
    let long = Duration::from_secs(300);
    let mut used = vec![redis.used_memory()? as f64];
    for trace in [Trace::Off, Trace::On] {
        let d = &mut deployments[trace as usize];
        let t = d.send(b, calls, long, "trace memory", user).await?;
        if t.answered() != calls as u64 {
            return Err(format!("{} of {calls} calls answered", t.answered()).into());
        }
        if trace == Trace::On && traced.add(d, t.answered()).await?.dropped > 0 {
            return Err("call-trace entries were dropped while memory was measured".into());
        }
        used.push(redis.used_memory()? as f64);
    }
    let per_call = (used[1] - used[0]) / calls as f64;
    let per_traced_call = (used[2] - used[1]) / calls as f64;
    samples.add("memory per call", per_call);
    samples.add("memory per traced call", per_traced_call - per_call);

    for pair in 0..b.runs {
        let order = if pair % 2 == 0 {
            [Trace::On, Trace::Off]
        } else {
            [Trace::Off, Trace::On]
        };
        for trace in order {
            let d = &mut deployments[trace as usize];
            let before = Entries::of(d.front());
            let answered = d.closed_loop(b, trace.name(), user, &mut samples).await?;
            if trace == Trace::On {
                let dropped = traced.add(d, answered).await?.dropped - before.dropped;
                samples.add("dropped", 100.0 * dropped as f64 / answered.max(1) as f64);
            }
        }
        for trace in order {
            let d = &mut deployments[trace as usize];
            let answered = d
                .open_loop(b, trace.name(), RATE, user, &mut samples)
                .await?;
            if trace == Trace::On {
                traced.add(d, answered).await?;
            }
        }
    }
    if Entries::of(deployments[Trace::Off as usize].front()).total() > 0 {
        return Err("the replica with the trace off recorded calls".into());
    }
    rows(b, &mut samples);
    for d in deployments {
        d.finish().await?;
    }
    Ok(())
}

/// Each figure with the trace on and off, then on ÷ off: the median of the pairs' ratios.
fn rows(b: &mut Bench, samples: &mut Samples) {
    let c = b.concurrency;
    let figures: [(String, String, Better, &'static str); 7] = [
        (
            format!("requests/s, c={c}"),
            String::new(),
            Better::More,
            "req/s",
        ),
        (
            format!("answer p50, c={c}"),
            " p50".into(),
            Better::Less,
            "ms",
        ),
        (
            format!("answer p99, c={c}"),
            " p99".into(),
            Better::Less,
            "ms",
        ),
        (
            "server CPU per webhook".into(),
            " cpu".into(),
            Better::Less,
            "µs",
        ),
        (
            "Redis CPU per webhook".into(),
            " redis cpu".into(),
            Better::Less,
            "µs",
        ),
        (
            format!("answer p99 at {RATE}/s"),
            format!(" answer {RATE} p99"),
            Better::Less,
            "ms",
        ),
        (
            format!("end-to-end p99 at {RATE}/s"),
            format!(" e2e {RATE} p99"),
            Better::Less,
            "ms",
        ),
    ];
    for (measure, suffix, better, unit) in figures {
        let (on, off) = (
            format!("{}{suffix}", Trace::On.name()),
            format!("{}{suffix}", Trace::Off.name()),
        );
        let ratio = format!("{on} ÷ off");
        for (with, without) in samples.all(&on).into_iter().zip(samples.all(&off)) {
            samples.add(&ratio, 100.0 * with / without);
        }
        b.row(
            SCENARIO,
            &format!("{measure}, trace on"),
            samples,
            (&on, None),
            better,
            unit,
        );
        b.row(
            SCENARIO,
            &format!("{measure}, trace off"),
            samples,
            (&off, None),
            better,
            unit,
        );
        b.row(
            SCENARIO,
            &format!("{measure}, on ÷ off (median of pairs)"),
            samples,
            (&ratio, None),
            better,
            "%",
        );
    }
    b.row(
        SCENARIO,
        &format!("trace entries dropped, c={c}"),
        samples,
        ("dropped", None),
        Better::Less,
        "%",
    );
    let calls = b.identities * CALLS_PER_IDENTITY;
    b.row(
        SCENARIO,
        &format!("Redis memory per traced call, {calls} calls"),
        samples,
        ("memory per traced call", None),
        Better::Less,
        "bytes",
    );
    b.row(
        SCENARIO,
        &format!("Redis memory per delivered call, trace off, {calls} calls"),
        samples,
        ("memory per call", None),
        Better::Less,
        "bytes",
    );
}
