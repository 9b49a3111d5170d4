//! Dedupe outcomes, written in batches. Each delivered notification ends with one small write
//! off the answer's path: its claim becomes `delivered` for the dedupe window, or is removed.
//! Under load many arrive together, and one pipeline for all of them (one write, one round
//! trip) costs Redis and callrelay a fraction of a request each.
//!
//! Every write is conditional on the claim's owner (a one-key script each, inside the callee's
//! hash tag, so it runs unchanged on Redis Cluster): an attempt whose claim lapsed never
//! settles the claim a retry took since.
//!
//! The queue is bounded (`QUEUE_CAPACITY`). When it is full (Redis too slow to keep up for
//! long) an outcome is dropped rather than making the webhook wait: the caller learns it
//! (`settle_detached` returns `false`, and the relay counts it in
//! `callrelay_dedupe_outcomes_dropped_total`), and the claim lapses by itself a moment after
//! the webhook deadline. A dropped `delivered` costs at most one redelivery if Twilio retries
//! after that; a dropped "forget" makes a retry wait for the lapse (`503` with `Retry-After`
//! until then). Nothing is ever reported as delivered that was not.

use std::time::Duration;

use redis::{ErrorKind, ServerErrorKind};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::link::Link;
use super::scripts::{DEL_IF_EQUAL, SETTLE_DELIVERED};
use super::{bounded, millis};
use crate::store::{Settlement, StoreError};

/// The most outcomes one pipeline carries.
const MAX_BATCH: usize = 256;

/// The most outcomes waiting for the writer: a few seconds of a busy replica's webhooks
/// (about 200 bytes each, a few MiB at most) while Redis is slow; beyond, outcomes are
/// dropped (see the module comment).
pub const QUEUE_CAPACITY: usize = 16_384;

struct Outcome {
    key: String,
    /// The marker value of the owner's claim (`pending:<owner>`).
    claim: String,
    settlement: Settlement,
    /// Who waits for the write; `None`: nobody, a failure is only logged.
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

enum Item {
    Outcome(Outcome),
    /// Answered once every outcome queued before it is written.
    Flush(oneshot::Sender<()>),
}

pub struct Settler {
    tx: mpsc::Sender<Item>,
}

impl Settler {
    /// Starts the writer; it stops when the `Settler` is dropped, after the outcomes queued.
    pub fn start(conn: Link, timeout: Duration) -> Self {
        Self::with_capacity(conn, timeout, QUEUE_CAPACITY)
    }

    fn with_capacity(conn: Link, timeout: Duration, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        tokio::spawn(write_batches(conn, timeout, rx));
        Self { tx }
    }

    /// Records an outcome; returns once it is written (or could not be, or was not queued).
    pub async fn settle(
        &self,
        key: String,
        claim: String,
        settlement: Settlement,
    ) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        let outcome = Outcome {
            key,
            claim,
            settlement,
            done: Some(done),
        };
        match self.tx.try_send(Item::Outcome(outcome)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(StoreError::Unavailable(
                    "the dedupe-outcome queue is full".into(),
                ));
            }
            Err(TrySendError::Closed(_)) => {
                return Err(StoreError::Unavailable("the store is shutting down".into()));
            }
        }
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the outcome was dropped".into())))
    }

    /// Queues an outcome without waiting for it; `false` when it was dropped (queue full or
    /// shutting down).
    pub fn settle_detached(&self, key: String, claim: String, settlement: Settlement) -> bool {
        let outcome = Outcome {
            key,
            claim,
            settlement,
            done: None,
        };
        self.tx.try_send(Item::Outcome(outcome)).is_ok()
    }

    /// Waits until the outcomes queued so far are written (or failed).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

async fn write_batches(mut conn: Link, timeout: Duration, mut rx: mpsc::Receiver<Item>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut yielded = false;
        while let Some(item) = next.take() {
            match item {
                Item::Outcome(o) => batch.push(o),
                Item::Flush(done) => flushes.push(done),
            }
            if !yielded {
                // Let the webhooks that are running finish first: their outcomes join this
                // batch.
                tokio::task::yield_now().await;
                yielded = true;
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            write(&mut conn, timeout, &mut batch).await;
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

fn pipeline(batch: &[Outcome]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for o in batch {
        let invocation = match o.settlement {
            Settlement::Delivered { window } => {
                let mut i = SETTLE_DELIVERED.key(&o.key);
                i.arg(&o.claim).arg(millis(window));
                i
            }
            Settlement::Forgotten => {
                let mut i = DEL_IF_EQUAL.key(&o.key);
                i.arg(&o.claim);
                i
            }
        };
        pipe.invoke_script(&invocation).ignore();
    }
    pipe
}

/// Sends the batch; when Redis does not know the scripts yet (a restart, a failover, the
/// first batch), loads them and sends it again. Every write is idempotent, so the part of the
/// first attempt that did run does no harm.
async fn send(conn: &mut Link, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
    match pipe.query_async::<()>(conn).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            SETTLE_DELIVERED.load_async(conn).await?;
            DEL_IF_EQUAL.load_async(conn).await?;
            pipe.query_async::<()>(conn).await
        }
        other => other,
    }
}

async fn write(conn: &mut Link, timeout: Duration, batch: &mut Vec<Outcome>) {
    // One pipeline for the batch; on Redis Cluster the link sends it as one pipeline per slot.
    let pipe = pipeline(batch);
    let link = conn.clone();
    let result = bounded(&link, timeout, send(conn, &pipe)).await;
    let mut unreported = 0;
    for o in batch.drain(..) {
        match o.done {
            Some(done) => {
                let _ = done.send(result.clone());
            }
            None => unreported += 1,
        }
    }
    if let Err(e) = &result
        && unreported > 0
    {
        // The claims lapse by themselves; the worst case is one redelivery each.
        tracing::warn!(error = %e, notifications = unreported, "could not record deliveries for dedupe");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RedisConfig, Secret, TlsFiles, Topology};
    use crate::store::redis::connect::Dialer;

    /// A link to a port nobody listens on: the writer never gets anywhere.
    async fn nowhere() -> Link {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = RedisConfig {
            topology: Topology::Standalone {
                url: Secret::new(format!("redis://127.0.0.1:{port}")),
            },
            username: None,
            password: None,
            tls: TlsFiles::default(),
            min_replica_acks: 0,
        };
        let timeout = Duration::from_secs(1);
        let dialer = Dialer::new(&config, timeout).unwrap();
        Link::open(std::sync::Arc::new(dialer), "test", timeout).await
    }

    #[tokio::test]
    async fn a_full_queue_drops_outcomes_instead_of_waiting() {
        let settler = Settler::with_capacity(nowhere().await, Duration::from_secs(1), 3);
        // The writer task has not run yet (this runtime has one thread and nothing here
        // yields), so the queue holds exactly what was sent.
        let outcome = |n: usize| {
            let settlement = Settlement::Delivered {
                window: Duration::from_secs(600),
            };
            (format!("k{n}"), format!("pending:o{n}"), settlement)
        };
        for n in 0..3 {
            let (key, claim, settlement) = outcome(n);
            assert!(settler.settle_detached(key, claim, settlement), "{n}");
        }
        let (key, claim, settlement) = outcome(3);
        assert!(!settler.settle_detached(key, claim, settlement));
        let (key, claim, settlement) = outcome(4);
        assert!(matches!(
            settler.settle(key, claim, settlement).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    #[test]
    fn every_outcome_is_a_script_conditional_on_its_claim() {
        let batch = [
            Outcome {
                key: "p:{AC1:bob}:msg:RM1".into(),
                claim: "pending:o1".into(),
                settlement: Settlement::Delivered {
                    window: Duration::from_secs(600),
                },
                done: None,
            },
            Outcome {
                key: "p:{AC1:bob}:msg:RM2".into(),
                claim: "pending:o2".into(),
                settlement: Settlement::Forgotten,
                done: None,
            },
        ];
        let packed = String::from_utf8_lossy(&pipeline(&batch).get_packed_pipeline()).into_owned();
        assert_eq!(packed.matches("EVALSHA").count(), 2, "{packed}");
        assert!(packed.contains(SETTLE_DELIVERED.get_hash()));
        assert!(packed.contains(DEL_IF_EQUAL.get_hash()));
        assert!(packed.contains("pending:o1") && packed.contains("pending:o2"));
        assert!(packed.contains("600000"));
        // No plain write that would overwrite another owner's claim.
        assert!(!packed.contains("\r\nDEL\r\n") && !packed.contains("\r\nSET\r\n"));
    }
}
