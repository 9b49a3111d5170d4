//! The data behind BENCHMARKS.md's charts: one CSV file per series in the curves directory
//! (`--curves`, `target/bench-curves` by default), a header line then one line per point.
//! `benches/plot.py` draws them as PNG files.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::procs::Error;

pub struct CurveWriter {
    dir: PathBuf,
    series: BTreeMap<String, (Vec<String>, String)>,
    /// Series of distributions: who → (percentile, ms).
    distributions: BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>,
}

impl CurveWriter {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            series: BTreeMap::new(),
            distributions: BTreeMap::new(),
        }
    }

    /// Adds a point to `series`; every point of a series names the same columns.
    pub fn point(&mut self, series: &str, columns: &[(&str, f64)]) {
        let names: Vec<String> = columns.iter().map(|(n, _)| (*n).to_owned()).collect();
        let entry = self
            .series
            .entry(series.to_owned())
            .or_insert_with(|| (names.clone(), String::new()));
        debug_assert_eq!(entry.0, names, "series {series} changed its columns");
        let values: Vec<String> = columns.iter().map(|(_, v)| format!("{v:.4}")).collect();
        let _ = writeln!(entry.1, "{}", values.join(","));
    }

    /// `who`'s latency distribution (nanoseconds) as series `series`: one line per
    /// percentile, a column per `who`. A later call for the same `who` replaces it.
    pub fn distribution(&mut self, series: &str, who: &str, nanos: Vec<u64>) {
        if nanos.is_empty() {
            return;
        }
        let points = cdf(nanos);
        self.distributions
            .entry(series.to_owned())
            .or_default()
            .insert(who.to_owned(), points);
    }

    /// Writes every series that has points.
    pub fn save(&self) -> Result<(), Error> {
        if self.series.is_empty() && self.distributions.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        for (name, (columns, rows)) in &self.series {
            let path = self.dir.join(format!("{name}.csv"));
            std::fs::write(&path, format!("{}\n{rows}", columns.join(",")))?;
        }
        for (name, by_who) in &self.distributions {
            // One line per percentile (every distribution has the same ones).
            let mut text = format!(
                "percentile,{}\n",
                by_who.keys().cloned().collect::<Vec<_>>().join(",")
            );
            let first = by_who.values().next().map_or(0, Vec::len);
            for i in 0..first {
                let _ = write!(text, "{:.2}", by_who.values().next().expect("one")[i].0);
                for points in by_who.values() {
                    let _ = write!(text, ",{:.4}", points[i].1);
                }
                text.push('\n');
            }
            std::fs::write(self.dir.join(format!("{name}.csv")), text)?;
        }
        println!(
            "\ncurves: {} series in {} (benches/plot.py draws them)",
            self.series.len() + self.distributions.len(),
            self.dir.display()
        );
        Ok(())
    }
}

/// Latencies (nanoseconds) as a distribution: (percentile, milliseconds) at 0.1 % steps up
/// to 99 %, then finer into the tail.
fn cdf(mut nanos: Vec<u64>) -> Vec<(f64, f64)> {
    if nanos.is_empty() {
        return Vec::new();
    }
    nanos.sort_unstable();
    let at = |q: f64| {
        let i = ((nanos.len() as f64 * q).ceil() as usize).clamp(1, nanos.len()) - 1;
        nanos[i] as f64 / 1e6
    };
    let mut points: Vec<f64> = (1..=990).map(|i| i as f64 / 1000.0).collect();
    points.extend((9901..=10000).map(|i| i as f64 / 10000.0));
    points.into_iter().map(|q| (q * 100.0, at(q))).collect()
}
