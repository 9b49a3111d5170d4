//! A steady webhook load on one or more replicas while a test breaks something, recording
//! every answer: when it was sent, for whom, its status and how long it took. The report
//! gives the figures the failure tests print (answers by status, wrong `404`s, time to
//! recover).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::TestApp;

#[derive(Debug, Clone)]
pub struct Sample {
    /// When the webhook was sent, from the start of the load.
    pub at: Duration,
    pub identity: String,
    pub status: u16,
    pub took: Duration,
}

pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Sample>>>,
}

impl Load {
    /// `workers` concurrent senders, each going round `identities` and round `apps`.
    pub fn start(apps: Vec<Arc<TestApp>>, identities: Vec<String>, workers: usize) -> Self {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|w| {
                let (apps, identities, stop) = (apps.clone(), identities.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let identity = &identities[i % identities.len()];
                        let app = &apps[i % apps.len()];
                        i += 1;
                        let sent = Instant::now();
                        let r = app.notify(identity).await;
                        samples.push(Sample {
                            at: sent - started,
                            identity: identity.clone(),
                            status: r.status.as_u16(),
                            took: sent.elapsed(),
                        });
                        // A steady pace rather than a flood: the figures stay readable.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    samples
                })
            })
            .collect();
        Self {
            started,
            stop,
            workers,
        }
    }

    /// Time since the load started (to mark an event in its timeline).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for w in self.workers {
            samples.extend(w.await.unwrap());
        }
        samples.sort_by_key(|s| s.at);
        Report { samples }
    }
}

pub struct Report {
    pub samples: Vec<Sample>,
}

impl Report {
    pub fn by_status(&self) -> BTreeMap<u16, usize> {
        let mut counts = BTreeMap::new();
        for s in &self.samples {
            *counts.entry(s.status).or_default() += 1;
        }
        counts
    }

    pub fn count(&self, status: u16) -> usize {
        self.samples.iter().filter(|s| s.status == status).count()
    }

    /// Answers sent at or after `since` with a status other than these.
    pub fn unexpected(&self, since: Duration, allowed: &[u16]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.at >= since && !allowed.contains(&s.status))
            .collect()
    }

    /// From `since` to the first webhook answered `200` after which every answer was `200`;
    /// `None` if the load ended before that.
    pub fn recovered_after(&self, since: Duration) -> Option<Duration> {
        let last_failure = self
            .samples
            .iter()
            .filter(|s| s.status != 200)
            .map(|s| s.at)
            .max();
        let first_good = self
            .samples
            .iter()
            .filter(|s| s.status == 200 && s.at >= since)
            .filter(|s| last_failure.is_none_or(|f| s.at > f))
            .map(|s| s.at)
            .min()?;
        Some(first_good.saturating_sub(since))
    }

    pub fn slowest(&self) -> Duration {
        self.samples
            .iter()
            .map(|s| s.took)
            .max()
            .unwrap_or_default()
    }
}
