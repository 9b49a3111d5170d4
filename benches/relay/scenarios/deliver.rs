//! Scenarios 2 and 3, delivery: identities each with a connected WebSocket, webhooks spread
//! over them. Throughput closed-loop at fixed concurrency (beside the baseline, which
//! publishes to Redis instead of delivering), then end-to-end latency (scheduled send to frame
//! received) open-loop at fixed offered rates. Cross-replica: the sockets are held by replica
//! B and the webhooks go to replica A, so every delivery crosses the replica bus.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{CpuMeter, check_quiet, public_url, webhooks_for};
use crate::fleet::{Fleet, Frame};
use crate::load::{self, Schedule, Tally};
use crate::procs::{Backend, Callrelay, Error};
use crate::report::{Better, Latency, Samples};
use crate::webhooks;
use crate::{Bench, CLUSTER};

const CALLRELAY_CEILING: f64 = 40_000.0;
const BASELINE_CEILING: f64 = 10_000.0;
/// Open-loop connections: enough that a request never waits for a free one at these rates.
const OPEN_LOOP_CONNECTIONS: usize = 64;
/// How long frames may trail their webhook's answer before they count as lost.
const FRAME_PATIENCE: Duration = Duration::from_secs(5);

/// Every `200` must have produced exactly one frame.
pub(super) async fn frames_for(
    fleet: &mut Fleet,
    run: u32,
    t: &Tally,
    what: &str,
) -> Result<Vec<Frame>, Error> {
    let expected = t.count(200) as usize;
    let frames = fleet.collect(run, expected, FRAME_PATIENCE).await;
    let distinct: HashSet<u64> = frames.iter().map(|f| f.index).collect();
    if frames.len() != expected || distinct.len() != expected {
        return Err(format!(
            "{what}: {expected} webhooks answered 200 but {} frames ({} distinct) arrived",
            frames.len(),
            distinct.len()
        )
        .into());
    }
    fleet.check()?;
    Ok(frames)
}

fn end_to_end(frames: &[Frame], schedule: &Schedule) -> Latency {
    Latency::of(
        frames
            .iter()
            .map(|f| {
                f.at.saturating_duration_since(schedule.due(f.index))
                    .as_nanos() as u64
            })
            .collect(),
    )
}

/// The replicas of one deployment and the sockets its holder keeps. The call-trace scenario
/// (`trace.rs`) runs two of them side by side, differing only in their configuration.
pub(super) struct Deployment {
    holder: Callrelay,
    front: Option<Callrelay>,
    fleet: Fleet,
    redis_pids: Vec<u32>,
    /// The answers' latencies (ns) of the last closed-loop run: the charts' distributions.
    last_latencies: Vec<u64>,
}

impl Deployment {
    /// `config` is appended to each replica's configuration (`""`: the defaults).
    pub(super) async fn start(
        prefix: String,
        store: &dyn Backend,
        cross: bool,
        identities: &[String],
        config: &str,
    ) -> Result<Self, Error> {
        let holder = Callrelay::start(store, &prefix, config)?;
        let front = if cross {
            Some(Callrelay::start(store, &prefix, config)?)
        } else {
            None
        };
        let fleet = Fleet::connect(holder.addr, identities, 4, 64).await?;
        Ok(Self {
            holder,
            front,
            fleet,
            redis_pids: store.pids(),
            last_latencies: Vec::new(),
        })
    }

    /// Where webhooks go.
    fn target(&self) -> std::net::SocketAddr {
        self.front.as_ref().unwrap_or(&self.holder).addr
    }

    /// The replica webhooks go to.
    pub(super) fn front(&self) -> &Callrelay {
        self.front.as_ref().unwrap_or(&self.holder)
    }

    fn replicas(&self) -> Vec<u32> {
        [Some(&self.holder), self.front.as_ref()]
            .into_iter()
            .flatten()
            .map(Callrelay::pid)
            .collect()
    }

    /// Sends up to `count` webhooks at concurrency `b.concurrency`, for at most `within`, and
    /// checks that each was answered `200` and reached its socket once.
    pub(super) async fn send(
        &mut self,
        b: &mut Bench,
        count: usize,
        within: Duration,
        what: &str,
        user: impl Fn(usize) -> String,
    ) -> Result<Tally, Error> {
        let run = b.run_id();
        let target = self.target();
        let hooks = Arc::new(webhooks::batch(&public_url(target), run, count, user));
        let t = load::closed_loop(target, hooks, b.concurrency, within).await;
        t.expect_all(200, what)?;
        frames_for(&mut self.fleet, run, &t, what).await?;
        Ok(t)
    }

    pub(super) async fn warm_up(
        &mut self,
        b: &mut Bench,
        user: impl Fn(usize) -> String,
    ) -> Result<(), Error> {
        self.send(b, 2000, Duration::from_secs(1), "delivery warm-up", user)
            .await?;
        Ok(())
    }

    /// One closed-loop run; its figures under `name` (`callrelay`, `cluster callrelay`):
    /// requests/s, CPU per webhook (`<name> cpu`, `<name> redis cpu`) and the answers'
    /// latency (`<name> p50` …). Returns the number of webhooks answered.
    pub(super) async fn closed_loop(
        &mut self,
        b: &mut Bench,
        name: &str,
        user: impl Fn(usize) -> String,
        samples: &mut Samples,
    ) -> Result<u64, Error> {
        let run = b.run_id();
        let target = self.target();
        let seconds = b.duration.as_secs_f64();
        let hooks = webhooks_for(target, run, CALLRELAY_CEILING, seconds, user);
        let cpu = CpuMeter::start(&self.replicas());
        let redis_cpu = CpuMeter::start(&self.redis_pids);
        let mut t = load::closed_loop(target, hooks, b.concurrency, b.duration).await;
        let what = format!("delivery, {name}");
        t.expect_all(200, &what)?;
        samples.add(&format!("{name} cpu"), cpu.micros_per(t.answered()));
        samples.add(
            &format!("{name} redis cpu"),
            redis_cpu.micros_per(t.answered()),
        );
        frames_for(&mut self.fleet, run, &t, &what).await?;
        samples.add(name, t.per_second());
        self.last_latencies = std::mem::take(&mut t.latencies_ns);
        samples.add_latency(name, Latency::of(self.last_latencies.clone()));
        Ok(t.answered())
    }

    /// One open-loop run at `rate`: end-to-end latency (`<name> e2e <rate>` …) and the
    /// answers' (`<name> answer <rate>` …). Returns the number of webhooks answered.
    pub(super) async fn open_loop(
        &mut self,
        b: &mut Bench,
        name: &str,
        rate: f64,
        user: impl Fn(usize) -> String,
        samples: &mut Samples,
    ) -> Result<u64, Error> {
        let run = b.run_id();
        let target = self.target();
        let hooks = webhooks_for(target, run, rate, b.duration.as_secs_f64(), user);
        let (t, schedule) = load::open_loop(target, hooks, rate, OPEN_LOOP_CONNECTIONS).await;
        let what = format!("delivery at {rate}/s, {name}");
        t.expect_all(200, &what)?;
        let frames = frames_for(&mut self.fleet, run, &t, &what).await?;
        samples.add_latency(
            &format!("{name} e2e {rate}"),
            end_to_end(&frames, &schedule),
        );
        let answered = t.answered();
        samples.add_latency(
            &format!("{name} answer {rate}"),
            Latency::of(t.latencies_ns),
        );
        Ok(answered)
    }

    pub(super) async fn finish(self) -> Result<(), Error> {
        self.fleet.check()?;
        self.fleet.close().await;
        check_quiet(&self.holder)?;
        self.front.as_ref().map_or(Ok(()), check_quiet)
    }
}

pub async fn run(b: &mut Bench, cross: bool) -> Result<(), Error> {
    let n = b.identities;
    let identities: Vec<String> = (0..n).map(|i| format!("user{i}")).collect();
    let user = move |i: usize| format!("user{}", i % n);
    let (prefix, cluster_prefix) = (b.prefix(), b.prefix());
    let mut on_redis = Deployment::start(prefix, &b.redis, cross, &identities, "").await?;
    let mut on_cluster = match &b.cluster {
        Some(cluster) => {
            Some(Deployment::start(cluster_prefix, cluster, cross, &identities, "").await?)
        }
        None => None,
    };
    let (c, seconds) = (b.concurrency, b.duration.as_secs_f64());
    let target = on_redis.target();
    on_redis.warm_up(b, user).await?;
    if let Some(d) = on_cluster.as_mut() {
        d.warm_up(b, user).await?;
    }
    let cluster_name = format!("{CLUSTER} callrelay");

    let mut samples = Samples::default();
    let mut baseline_latencies = Vec::new();
    for _ in 0..b.runs {
        on_redis
            .closed_loop(b, "callrelay", user, &mut samples)
            .await?;
        if let Some(d) = on_cluster.as_mut() {
            d.closed_loop(b, &cluster_name, user, &mut samples).await?;
        }
        if let Some((addr, pid)) = b.baseline.as_ref().map(|x| (x.addr, x.pid())) {
            let run = b.run_id();
            let hooks = webhooks_for(target, run, BASELINE_CEILING, seconds, user);
            let cpu = CpuMeter::start(&[pid]);
            let redis_cpu = CpuMeter::start(&[b.redis.pid()]);
            let t = load::closed_loop(addr, hooks, c, b.duration).await;
            t.expect_all(200, "delivery, baseline")?;
            samples.add("baseline cpu", cpu.micros_per(t.answered()));
            samples.add("baseline redis cpu", redis_cpu.micros_per(t.answered()));
            samples.add("baseline", t.per_second());
            baseline_latencies = t.latencies_ns;
        }
        for rate in b.rates.clone() {
            on_redis
                .open_loop(b, "callrelay", rate, user, &mut samples)
                .await?;
            if let Some(addr) = b.baseline.as_ref().map(|x| x.addr) {
                let run = b.run_id();
                let hooks = webhooks_for(target, run, rate, seconds, user);
                let (t, _) = load::open_loop(addr, hooks, rate, OPEN_LOOP_CONNECTIONS).await;
                t.expect_all(200, &format!("baseline at {rate}/s"))?;
                samples.add_latency(
                    &format!("baseline answer {rate}"),
                    Latency::of(t.latencies_ns),
                );
            }
        }
    }

    // The last run's latency distributions, for the charts.
    let series = if cross { "cross-replica" } else { "delivery" };
    let mut distributions = vec![("callrelay", std::mem::take(&mut on_redis.last_latencies))];
    if let Some(d) = on_cluster.as_mut() {
        distributions.push((
            "callrelay on Redis Cluster",
            std::mem::take(&mut d.last_latencies),
        ));
    }
    distributions.push(("baseline", baseline_latencies));
    for (who, latencies) in distributions {
        b.curves
            .distribution(&format!("latency-{series}"), who, latencies);
    }

    let scenario = if cross {
        "3. cross-replica"
    } else {
        "2. deliver (WebSocket)"
    };
    super::closed_loop_rows(b, scenario, &samples);
    for rate in b.rates.clone() {
        for p in ["p50", "p99", "p99.9"] {
            let name = format!("callrelay e2e {rate} {p}");
            b.row(
                scenario,
                &format!("end-to-end {p} at {rate}/s"),
                &samples,
                (&name, None),
                Better::Less,
                "ms",
            );
        }
        let (mine, theirs) = (
            format!("callrelay answer {rate} p99"),
            format!("baseline answer {rate} p99"),
        );
        b.row(
            scenario,
            &format!("answer p99 at {rate}/s"),
            &samples,
            (&mine, Some(&theirs)),
            Better::Less,
            "ms",
        );
    }
    on_redis.finish().await?;
    match on_cluster {
        Some(d) => d.finish().await,
        None => Ok(()),
    }
}
