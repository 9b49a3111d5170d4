//! Figures: latency percentiles, medians over repeated runs, and the table that
//! `BENCHMARKS.md` quotes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Latency percentiles, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Latency {
    pub fn of(mut nanos: Vec<u64>) -> Self {
        nanos.sort_unstable();
        let at = |q: f64| -> f64 {
            if nanos.is_empty() {
                return f64::NAN;
            }
            let i = ((nanos.len() as f64 * q).ceil() as usize).clamp(1, nanos.len()) - 1;
            nanos[i] as f64 / 1e6
        };
        Self {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

/// Samples of named figures, one per run; reported as medians.
#[derive(Default)]
pub struct Samples(BTreeMap<String, Vec<f64>>);

impl Samples {
    pub fn add(&mut self, name: &str, value: f64) {
        self.0.entry(name.to_owned()).or_default().push(value);
    }

    pub fn add_latency(&mut self, prefix: &str, latency: Latency) {
        self.add(&format!("{prefix} p50"), latency.p50);
        self.add(&format!("{prefix} p99"), latency.p99);
        self.add(&format!("{prefix} p99.9"), latency.p999);
    }

    pub fn median(&self, name: &str) -> Option<f64> {
        let mut values = self.0.get(name)?.clone();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        Some(if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        })
    }

    pub fn runs(&self, name: &str) -> usize {
        self.0.get(name).map_or(0, Vec::len)
    }

    pub fn all(&self, name: &str) -> Vec<f64> {
        self.0.get(name).cloned().unwrap_or_default()
    }
}

/// How a figure compares: more is better (throughput) or less is better (latency, memory).
#[derive(Clone, Copy)]
pub enum Better {
    More,
    Less,
}

pub struct Row {
    pub scenario: String,
    pub measure: String,
    pub callrelay: f64,
    /// callrelay on Redis Cluster.
    pub cluster: Option<f64>,
    pub baseline: Option<f64>,
    pub better: Better,
    pub unit: &'static str,
    pub runs: usize,
}

impl Row {
    /// How many times better `value` is than the baseline.
    pub fn ratio(&self, value: f64) -> Option<f64> {
        let b = self.baseline?;
        Some(match self.better {
            Better::More => value / b,
            Better::Less => b / value,
        })
    }
}

fn figure(value: f64, unit: &str) -> String {
    match unit {
        "req/s" | "pushes/s" | "bytes" | "GET/s" => format!("{value:.0} {unit}"),
        "%" => format!("{value:.1} %"),
        "x" => format!("{value:.2}x"),
        "ms" => format!("{value:.3} ms"),
        _ => format!("{value:.2} {unit}"),
    }
}

/// The table, in Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | measure | callrelay | callrelay, Redis Cluster | baseline | ratio | ratio, Redis Cluster | runs |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    let dash = || "–".to_owned();
    for r in rows {
        let baseline = r.baseline.map_or_else(dash, |b| figure(b, r.unit));
        let cluster = r.cluster.map_or_else(dash, |c| figure(c, r.unit));
        let times = |v: f64| r.ratio(v).map_or_else(dash, |x| format!("{x:.1}x"));
        let cluster_ratio = r.cluster.map_or_else(dash, times);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.measure,
            figure(r.callrelay, r.unit),
            cluster,
            baseline,
            times(r.callrelay),
            cluster_ratio,
            r.runs
        );
    }
    out
}
