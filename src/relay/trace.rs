//! The per-call delivery trace: what each call notification came to, recorded off the
//! answer's path, and read back by call or by identity.
//!
//! The webhook's task fills a `CallInProgress` while it delivers and hands it to the recorder
//! once it has its answer; the recorder queues the entry and returns. A writer task takes the
//! queue in batches (what arrives within `LINGER` of the first entry, up to `MAX_BATCH`) and
//! writes each batch with one store call, so under load a trace costs a small fraction of a
//! round trip per call. The queue is
//! bounded: when the store is slow or gone, entries are dropped and counted
//! (`callrelay_call_trace_entries_total{outcome="dropped"}`), never waited for: the trace must
//! not slow a call down. Shutdown flushes what is queued.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{RecordError, Relay, Summary, WebhookError};
use crate::auth::Caller;
use crate::channels::{Outcome, Report, Target};
use crate::config::CallsConfig;
use crate::domain::trace::{
    AckRecord, CallTrace, InsightsRecord, NotificationRecord, TargetRecord, TraceEntry,
};
use crate::domain::{AccountSid, CallNotification, CallSid, Identity};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::store::{RingingWrite, Store, TraceWrite};
use std::sync::atomic::{AtomicU64, Ordering};

/// The most entries one batch writes (its trace entries and its ringing copies, two store
/// calls made at once). At 5 ms of lingering and a few ms per write, the writer keeps up with
/// well over 100,000 entries a second: two per notification.
const MAX_BATCH: usize = 2048;
/// How long the writer gathers entries after the first before writing them: nobody waits for
/// a trace, and one write for many entries spends one round trip's system calls (callrelay's
/// and Redis's) on all of them instead of on a few.
const LINGER: Duration = Duration::from_millis(5);
/// The most entries waiting for the writer (a few MiB at most).
const QUEUE_CAPACITY: usize = 16_384;

enum Item {
    Write(TraceWrite),
    /// A copy kept for replay to reconnecting clients (`domain::ringing`), written by the
    /// same writer: nobody waits for it either.
    Ring(RingingWrite),
    Flush(oneshot::Sender<()>),
}

pub struct CallRecorder {
    tx: mpsc::Sender<Item>,
    config: CallsConfig,
    /// The ringing window when notifications are kept for replay (`websocket.replay`).
    ringing: Option<Duration>,
    node: String,
    metrics: Arc<Metrics>,
    /// Copies not kept for replay since the last line that said so, and when that was (ms).
    ring_drops: AtomicU64,
    ring_drops_logged_ms: AtomicU64,
}

/// What the webhook's task collects while it delivers.
pub struct CallInProgress {
    pub targets: Vec<TargetRecord>,
    call_sid: CallSid,
    received_at: OffsetDateTime,
    started: Instant,
}

impl CallRecorder {
    /// Starts the writer; it stops once the recorder is dropped and the queue is written.
    pub fn start(
        store: Arc<dyn Store>,
        config: CallsConfig,
        ringing: Option<Duration>,
        node: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_batches(store, rx, metrics.clone()));
        Self {
            tx,
            config,
            ringing,
            node,
            metrics,
            ring_drops: AtomicU64::new(0),
            ring_drops_logged_ms: AtomicU64::new(0),
        }
    }

    /// Keeps a copy of `notification` for its identity's reconnecting clients, when replay
    /// is on.
    pub fn keep_ringing(&self, notification: &CallNotification) {
        let Some(window) = self.ringing else {
            return;
        };
        let entry = crate::domain::ringing::entry(
            crate::store::unix_ms(OffsetDateTime::now_utc()),
            &notification.raw,
        );
        let write = RingingWrite {
            account: notification.account_sid.clone(),
            identity: notification.identity.clone(),
            entry,
            window,
        };
        if self.tx.try_send(Item::Ring(write)).is_err() {
            // One line per ten seconds at most, with how many since the last: a full queue
            // under load would otherwise write one line per notification.
            let dropped = self.ring_drops.fetch_add(1, Ordering::Relaxed) + 1;
            let now_ms = crate::store::unix_ms(OffsetDateTime::now_utc()) as u64;
            let last = self.ring_drops_logged_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(last) >= 10_000
                && self
                    .ring_drops_logged_ms
                    .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.ring_drops.fetch_sub(dropped, Ordering::Relaxed);
                tracing::warn!(
                    dropped,
                    "the record queue is full; call notifications are not kept for replay"
                );
            }
        }
    }

    /// A notification without a usable `twi_call_sid` is not traced, nor any when the trace
    /// is off.
    pub fn start_call(&self, notification: &CallNotification) -> Option<CallInProgress> {
        if !self.config.trace {
            return None;
        }
        let call_sid = CallSid::parse(notification.call_sid.as_deref()?).ok()?;
        Some(CallInProgress {
            targets: Vec::new(),
            call_sid,
            received_at: OffsetDateTime::now_utc(),
            started: Instant::now(),
        })
    }

    pub fn finish_call(
        &self,
        call: CallInProgress,
        notification: &CallNotification,
        answer: &Result<Summary, WebhookError>,
    ) {
        let took = call.started.elapsed();
        let (status, outcome) = crate::http::problem::webhook_status(answer);
        let summary = match answer {
            Ok(summary)
            | Err(WebhookError::AllRemoved(summary) | WebhookError::AllFailed(summary)) => *summary,
            Err(_) => Summary::default(),
        };
        let record = NotificationRecord {
            identity: notification.identity.as_str().to_owned(),
            message_id: notification.message_id.clone(),
            message_type: notification.message_type.clone(),
            from: notification.from.clone(),
            to: Some(format!("client:{}", notification.identity)),
            received_at: call.received_at,
            status,
            answer: outcome.to_owned(),
            took_ms: millis(took),
            delivered: summary.delivered,
            removed: summary.removed,
            failed: summary.failed,
            duplicate: summary.duplicate,
            replica: Some(self.node.clone()),
            targets: call.targets,
        };
        self.queue(TraceWrite {
            account: notification.account_sid.clone(),
            call_sid: call.call_sid,
            identity: Some(notification.identity.clone()),
            at: call.received_at,
            entry: entry_bytes(&TraceEntry::Notification(record)),
            retention: self.config.retention,
            max_per_identity: self.config.max_per_identity,
        });
    }

    /// Joins a Voice Insights call summary to its call's trace.
    pub fn record_insights(&self, account: &AccountSid, call_sid: &str, summary: InsightsRecord) {
        if !self.config.trace {
            return;
        }
        let Ok(call_sid) = CallSid::parse(call_sid) else {
            return;
        };
        self.queue(TraceWrite {
            account: account.clone(),
            call_sid,
            identity: None,
            at: summary.received_at,
            entry: entry_bytes(&TraceEntry::Insights(summary)),
            retention: self.config.retention,
            max_per_identity: self.config.max_per_identity,
        });
    }

    /// Records a client's acknowledgement in its call's trace.
    pub fn record_ack(&self, account: &AccountSid, call_sid: &str, ack: AckRecord) {
        let Ok(call_sid) = CallSid::parse(call_sid) else {
            return;
        };
        if !self.config.trace {
            return;
        }
        self.queue(TraceWrite {
            account: account.clone(),
            call_sid,
            identity: None,
            at: ack.acknowledged_at,
            entry: entry_bytes(&TraceEntry::Ack(ack)),
            retention: self.config.retention,
            max_per_identity: self.config.max_per_identity,
        });
    }

    fn queue(&self, write: TraceWrite) {
        if self.tx.try_send(Item::Write(write)).is_err() {
            self.count("dropped", 1);
        }
    }

    fn count(&self, outcome: &'static str, n: u64) {
        count(&self.metrics, outcome, n);
    }

    /// Waits until what was queued so far is written (or failed).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

fn count(metrics: &Metrics, outcome: &'static str, n: u64) {
    metrics
        .call_trace_entries
        .get_or_create(&OutcomeLabels { outcome })
        .inc_by(n);
}

pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

fn entry_bytes(entry: &TraceEntry) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(entry).expect("a trace entry serialises"))
}

/// One target's line in the trace: what was tried (never the device token) and what came of it.
pub(super) fn target_record(target: &Target, report: Report, took: Duration) -> TargetRecord {
    let (channel, app, binding, socket, replica) = match target {
        Target::Push(b) => (
            b.channel.as_str(),
            Some(b.app.clone()),
            Some(b.id.to_string()),
            None,
            None,
        ),
        Target::Socket(p) => (
            "websocket",
            None,
            None,
            Some(p.conn_id.clone()),
            Some(p.node.clone()),
        ),
    };
    let detail = match &report.outcome {
        Outcome::Delivered => None,
        Outcome::Dead(why) | Outcome::Failed(why) => Some(why.clone()),
        Outcome::Skipped(skip) => Some(skip.detail.clone()),
    };
    TargetRecord {
        channel: channel.to_owned(),
        app,
        binding,
        socket,
        replica,
        attempts: report.attempts,
        outcome: report.outcome.label().to_owned(),
        status: report.vendor.status,
        reason: report.vendor.reason,
        apns_id: report.vendor.id,
        detail,
        latency_ms: millis(took),
    }
}

async fn write_batches(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Item>, metrics: Arc<Metrics>) {
    let mut batch = Vec::with_capacity(64);
    let mut rings = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        if !matches!(first, Item::Flush(_)) {
            tokio::time::sleep(LINGER).await;
        }
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Write(w) => batch.push(w),
                Item::Ring(r) => rings.push(r),
                Item::Flush(done) => flushes.push(done),
            }
            if batch.len() + rings.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        // Both at once: two round trips' worth of waiting in one.
        let traces = async {
            if batch.is_empty() {
                return;
            }
            let n = batch.len() as u64;
            match store.record_calls(&batch).await {
                Ok(()) => count(&metrics, "written", n),
                Err(e) => {
                    count(&metrics, "failed", n);
                    tracing::warn!(error = %e, entries = n, "could not record call-trace entries");
                }
            }
        };
        let copies = async {
            if rings.is_empty() {
                return;
            }
            if let Err(e) = store.keep_ringing(&rings).await {
                tracing::warn!(error = %e, notifications = rings.len(), "could not keep call notifications for replay");
            }
        };
        tokio::join!(traces, copies);
        batch.clear();
        rings.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// The most calls one listing returns.
pub const MAX_CALLS_LISTED: usize = 200;

impl Relay {
    /// The (account, identity) a caller may read calls of: an access token its own; an admin
    /// key any configured account's, naming it.
    fn call_scope(
        &self,
        caller: &Caller,
        account: Option<AccountSid>,
    ) -> Result<(AccountSid, Option<Identity>), RecordError> {
        match caller {
            Caller::Client {
                account_sid,
                identity,
            } => {
                if account.as_ref().is_some_and(|a| a != account_sid) {
                    return Err(RecordError::Forbidden(
                        "the access token belongs to another account".into(),
                    ));
                }
                Ok((account_sid.clone(), Some(identity.clone())))
            }
            Caller::Admin { .. } => Ok((self.admin_account(account)?, None)),
        }
    }

    /// One call's trace. An access token reads only calls to its own identity.
    pub async fn call_trace(
        &self,
        caller: &Caller,
        account: Option<AccountSid>,
        call_sid: &CallSid,
    ) -> Result<CallTrace, RecordError> {
        let (account, own) = self.call_scope(caller, account)?;
        let unknown = || RecordError::NotFound(format!("no trace of call {call_sid}"));
        let entries = self.store.call_entries(&account, call_sid).await?;
        if entries.is_empty() {
            return Err(unknown());
        }
        let trace = CallTrace::assemble(account.as_str(), call_sid.as_str(), &entries);
        match own {
            // Someone else's call is as unknown to a token holder as a call never made.
            Some(own) => trace.for_client(own.as_str()).ok_or_else(unknown),
            None => Ok(trace),
        }
    }

    /// An identity's calls since `since`, newest first.
    pub async fn recent_calls(
        &self,
        caller: &Caller,
        account: Option<AccountSid>,
        identity: Option<Identity>,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<CallTrace>, RecordError> {
        let (account, own) = self.call_scope(caller, account)?;
        let client = own.is_some();
        let identity = match (own, identity) {
            (Some(own), Some(named)) if own != named => {
                return Err(RecordError::Forbidden(
                    "an access token may only read its own identity's calls".into(),
                ));
            }
            (Some(own), _) => own,
            (None, Some(named)) => named,
            (None, None) => {
                return Err(RecordError::BadRequest(
                    "identity is required with an admin key".into(),
                ));
            }
        };
        let calls = self
            .store
            .recent_calls(
                &account,
                &identity,
                since,
                limit.clamp(1, MAX_CALLS_LISTED),
                usize::try_from(self.config.calls.max_per_identity).unwrap_or(usize::MAX),
            )
            .await?;
        let mut traces = Vec::with_capacity(calls.len());
        // Each call's trace is a key of its own: read them sixteen at a time.
        let mut read = Vec::with_capacity(calls.len());
        for chunk in calls.chunks(16) {
            read.extend(
                futures_util::future::join_all(
                    chunk
                        .iter()
                        .map(|call| self.store.call_entries(&account, call)),
                )
                .await,
            );
        }
        for (call, entries) in calls.iter().zip(read) {
            let entries = entries?;
            let trace = CallTrace::assemble(account.as_str(), call.as_str(), &entries);
            let trace = if client {
                trace.for_client(identity.as_str())
            } else {
                Some(trace)
            };
            traces.extend(trace.filter(|t| !t.notifications.is_empty() || !t.insights.is_empty()));
        }
        Ok(traces)
    }
}
