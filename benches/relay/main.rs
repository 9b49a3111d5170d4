//! callrelay's benchmark harness. It starts its own `redis-server`, callrelay replicas from
//! this tree and the reference webhook (`../shared/baseline/`), drives them on loopback with a
//! load generator that speaks the real protocols (signed webhooks, authenticated WebSocket
//! clients, APNs and FCM mocks), and prints one table row per figure: the median of several
//! runs, beside the baseline's where there is one. `benches/run.sh` is the way to run it;
//! `BENCHMARKS.md` explains the method.

mod client;
mod curves;
mod fleet;
mod load;
mod procs;
mod report;
mod scenarios;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub use curves::CurveWriter;
use procs::{Baseline, BaselineSetup, Cluster, Error, Redis};
use report::{Better, Row, Samples};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Lookup,
    Deliver,
    CrossReplica,
    SocketsAtRest,
    Push,
    Events,
    Trace,
    Ringing,
    Scale,
}

#[derive(Parser, Debug)]
#[command(about = "Benchmarks callrelay beside the reference webhook implementation")]
struct Args {
    /// Scenarios to run (all of them by default).
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<Scenario>,
    /// A few seconds in all: checks that every scenario works, not how fast.
    #[arg(long)]
    smoke: bool,
    /// Runs per scenario; the table quotes medians.
    #[arg(long)]
    runs: Option<usize>,
    /// Length of each measured run, in seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Idle sockets held in the sockets-at-rest scenario (each count is a row).
    #[arg(long = "sockets", value_delimiter = ',')]
    sockets: Vec<usize>,
    /// The directory holding the baseline's `app.py`.
    #[arg(long, default_value = "../shared/baseline")]
    baseline_dir: PathBuf,
    /// A virtual environment with flask, redis and gunicorn (`benches/run.sh` makes it).
    #[arg(long, default_value = ".venv-baseline")]
    baseline_venv: PathBuf,
    /// Leave the baseline out (figures without ratios).
    #[arg(long)]
    no_baseline: bool,
    /// Leave the Redis Cluster column out.
    #[arg(long)]
    no_cluster: bool,
    /// Also write the table to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Where the charts' data goes (one CSV per series; `benches/plot.py` draws them).
    #[arg(long, default_value = "target/bench-curves")]
    curves: PathBuf,
    // `cargo bench` passes `--bench` to every harness; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What every scenario shares: one Redis, one Redis Cluster, the baseline, sizes, and the rows
/// so far.
pub struct Bench {
    pub redis: Redis,
    /// The lookup and delivery scenarios run a second deployment on it, in the same runs.
    pub cluster: Option<Cluster>,
    pub baseline: Option<Baseline>,
    pub runs: usize,
    pub duration: Duration,
    pub concurrency: usize,
    /// Identities with a connected socket in the delivery scenarios (the baseline is seeded
    /// with as many).
    pub identities: usize,
    pub rates: Vec<f64>,
    pub socket_counts: Vec<usize>,
    /// How long idle sockets sit before their memory is read: past one presence renewal.
    pub settle: Duration,
    pub push_identities: usize,
    pub smoke: bool,
    /// The charts' data.
    pub curves: CurveWriter,
    rows: Vec<Row>,
    next_run: u32,
    next_prefix: u32,
}

pub const BASELINE_PREFIX: &str = "baseline";
/// Samples measured on Redis Cluster are named `cluster <name>`.
pub const CLUSTER: &str = "cluster";
/// Masters of the benchmark's Redis Cluster.
const CLUSTER_MASTERS: usize = 3;

impl Bench {
    /// A run id no other run of this process used (message ids embed it).
    pub fn run_id(&mut self) -> u32 {
        self.next_run += 1;
        self.next_run
    }

    /// A Redis key prefix of its own for each callrelay deployment.
    pub fn prefix(&mut self) -> String {
        self.next_prefix += 1;
        format!("bench{}-{}", std::process::id(), self.next_prefix)
    }

    /// Appends a row and prints it at once, so a long run shows progress.
    pub fn row(
        &mut self,
        scenario: &str,
        measure: &str,
        samples: &Samples,
        (callrelay, baseline): (&str, Option<&str>),
        better: Better,
        unit: &'static str,
    ) {
        let Some(value) = samples.median(callrelay) else {
            return;
        };
        let row = Row {
            scenario: scenario.to_owned(),
            measure: measure.to_owned(),
            callrelay: value,
            // The same figure on Redis Cluster, where the scenario measured one.
            cluster: samples.median(&format!("{CLUSTER} {callrelay}")),
            baseline: baseline.and_then(|b| samples.median(b)),
            better,
            unit,
            runs: samples.runs(callrelay),
        };
        let text = report::table(std::slice::from_ref(&row));
        println!("{}", text.lines().last().unwrap_or_default());
        let runs = |name: &str| {
            samples
                .all(name)
                .iter()
                .map(|v| (v * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        };
        let cluster = format!("{CLUSTER} {callrelay}");
        let mut line = format!("    runs: {:?}", runs(callrelay));
        if samples.runs(&cluster) > 0 {
            line.push_str(&format!(", cluster {:?}", runs(&cluster)));
        }
        if let Some(b) = baseline {
            line.push_str(&format!(", baseline {:?}", runs(b)));
        }
        println!("{line}");
        self.rows.push(row);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread: the load generator needs a third of a core, and a second thread would only
    // add cross-thread wake-ups (futex calls) to the CPU it takes from the servers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    // The APNs and FCM mocks serve TLS with rustls; so does callrelay's client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scenarios = if args.scenarios.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        args.scenarios.clone()
    };
    let files = procs::open_files_limit() as usize;
    // Room for the load generator's other descriptors, and no more than a replica may hold
    // within the same limit (beyond, it answers 503).
    let largest = files
        .saturating_sub(1000)
        .min(procs::socket_budget() as usize);
    let socket_counts = if !args.sockets.is_empty() {
        args.sockets.clone()
    } else if args.smoke {
        vec![200]
    } else {
        // 10,000 as the target says, then as many as this process may open files for.
        vec![10_000.min(largest), largest]
    };
    if let Some(n) = socket_counts.iter().find(|n| **n > largest) {
        return Err(format!(
            "{n} sockets need more open files than the limit allows ({files}); raise `ulimit -n`"
        )
        .into());
    }

    let redis = Redis::start()?;
    let cluster = if args.no_cluster {
        None
    } else {
        Some(Cluster::start(CLUSTER_MASTERS)?)
    };
    let baseline = if args.no_baseline {
        None
    } else {
        let setup = BaselineSetup {
            app_dir: args.baseline_dir.canonicalize().map_err(|e| {
                format!(
                    "the baseline is not at {} ({e}); pass --baseline-dir or --no-baseline",
                    args.baseline_dir.display()
                )
            })?,
            venv: args.baseline_venv.clone(),
        };
        let identities = if args.smoke { 100 } else { 1000 };
        Some(Baseline::start(
            &setup,
            &redis,
            BASELINE_PREFIX,
            identities,
        )?)
    };
    let mut bench = Bench {
        redis,
        cluster,
        baseline,
        runs: args.runs.unwrap_or(if args.smoke { 1 } else { 3 }),
        duration: Duration::from_secs_f64(args.seconds.unwrap_or(if args.smoke {
            0.5
        } else {
            5.0
        })),
        concurrency: 32,
        identities: if args.smoke { 100 } else { 1000 },
        rates: vec![1000.0, 5000.0],
        socket_counts,
        settle: if args.smoke {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(7)
        },
        push_identities: if args.smoke { 20 } else { 1000 },
        smoke: args.smoke,
        curves: CurveWriter::new(args.curves.clone()),
        rows: Vec::new(),
        next_run: 0,
        next_prefix: 0,
    };
    println!(
        "machine: {} cores; {} runs of {:.1} s per figure; concurrency {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bench.runs,
        bench.duration.as_secs_f64(),
        bench.concurrency
    );
    for scenario in scenarios {
        println!("\n== {scenario:?}");
        match scenario {
            Scenario::Lookup => scenarios::lookup::run(&mut bench).await?,
            Scenario::Deliver => scenarios::deliver::run(&mut bench, false).await?,
            Scenario::CrossReplica => scenarios::deliver::run(&mut bench, true).await?,
            Scenario::SocketsAtRest => scenarios::rest::run(&mut bench).await?,
            Scenario::Push => scenarios::push::run(&mut bench).await?,
            Scenario::Events => scenarios::events::run(&mut bench).await?,
            Scenario::Trace => scenarios::trace::run(&mut bench).await?,
            Scenario::Ringing => scenarios::ringing::run(&mut bench).await?,
            Scenario::Scale => scenarios::scale::run(&mut bench).await?,
        }
    }
    bench.curves.save()?;
    let table = report::table(&bench.rows);
    println!("\n{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table)?;
    }
    Ok(())
}
