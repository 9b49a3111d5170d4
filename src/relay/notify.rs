//! Answering a call notification: authenticate, look up, drop Twilio's retries of what was
//! already delivered, deliver to every target at once within the deadline.
//!
//! Twilio gets its answer within `server.webhook_deadline_ms`: every store call on the answer's
//! path is bounded by the deadline as well as by `store.command_timeout_ms`. A lookup or claim
//! that would pass it is a `503`; removing dead bindings gives up at the deadline (the next
//! notification removes them); recording the outcome for dedupe happens after the answer.
//!
//! Once a notification is authenticated, the rest runs on a task of its own, tracked by the
//! relay's `TaskTracker` (which shutdown drains): Twilio or a proxy hanging up, or
//! `limits.request_timeout_ms`, only drop the request's wait for the answer, never a delivery
//! half-way or a claim unsettled (`dedupe.rs` has the claim's lifecycle).

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use futures_util::future::join_all;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Relay, Summary, WebhookError};
use crate::auth::webhook::{self, WebhookCredentials};
use tokio::sync::oneshot;

use crate::channels::{Outcome, Report, Skip, Target};
use crate::config::Delivery;
use crate::domain::ringing::{self, SocketFirst};
use crate::domain::trace::TargetRecord;
use crate::domain::{CallNotification, SocketPresence};
use crate::metrics::{ChannelLabels, DeliveryLabels, OutcomeLabels, SkipLabels};
use crate::store::{Claim, ClaimOwner, ClaimRequest, StoreError};

impl Relay {
    pub async fn notify(
        self: &Arc<Self>,
        notification: Arc<CallNotification>,
        credentials: &WebhookCredentials<'_>,
    ) -> Result<Summary, WebhookError> {
        let deadline = Instant::now() + self.config.server.webhook_deadline;
        let settings = self
            .config
            .account(&notification.account_sid)
            .ok_or_else(|| WebhookError::UnknownAccount(notification.account_sid.clone()))?;
        webhook::authenticate(settings, credentials)?;

        let relay = self.clone();
        // The request's span goes with the task: its log lines and spans belong to the request.
        let accepted = self.tasks.spawn(
            async move {
                let Some(recorder) = relay.calls.clone() else {
                    return relay.run_accepted(&notification, deadline, None).await;
                };
                recorder.keep_ringing(&notification);
                let mut call = recorder.start_call(&notification);
                let answer = relay
                    .run_accepted(
                        &notification,
                        deadline,
                        call.as_mut().map(|c| &mut c.targets),
                    )
                    .await;
                if let Some(call) = call {
                    recorder.finish_call(call, &notification, &answer);
                }
                answer
            }
            .in_current_span(),
        );
        match accepted.await {
            Ok(answer) => answer,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels a task; nobody is left to answer.
            Err(_) => Err(WebhookError::Store(StoreError::Unavailable(
                "the delivery was cancelled".into(),
            ))),
        }
    }

    /// Everything after authentication, on the tracked task.
    /// `trail`, when the call is traced, receives what each target came to.
    async fn run_accepted(
        &self,
        notification: &CallNotification,
        deadline: Instant,
        trail: Option<&mut Vec<TargetRecord>>,
    ) -> Result<Summary, WebhookError> {
        let now = self.clock.now();
        let account = &notification.account_sid;
        let identity = &notification.identity;
        let owner = ClaimOwner::new();
        let claim = notification
            .message_id
            .as_deref()
            .map(|message_id| ClaimRequest {
                message_id,
                owner: &owner,
                pending_for: self.pending_for(),
            });
        let lookup = self
            .store
            .lookup(account, identity, claim, now)
            .instrument(tracing::debug_span!("store.lookup"));
        let lookup = match by_deadline(deadline, lookup).await {
            Ok(lookup) => lookup,
            Err(e) => {
                self.release_in_background(notification, &owner);
                return Err(e.into());
            }
        };
        let targets = lookup.targets;
        if targets.is_empty() {
            return Err(WebhookError::NoBinding);
        }
        if let Some(id) = &notification.message_id {
            let claim = self
                .await_claim(notification, id, &owner, lookup.claim, deadline)
                .await?;
            if claim == Claim::Delivered {
                return Ok(Summary::duplicate());
            }
        }

        // One ring per device: a device's push bindings form a chain tried newest first, and a
        // calling device whose app prefers sockets gets its push only if its socket stays
        // silent. Other types go everywhere at once: nothing waits for their acknowledgement.
        let chains = ringing::one_per_device(targets.bindings);
        let (chains, sockets, socket_first) = if notification.is_call() {
            ringing::socket_first(chains, targets.sockets, |b| {
                self.config.delivery(account, &b.app) == Delivery::PreferWebsocket
            })
        } else {
            (chains, targets.sockets, Vec::new())
        };
        let summary = self
            .deliver_all(
                Plan {
                    chains,
                    sockets,
                    socket_first,
                },
                notification,
                deadline,
                trail,
            )
            .await;

        if let Some(id) = &notification.message_id {
            // Off the answer's path, which may have used the whole deadline: a retry of this
            // notification that arrives meanwhile finds it pending and waits for the outcome.
            self.settle(notification, id, &owner, summary.delivered > 0);
        }

        // Targets skipped by a rule were not failures: when nothing was delivered only because
        // the rules sent it nowhere (a cancel for a PushKit-only device), that is the answer.
        // A dead or failed target beside the skips means nobody got it: Twilio should hear so.
        let only_skipped = summary.skipped > 0 && summary.failed == 0 && summary.removed == 0;
        if summary.delivered > 0 || only_skipped {
            Ok(summary)
        } else if summary.failed == 0 {
            Err(WebhookError::AllRemoved(summary))
        } else {
            Err(WebhookError::AllFailed(summary))
        }
    }

    /// Delivers to every target of the plan at once (a socket-first device's push after its
    /// sockets had their chance) and sums up what came of each.
    async fn deliver_all(
        &self,
        plan: Plan,
        notification: &CallNotification,
        deadline: Instant,
        trail: Option<&mut Vec<TargetRecord>>,
    ) -> Summary {
        let Plan {
            chains,
            sockets,
            socket_first,
        } = plan;
        let chains_done = join_all(
            chains
                .into_iter()
                .map(|chain| self.deliver_chain(chain, notification, deadline)),
        );
        let sockets_done = join_all(sockets.into_iter().map(|p| async move {
            let target = Target::Socket(p);
            let done = self.deliver_one(&target, notification, deadline).await;
            (target, done)
        }));
        let socket_first_done = join_all(
            socket_first
                .into_iter()
                .map(|device| self.deliver_socket_first(device, notification, deadline)),
        );
        let (chains, sockets, devices) = tokio::join!(chains_done, sockets_done, socket_first_done);
        let done: Vec<Delivered> = chains
            .into_iter()
            .flatten()
            .chain(sockets)
            .chain(devices.into_iter().flatten())
            .collect();
        let mut summary = Summary::default();
        for (_, (report, _)) in &done {
            match report.outcome {
                Outcome::Delivered => summary.delivered += 1,
                Outcome::Dead(_) => summary.removed += 1,
                Outcome::Failed(_) => summary.failed += 1,
                Outcome::Skipped(_) => summary.skipped += 1,
            }
        }
        if let Some(trail) = trail {
            trail.extend(done.into_iter().map(|(target, (report, took))| {
                super::trace::target_record(&target, report, took)
            }));
        }
        summary
    }

    /// A device's push chain: its newest binding, and each older one only when the one before
    /// it was dead or failed (within the deadline); those not needed are skipped.
    async fn deliver_chain(
        &self,
        chain: ringing::Chain,
        notification: &CallNotification,
        deadline: Instant,
    ) -> Vec<Delivered> {
        let mut done = Vec::with_capacity(chain.len());
        let mut reached = false;
        for binding in chain {
            let target = Target::Push(binding);
            if reached {
                let why = "one ring per device: a more recently registered binding of the device took the call";
                let skipped = self.skip(&target, Skip::new(Skip::OLDER_BINDING, why));
                done.push((target, skipped));
                continue;
            }
            let report = self.deliver_one(&target, notification, deadline).await;
            reached = !matches!(report.0.outcome, Outcome::Dead(_) | Outcome::Failed(_))
                || Instant::now() >= deadline;
            done.push((target, report));
        }
        done
    }

    /// A target not sent to, by a rule: counted as delivery outcome `skipped` and by rule.
    fn skip(&self, target: &Target, skip: Skip) -> (Report, std::time::Duration) {
        self.metrics
            .deliveries
            .get_or_create(&DeliveryLabels {
                channel: target.channel_name(),
                outcome: "skipped",
            })
            .inc();
        self.count_skip(&skip);
        (
            Report::plain(Outcome::Skipped(skip), 0),
            std::time::Duration::ZERO,
        )
    }

    fn count_skip(&self, skip: &Skip) {
        self.metrics
            .skipped_targets
            .get_or_create(&SkipLabels { rule: skip.rule })
            .inc();
    }

    /// `delivery = "prefer_websocket"`: the device's sockets get the call at once; its push
    /// goes out unless a socket's client acknowledges by `ack_by` (`websocket.ack_timeout_ms`
    /// after now, and never later than half of what is left of the deadline, so the push
    /// has time). The push does not wait for the hand-offs themselves: a socket on a replica
    /// that does not answer (frozen, or too old to know the request) delays nothing.
    async fn deliver_socket_first(
        &self,
        device: SocketFirst,
        notification: &CallNotification,
        deadline: Instant,
    ) -> Vec<Delivered> {
        let now = Instant::now();
        let ack_by = (now + self.config.websocket.ack_timeout)
            .min(now + deadline.saturating_duration_since(now) / 2);
        let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
        let sockets = join_all(device.sockets.into_iter().map(|p| {
            let acks_tx = acks_tx.clone();
            async move {
                let target = Target::Socket(p);
                let (done, acked) = self
                    .deliver_one_awaiting_ack(&target, notification, deadline)
                    .await;
                if let Some(acked) = acked {
                    let _ = acks_tx.send(acked);
                }
                (target, done)
            }
        }));
        drop(acks_tx);
        let decision = async {
            // Acknowledged: any socket's client said it has the call before `ack_by`. Every
            // hand-off over and none able to acknowledge: no reason to wait.
            let mut waiting = futures_util::stream::FuturesUnordered::new();
            let mut handing_off = true;
            let deadline_passed = tokio::time::sleep_until(ack_by);
            tokio::pin!(deadline_passed);
            loop {
                tokio::select! {
                    _ = &mut deadline_passed => return false,
                    next = acks_rx.recv(), if handing_off => match next {
                        Some(rx) => waiting.push(rx),
                        None => {
                            handing_off = false;
                            if waiting.is_empty() {
                                return false;
                            }
                        }
                    },
                    Some(heard) = futures_util::StreamExt::next(&mut waiting) => {
                        if heard.is_ok() {
                            return true;
                        }
                        if !handing_off && waiting.is_empty() {
                            return false;
                        }
                    }
                }
            }
        };
        let push = async {
            let acknowledged = decision.await;
            let outcome = if acknowledged {
                "acknowledged"
            } else {
                "pushed"
            };
            self.metrics
                .socket_first
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
            if acknowledged {
                let why = "the device's socket acknowledged the call in time (delivery = prefer_websocket)";
                device
                    .push
                    .into_iter()
                    .map(|b| {
                        let target = Target::Push(b);
                        let skipped = self.skip(&target, Skip::new(Skip::SOCKET_ACKNOWLEDGED, why));
                        (target, skipped)
                    })
                    .collect()
            } else {
                self.deliver_chain(device.push, notification, deadline)
                    .await
            }
        };
        let (mut done, pushed): (Vec<Delivered>, Vec<Delivered>) = tokio::join!(sockets, push);
        done.extend(pushed);
        done
    }

    /// Delivers to one target; says what came of it and how long it took.
    async fn deliver_one(
        &self,
        target: &Target,
        notification: &CallNotification,
        deadline: Instant,
    ) -> (Report, std::time::Duration) {
        let delivery = self.channels.deliver(target, notification, deadline);
        self.deliver_timed(target, delivery, deadline).await
    }

    /// Delivers to a socket target, with a receiver told when its client acknowledges (when
    /// the socket has the notification and it can be acknowledged).
    async fn deliver_one_awaiting_ack(
        &self,
        target: &Target,
        notification: &CallNotification,
        deadline: Instant,
    ) -> ((Report, std::time::Duration), Option<oneshot::Receiver<()>>) {
        let Target::Socket(presence) = target else {
            return (self.deliver_one(target, notification, deadline).await, None);
        };
        let mut acked = None;
        let delivery = async {
            let (outcome, rx) = self
                .channels
                .websocket
                .deliver_awaiting_ack(presence, notification, deadline)
                .await;
            acked = rx;
            Report::plain(outcome, 1)
        };
        let done = self.deliver_timed(target, delivery, deadline).await;
        (done, acked)
    }

    async fn deliver_timed(
        &self,
        target: &Target,
        delivery: impl Future<Output = Report>,
        deadline: Instant,
    ) -> (Report, std::time::Duration) {
        let span = delivery_span(target);
        let started = Instant::now();
        let report = self
            .deliver_and_count(target, delivery, deadline)
            .instrument(span.clone())
            .await;
        span.record("outcome", report.outcome.label());
        (report, started.elapsed())
    }

    async fn deliver_and_count(
        &self,
        target: &Target,
        delivery: impl Future<Output = Report>,
        deadline: Instant,
    ) -> Report {
        let started = Instant::now();
        let channel = target.channel_name();
        tokio::pin!(delivery);
        // A local socket answers at once; only a delivery that has to wait (a push, the
        // replica bus) arms the deadline's timer.
        let first = std::future::poll_fn(|cx| Poll::Ready(delivery.as_mut().poll(cx))).await;
        let report = match first {
            Poll::Ready(report) => report,
            Poll::Pending => tokio::time::timeout_at(deadline, delivery)
                .await
                .unwrap_or_else(|_| {
                    Report::plain(
                        Outcome::Failed("no answer within the webhook deadline".into()),
                        1,
                    )
                }),
        };
        let outcome = &report.outcome;
        self.metrics
            .delivery_duration
            .get_or_create(&ChannelLabels { channel })
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .deliveries
            .get_or_create(&DeliveryLabels {
                channel,
                outcome: outcome.label(),
            })
            .inc();
        match (outcome, target) {
            (Outcome::Dead(why), Target::Push(b)) => {
                tracing::info!(binding = %b.id, identity = %b.identity, channel, reason = why, "removing dead binding");
                if let Err(e) = by_deadline(deadline, self.store.remove_dead_binding(b)).await {
                    tracing::warn!(binding = %b.id, error = %e, "could not remove dead binding");
                }
            }
            (Outcome::Dead(why), Target::Socket(p)) => {
                tracing::debug!(conn_id = p.conn_id, reason = why, "removing closed socket");
                if let Err(e) = by_deadline(
                    deadline,
                    self.store
                        .remove_presence(&p.account_sid, &p.identity, &p.conn_id),
                )
                .await
                {
                    tracing::warn!(conn_id = p.conn_id, error = %e, "could not remove closed socket");
                }
            }
            (Outcome::Failed(why), _) => {
                tracing::warn!(channel, reason = why, "delivery failed");
            }
            (Outcome::Skipped(skip), _) => {
                self.count_skip(skip);
                tracing::debug!(channel, rule = skip.rule, reason = skip.detail, "not sent");
            }
            (Outcome::Delivered, Target::Push(b)) => {
                // Each successful push extends the binding's life, as Twilio's own do; off the
                // answer's path.
                let store = self.store.clone();
                let b = b.clone();
                self.tasks.spawn(async move {
                    if let Err(e) = store.refresh_binding(&b, OffsetDateTime::now_utc()).await {
                        tracing::warn!(binding = %b.id, error = %e, "could not refresh binding");
                    }
                });
            }
            (Outcome::Delivered, Target::Socket(_)) => {}
        }
        report
    }
}

/// Who gets a call: devices' push chains and sockets delivered at once, and devices reached
/// socket first.
struct Plan {
    chains: Vec<ringing::Chain>,
    sockets: Vec<SocketPresence>,
    socket_first: Vec<SocketFirst>,
}

/// A target and what came of it, with how long it took.
type Delivered = (Target, (Report, std::time::Duration));

/// One target's delivery, for traces (and the logs at debug): what was tried, never the device
/// token.
fn delivery_span(target: &Target) -> tracing::Span {
    match target {
        Target::Push(b) => tracing::debug_span!(
            "deliver",
            channel = b.channel.as_str(),
            app = %b.app,
            binding = %b.id,
            outcome = tracing::field::Empty,
        ),
        Target::Socket(p) => tracing::debug_span!(
            "deliver",
            channel = "websocket",
            conn_id = %p.conn_id,
            replica = %p.node,
            outcome = tracing::field::Empty,
        ),
    }
}

/// A store call on the webhook's path: given up at the deadline, as the store gives up after
/// its command timeout.
pub(super) async fn by_deadline<T>(
    deadline: Instant,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "no answer within the webhook deadline".into(),
            ))
        })
}

impl Summary {
    pub fn duplicate() -> Self {
        Self {
            duplicate: true,
            ..Self::default()
        }
    }

    /// The counts a webhook's result carries (none for a refusal before delivery).
    pub fn of(result: &Result<Summary, WebhookError>) -> Self {
        match result {
            Ok(summary)
            | Err(WebhookError::AllRemoved(summary) | WebhookError::AllFailed(summary)) => *summary,
            Err(_) => Summary::default(),
        }
    }
}
