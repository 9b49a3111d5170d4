//! The relay's domain logic: answering call notifications, managing bindings and keeping
//! Twilio's other events (`events.rs`). Handlers
//! parse and authenticate, then call in here; this module talks to the store and the channels
//! through their traits only.

mod bindings;
mod dedupe;
mod error;
mod events;
mod notify;
mod rooms;
mod targets;
mod test_call;
mod trace;

use std::sync::Arc;

use serde::Serialize;
use tokio_util::task::TaskTracker;

pub use bindings::{BindingScope, Listing};
pub use error::{BindingError, EventError, RecordError, TargetError, WebhookError};
pub use events::Ingested;
pub use rooms::{MAX_ROOMS_LISTED, RoomPage, RoomQuery, RoomView};
pub use targets::TargetView;
pub use test_call::TestCall;
pub use trace::{CallRecorder, MAX_CALLS_LISTED};

use notify::by_deadline;

use crate::channels::Channels;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::AccountSid;
use crate::metrics::Metrics;
use crate::store::Store;

/// What a webhook came to, as its JSON answer says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub delivered: usize,
    pub failed: usize,
    pub removed: usize,
    /// Targets not sent to by a rule (docs: "Ringing right"); absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub struct Relay {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    channels: Channels,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    /// This replica's wall clock: dates registrations and judges binding expiry.
    clock: Arc<dyn Clock>,
    /// Woken whenever this replica keeps an event, so its feeds need not wait for their poll.
    kept: Arc<tokio::sync::Notify>,
    /// The per-call delivery trace's recorder, which also keeps notifications for replay:
    /// present when `calls.trace` or `websocket.replay` is on.
    calls: Option<Arc<CallRecorder>>,
}

impl Relay {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        channels: Channels,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        clock: Arc<dyn Clock>,
        node: String,
    ) -> Self {
        let ringing = config
            .websocket
            .replay
            .then_some(config.websocket.ringing_window);
        let calls = (config.calls.trace || ringing.is_some()).then(|| {
            Arc::new(CallRecorder::start(
                store.clone(),
                config.calls,
                ringing,
                node,
                metrics.clone(),
            ))
        });
        Self {
            config,
            store,
            channels,
            metrics,
            tasks,
            clock,
            kept: Arc::new(tokio::sync::Notify::new()),
            calls,
        }
    }

    /// A client acknowledged `message_id` on `socket`: recorded in the call's trace.
    pub fn socket_acknowledged(
        &self,
        socket: &crate::channels::websocket::LocalSocket,
        message_id: &str,
        call_sid: &str,
        after: std::time::Duration,
        node: &str,
    ) {
        let Some(recorder) = &self.calls else {
            return;
        };
        let ack = crate::domain::trace::AckRecord {
            message_id: Some(message_id.to_owned()),
            identity: socket.identity.to_string(),
            socket: socket.conn_id.clone(),
            replica: Some(node.to_owned()),
            acknowledged_at: time::OffsetDateTime::now_utc(),
            after_ms: trace::millis(after),
        };
        recorder.record_ack(&socket.account_sid, call_sid, ack);
    }

    /// Writes the call-trace entries queued so far (at shutdown, after the last webhooks).
    pub async fn flush_records(&self) {
        if let Some(calls) = &self.calls {
            calls.flush().await;
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The account an admin request names, once it is one this relay serves.
    fn admin_account(&self, account: Option<AccountSid>) -> Result<AccountSid, RecordError> {
        let account = account.ok_or_else(|| {
            RecordError::BadRequest("account_sid is required with an admin key".into())
        })?;
        if self.config.account(&account).is_none() {
            return Err(RecordError::Forbidden(format!(
                "account {account} is not configured on this relay"
            )));
        }
        Ok(account)
    }
}
