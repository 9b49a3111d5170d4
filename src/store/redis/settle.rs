//! Dedupe outcomes, written in batches. Each delivered notification ends with one small write
//! (`delivered` for the dedupe window, or the marker deleted) off the answer's path; under
//! load many arrive together, and one pipeline for all of them (one write, one round trip)
//! costs Redis and callrelay a fraction of a request each.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::link::Link;
use super::{bounded, millis};
use crate::store::StoreError;

/// The most outcomes one pipeline carries.
const MAX_BATCH: usize = 256;

struct Outcome {
    key: String,
    delivered: bool,
    window: Duration,
    /// Who waits for the write; `None`: nobody, a failure is only logged.
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

enum Item {
    Outcome(Outcome),
    /// Answered once every outcome queued before it is written.
    Flush(oneshot::Sender<()>),
}

pub struct Settler {
    tx: mpsc::UnboundedSender<Item>,
}

impl Settler {
    /// Starts the writer; it stops when the `Settler` is dropped, after the outcomes queued.
    pub fn start(conn: Link, timeout: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(conn, timeout, rx));
        Self { tx }
    }

    /// Records an outcome; returns once it is written (or could not be).
    pub async fn settle(
        &self,
        key: String,
        delivered: bool,
        window: Duration,
    ) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        let outcome = Outcome {
            key,
            delivered,
            window,
            done: Some(done),
        };
        if self.tx.send(Item::Outcome(outcome)).is_err() {
            return Err(StoreError::Unavailable("the store is shutting down".into()));
        }
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the outcome was dropped".into())))
    }

    /// Records an outcome without waiting for it.
    pub fn settle_detached(&self, key: String, delivered: bool, window: Duration) {
        let outcome = Outcome {
            key,
            delivered,
            window,
            done: None,
        };
        if self.tx.send(Item::Outcome(outcome)).is_err() {
            tracing::warn!("could not record a delivery for dedupe: the store is shutting down");
        }
    }

    /// Waits until the outcomes queued so far are written (or failed).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }
}

async fn write_batches(mut conn: Link, timeout: Duration, mut rx: mpsc::UnboundedReceiver<Item>) {
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

/// One pipeline for the batch; on Redis Cluster the link sends it as one pipeline per slot.
async fn write(conn: &mut Link, timeout: Duration, batch: &mut Vec<Outcome>) {
    let mut pipe = redis::pipe();
    for o in batch.iter() {
        if o.delivered {
            pipe.pset_ex(&o.key, "delivered", millis(o.window)).ignore();
        } else {
            pipe.del(&o.key).ignore();
        }
    }
    let link = conn.clone();
    let result = bounded(&link, timeout, pipe.query_async::<()>(conn)).await;
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
        // The pending markers lapse by themselves; the worst case is one redelivery each.
        tracing::warn!(error = %e, notifications = unreported, "could not record deliveries for dedupe");
    }
}
