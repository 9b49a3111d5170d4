//! One module per scenario of `BENCHMARKS.md`.

pub mod deliver;
pub mod events;
pub mod lookup;
pub mod push;
pub mod push_channels;
pub mod rest;
pub mod ringing;
pub mod scale;
pub mod trace;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::webhooks::{self, Webhook};

/// The public URL of a replica: what its webhooks are signed for.
pub fn public_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Webhooks enough for a run at up to `per_second` for `seconds`, spread over `identity`.
pub fn webhooks_for(
    addr: SocketAddr,
    run: u32,
    per_second: f64,
    seconds: f64,
    identity: impl Fn(usize) -> String,
) -> Arc<Vec<Webhook>> {
    let count = (per_second * seconds).ceil() as usize;
    Arc::new(webhooks::batch(
        &public_url(addr),
        run,
        count.max(1),
        identity,
    ))
}

/// Fails when a replica logged a warning or an error during a scenario: a clean run has none.
pub fn check_quiet(relay: &crate::procs::Callrelay) -> Result<(), crate::procs::Error> {
    let complaints = relay.complaints();
    if complaints.is_empty() {
        return Ok(());
    }
    Err(format!(
        "callrelay logged {} warnings or errors, first: {}",
        complaints.len(),
        complaints[0]
    )
    .into())
}

/// The rows of a closed-loop run beside the baseline: throughput (`callrelay`, `baseline`)
/// and CPU per webhook (`callrelay cpu`, `callrelay redis cpu` and the baseline's).
pub fn closed_loop_rows(b: &mut crate::Bench, scenario: &str, samples: &crate::report::Samples) {
    use crate::report::Better;
    let throughput = format!("requests/s, c={}", b.concurrency);
    let rows = [
        (
            throughput.as_str(),
            "callrelay",
            "baseline",
            Better::More,
            "req/s",
        ),
        (
            "server CPU per webhook",
            "callrelay cpu",
            "baseline cpu",
            Better::Less,
            "µs",
        ),
        (
            "Redis CPU per webhook",
            "callrelay redis cpu",
            "baseline redis cpu",
            Better::Less,
            "µs",
        ),
    ];
    for (measure, mine, theirs, better, unit) in rows {
        b.row(
            scenario,
            measure,
            samples,
            (mine, Some(theirs)),
            better,
            unit,
        );
    }
}

/// CPU time that some processes spend during a run, to be divided by the work done.
pub struct CpuMeter {
    pids: Vec<u32>,
    start: f64,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            start: Self::total(pids),
        }
    }

    fn total(pids: &[u32]) -> f64 {
        pids.iter().map(|p| crate::procs::cpu_seconds(*p)).sum()
    }

    /// Microseconds of CPU per unit of work since `start`.
    pub fn micros_per(&self, units: u64) -> f64 {
        (Self::total(&self.pids) - self.start) * 1e6 / units.max(1) as f64
    }
}
