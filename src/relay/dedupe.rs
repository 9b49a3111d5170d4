//! The dedupe claim on a notification's `twi_message_id`, from taking it to settling it.
//!
//! Each attempt (one webhook request) claims the message id under an owner of its own
//! (`ClaimOwner`) in the lookup's round trip. The claim is `pending` for the webhook deadline
//! plus a margin (`lapse_margin`), and the attempt settles it when its delivery ends:
//! `delivered` for the dedupe window when any target accepted it, forgotten otherwise. Settling
//! is conditional on the owner, so an attempt whose claim lapsed never ends a claim a retry
//! took since. An attempt that cannot tell whether its claim was taken (the lookup or a claim
//! call failed or timed out: Redis may apply the `SET NX` after we stopped waiting) releases it
//! in the background. A retry that finds the claim pending waits for the outcome until its own
//! deadline; still pending then, it answers `503` with `Retry-After`, never `duplicate`:
//! `duplicate` is said only of what is marked delivered.

use std::time::Duration;

use tokio::time::Instant;

use super::{Relay, WebhookError, by_deadline};
use crate::domain::CallNotification;
use crate::store::{Claim, ClaimOwner, Settlement};

/// How often a retry of a notification still being delivered checks whether it is done.
const PENDING_POLL: Duration = Duration::from_millis(20);

/// Pause between attempts to release a claim whose fate is unknown.
const RELEASE_RETRY: Duration = Duration::from_millis(200);

impl Relay {
    /// How long after the deadline a claim nobody settled lapses: one store command timeout.
    /// Every delivery ends by the deadline, and its outcome is then written in one store
    /// command, bounded by the command timeout; so a live holder's outcome has landed (or
    /// failed) before its claim lapses, and a dead holder blocks Twilio's retries for just
    /// that long after its deadline.
    pub(super) fn lapse_margin(&self) -> Duration {
        self.config.store.command_timeout
    }

    /// How long a claim stays pending unless its owner settles it.
    pub(super) fn pending_for(&self) -> Duration {
        self.config.server.webhook_deadline + self.lapse_margin()
    }

    /// Given the lookup's claim (`None`: it has to be asked for), waits while another attempt
    /// holds it: `Acquired` (this attempt delivers) or `Delivered` (a duplicate); still
    /// pending at the deadline, `InProgress`.
    pub(super) async fn await_claim(
        &self,
        notification: &CallNotification,
        message_id: &str,
        owner: &ClaimOwner,
        first: Option<Claim>,
        deadline: Instant,
    ) -> Result<Claim, WebhookError> {
        let mut next = first;
        // Whether another attempt was seen holding the claim: a poll cut short by the deadline
        // then means "still in progress", not a store outage.
        let mut held_elsewhere = false;
        loop {
            let state = match next.take() {
                Some(state) => state,
                None => {
                    let claim = self.store.claim_message(
                        &notification.account_sid,
                        &notification.identity,
                        message_id,
                        owner,
                        self.pending_for(),
                    );
                    match by_deadline(deadline, claim).await {
                        Ok(state) => state,
                        Err(e) => {
                            self.release_in_background(notification, owner);
                            if held_elsewhere && Instant::now() >= deadline {
                                return Err(self.in_progress());
                            }
                            return Err(e.into());
                        }
                    }
                }
            };
            match state {
                Claim::Acquired | Claim::Delivered => return Ok(state),
                // Another attempt is delivering it: wait for its outcome, so that a failed
                // delivery still lets this retry through.
                Claim::Pending if Instant::now() + PENDING_POLL < deadline => {
                    held_elsewhere = true;
                    tokio::time::sleep(PENDING_POLL).await;
                }
                // The holder's claim lapses at most a margin after its deadline, which came
                // before this one, and it was taken at most a command timeout after this
                // attempt began.
                Claim::Pending => return Err(self.in_progress()),
            }
        }
    }

    fn in_progress(&self) -> WebhookError {
        WebhookError::InProgress {
            retry_after: self.lapse_margin() + self.config.store.command_timeout,
        }
    }

    /// Records the delivery's outcome for dedupe, off the answer's path. A full queue drops
    /// it (counted): the claim then lapses by itself.
    pub(super) fn settle(
        &self,
        notification: &CallNotification,
        message_id: &str,
        owner: &ClaimOwner,
        delivered: bool,
    ) {
        let settlement = if delivered {
            Settlement::Delivered {
                window: self.config.server.dedupe_window,
            }
        } else {
            Settlement::Forgotten
        };
        if !self.store.settle_message_detached(
            &notification.account_sid,
            &notification.identity,
            message_id,
            owner,
            settlement,
        ) {
            self.metrics.dedupe_outcomes_dropped.inc();
            tracing::debug!(
                message_id,
                "dedupe outcome dropped (queue full); the claim lapses by itself"
            );
        }
    }

    /// After a claim call that failed or timed out, which Redis may still have applied:
    /// removes the claim if `owner` holds it, in the background, trying again until the
    /// claim would have lapsed anyway.
    pub(super) fn release_in_background(
        &self,
        notification: &CallNotification,
        owner: &ClaimOwner,
    ) {
        let Some(message_id) = notification.message_id.clone() else {
            return;
        };
        let store = self.store.clone();
        let account = notification.account_sid.clone();
        let identity = notification.identity.clone();
        let owner = owner.clone();
        let lapsed = Instant::now() + self.pending_for();
        self.tasks.spawn(async move {
            loop {
                let release = store.settle_message(
                    &account,
                    &identity,
                    &message_id,
                    &owner,
                    Settlement::Forgotten,
                );
                match release.await {
                    Ok(()) => return,
                    Err(e) if Instant::now() + RELEASE_RETRY < lapsed => {
                        tracing::debug!(message_id, error = %e, "could not release a claim yet");
                        tokio::time::sleep(RELEASE_RETRY).await;
                    }
                    Err(e) => {
                        tracing::warn!(message_id, error = %e, "could not release a claim; it lapses by itself");
                        return;
                    }
                }
            }
        });
    }
}
