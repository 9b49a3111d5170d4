//! Keeping Twilio's other events: authenticate a status callback or an Event Streams
//! delivery as its account's webhooks are authenticated, then append each event to the
//! account's log before Twilio is answered. An event whose id the log has seen within the
//! retention is acknowledged and not kept twice.
//!
//! An Event Streams batch is appended in order, one event at a time; if the store fails part
//! way, Twilio is answered `503` and its retry brings the whole batch again, of which the
//! events already kept are recognised by their ids.

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use super::{EventError, Relay};
use crate::auth::webhook::{self, WebhookCredentials};
use crate::domain::trace::InsightsRecord;
use crate::domain::{AccountSid, CloudEvent, InvalidEvent, StatusCallback};
use crate::store::{Appended, LoggedEvent, StoreError};

/// What became of the events of one request, as its JSON answer says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Ingested {
    /// Events kept now.
    pub accepted: usize,
    /// Events kept before (the same id within the retention): acknowledged, not kept twice.
    pub duplicates: usize,
}

impl Ingested {
    fn log(&self, account: &AccountSid, event: &str) {
        tracing::info!(
            account = %account,
            event,
            accepted = self.accepted,
            duplicates = self.duplicates,
            "events kept"
        );
    }

    fn count(&mut self, appended: &Appended) {
        match appended {
            Appended::New(_) => self.accepted += 1,
            Appended::Duplicate(_) => self.duplicates += 1,
        }
    }
}

impl Relay {
    pub async fn keep_status_callback(
        &self,
        callback: &StatusCallback,
        credentials: &WebhookCredentials<'_>,
    ) -> Result<Ingested, EventError> {
        self.authenticate_events(&callback.account_sid, credentials)?;
        let envelope = callback.envelope(OffsetDateTime::now_utc());
        let appended = self
            .store
            .append_event(
                &callback.account_sid,
                &envelope.id,
                envelope.to_json(),
                self.config.events,
            )
            .await?;
        // Also for a repeat: the first attempt may have failed between the two writes.
        self.keep_room_fact(callback, &envelope.id).await?;
        let mut ingested = Ingested::default();
        ingested.count(&appended);
        ingested.log(&callback.account_sid, &callback.event_name);
        self.kept.notify_waiters();
        Ok(ingested)
    }

    /// `named` is the account the sink's URL names (`?AccountSid=AC…`), if it does; otherwise
    /// the events' `data` must name it (Voice Insights summaries carry `account_sid`).
    pub async fn keep_event_streams(
        &self,
        events: &[CloudEvent],
        named: Option<AccountSid>,
        credentials: &WebhookCredentials<'_>,
    ) -> Result<Ingested, EventError> {
        let account = match named {
            Some(account) => {
                // The URL names the account; events that name another are not its.
                if events
                    .iter()
                    .filter_map(|e| e.account_sid.as_ref())
                    .any(|a| *a != account)
                {
                    return Err(InvalidEvent::MixedAccounts.into());
                }
                account
            }
            None => account_of(events)?,
        };
        self.authenticate_events(&account, credentials)?;
        let received_at = OffsetDateTime::now_utc();
        let mut ingested = Ingested::default();
        for event in events {
            let envelope = event.envelope(&account, received_at);
            let appended = self
                .store
                .append_event(
                    &account,
                    &envelope.id,
                    envelope.to_json(),
                    self.config.events,
                )
                .await?;
            if let (Appended::New(_), Some(calls), Some(call_sid)) =
                (&appended, &self.calls, &event.call_sid)
                && let Some(summary) =
                    InsightsRecord::read(&event.kind, &event.id, event.data.as_ref(), received_at)
            {
                calls.record_insights(&account, call_sid, summary);
            }
            ingested.count(&appended);
        }
        ingested.log(&account, "event-streams");
        self.kept.notify_waiters();
        Ok(ingested)
    }

    /// An account's kept events after `after`, oldest first: what feeds read.
    pub async fn events_after(
        &self,
        account: &AccountSid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        self.store.read_events(account, after, limit).await
    }

    /// Notified whenever this replica keeps events (of any account).
    pub fn events_kept(&self) -> Arc<tokio::sync::Notify> {
        self.kept.clone()
    }

    fn authenticate_events(
        &self,
        account: &AccountSid,
        credentials: &WebhookCredentials<'_>,
    ) -> Result<(), EventError> {
        let settings = self
            .config
            .account(account)
            .ok_or_else(|| EventError::UnknownAccount(account.clone()))?;
        webhook::authenticate(settings, credentials)?;
        Ok(())
    }
}

/// The one account a batch's events name in their `data`.
fn account_of(events: &[CloudEvent]) -> Result<AccountSid, EventError> {
    let mut named = events.iter().filter_map(|e| e.account_sid.as_ref());
    let first = named.next().ok_or_else(|| {
        InvalidEvent::AccountSid(
            "no event names its account in data.account_sid: add ?AccountSid=AC… to the sink's URL"
                .into(),
        )
    })?;
    if named.any(|other| other != first) {
        return Err(InvalidEvent::MixedAccounts.into());
    }
    Ok(first.clone())
}
