//! The load generator: webhooks over HTTP/1.1 connections (`client.rs`), driven either
//! closed-loop (a fixed number of connections, each sending as soon as its last answer
//! arrived) or open-loop (a fixed offered rate, each request's latency counted from its
//! scheduled send time, so a stalled server cannot hide its queue). A closed loop may also
//! count the answers' bodies, for scenarios whose answers say what happened.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};

use crate::client::{Answer, Conn};
use crate::procs::Error;
use crate::webhooks::Webhook;

async fn post(conn: &mut Conn, webhook: &Webhook) -> Result<Answer, Error> {
    conn.exchange(&webhook.wire).await
}

/// What a run saw: answers by status, transport errors, and latencies in nanoseconds.
#[derive(Default)]
pub struct Tally {
    pub statuses: BTreeMap<u16, u64>,
    /// Answers by body, when the run counts them (`closed_loop_counting_bodies`): a few
    /// distinct bodies, however many answers.
    pub bodies: BTreeMap<Vec<u8>, u64>,
    count_bodies: bool,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latencies_ns: Vec<u64>,
    pub elapsed: Duration,
}

impl Tally {
    fn record(&mut self, result: Result<Answer, Error>, latency: Duration) {
        match result {
            Ok(answer) => {
                *self.statuses.entry(answer.status).or_default() += 1;
                if self.count_bodies {
                    *self.bodies.entry(answer.body).or_default() += 1;
                }
                self.latencies_ns.push(latency.as_nanos() as u64);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (body, n) in other.bodies {
            *self.bodies.entry(body).or_default() += n;
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies_ns.extend(other.latencies_ns);
    }

    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    pub fn per_second(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64()
    }

    /// Fails unless every request was answered with `status`.
    pub fn expect_all(&self, status: u16, what: &str) -> Result<(), Error> {
        if self.errors == 0 && self.count(status) == self.answered() && self.answered() > 0 {
            return Ok(());
        }
        Err(format!(
            "{what}: expected every answer to be {status}, got {:?} and {} transport errors{}",
            self.statuses,
            self.errors,
            self.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        )
        .into())
    }
}

/// `concurrency` connections send `webhooks` in order, each waiting for its answer, until
/// all are sent or `duration` has passed.
pub async fn closed_loop(
    addr: SocketAddr,
    webhooks: Arc<Vec<Webhook>>,
    concurrency: usize,
    duration: Duration,
) -> Tally {
    drive(addr, webhooks, concurrency, duration, false).await
}

/// `closed_loop`, also counting the answers by body (`Tally::bodies`). Not the default: the
/// load generator shares the machine, and other scenarios need only the status.
pub async fn closed_loop_counting_bodies(
    addr: SocketAddr,
    webhooks: Arc<Vec<Webhook>>,
    concurrency: usize,
    duration: Duration,
) -> Tally {
    drive(addr, webhooks, concurrency, duration, true).await
}

async fn drive(
    addr: SocketAddr,
    webhooks: Arc<Vec<Webhook>>,
    concurrency: usize,
    duration: Duration,
    count_bodies: bool,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let end = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, webhooks) = (next.clone(), webhooks.clone());
            tokio::spawn(async move {
                let mut conn = Conn::new(addr);
                let mut tally = Tally {
                    count_bodies,
                    ..Tally::default()
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= webhooks.len() || Instant::now() >= end {
                        return tally;
                    }
                    let sent = Instant::now();
                    let result = post(&mut conn, &webhooks[i]).await;
                    tally.record(result, sent.elapsed());
                }
            })
        })
        .collect();
    let mut total = Tally::default();
    for worker in workers {
        total.merge(worker.await.expect("a load worker panicked"));
    }
    total.elapsed = started.elapsed();
    total
}

/// The schedule of an open-loop run: request `i` is due at `start + i * period`.
#[derive(Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub period: Duration,
}

impl Schedule {
    pub fn due(&self, index: u64) -> Instant {
        self.start + self.period.mul_f64(index as f64)
    }
}

/// Offers `webhooks` at `rate` per second over up to `connections` connections; latencies
/// run from each request's scheduled time to its answer.
pub async fn open_loop(
    addr: SocketAddr,
    webhooks: Arc<Vec<Webhook>>,
    rate: f64,
    connections: usize,
) -> (Tally, Schedule) {
    let schedule = Schedule {
        start: Instant::now() + Duration::from_millis(20),
        period: Duration::from_secs_f64(1.0 / rate),
    };
    let (tx, rx) = mpsc::unbounded_channel::<usize>();
    // A thread of its own paces the sends: the runtime's timer ticks in whole milliseconds,
    // which would bunch requests up and add to every latency.
    let count = webhooks.len();
    let pacer = std::thread::spawn(move || {
        for i in 0..count {
            let due = schedule.due(i as u64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(i).is_err() {
                return;
            }
        }
    });
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (rx, webhooks) = (rx.clone(), webhooks.clone());
            tokio::spawn(async move {
                let mut conn = Conn::new(addr);
                let mut tally = Tally::default();
                loop {
                    let Some(i) = rx.lock().await.recv().await else {
                        return tally;
                    };
                    let result = post(&mut conn, &webhooks[i]).await;
                    tally.record(result, schedule.due(i as u64).elapsed());
                }
            })
        })
        .collect();
    let mut total = Tally::default();
    for worker in workers {
        total.merge(worker.await.expect("a load worker panicked"));
    }
    pacer.join().expect("the pacer panicked");
    total.elapsed = schedule.start.elapsed();
    (total, schedule)
}
