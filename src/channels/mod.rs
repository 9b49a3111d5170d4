//! Delivery channels: the WebSocket channel and a push app per configured `[[apps]]` entry.
//! Each takes what it delivers to (a socket's presence, a push binding) and the notification
//! and says what happened; none of them touches HTTP routing or decides what a webhook answers.

pub mod apns;
pub mod fcm;
pub mod push_client;
pub mod retry;
pub mod websocket;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::config::AppSettings;
use crate::config::apps::{AppError, AppErrors, SettingsError};
use crate::domain::{Binding, CallNotification, SocketPresence};

/// Where one copy of a notification goes.
#[derive(Debug, Clone)]
pub enum Target {
    Push(Binding),
    Socket(SocketPresence),
}

impl Target {
    pub fn channel_name(&self) -> &'static str {
        match self {
            Target::Push(b) => b.channel.as_str(),
            Target::Socket(_) => "websocket",
        }
    }
}

/// What a delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The push service or the socket accepted the notification.
    Delivered,
    /// The address is dead (unregistered token, closed socket): the binding must go.
    Dead(String),
    /// Not delivered, for a reason that may pass; the binding stays.
    Failed(String),
    /// Not sent, by a rule (a notification that is not a call kept off VoIP pushes, a
    /// device that gets the call another way).
    Skipped(Skip),
}

/// Why a target was not sent to: the rule, as `callrelay_skipped_targets_total` labels it,
/// and callrelay's words for the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub rule: &'static str,
    pub detail: String,
}

impl Skip {
    /// A notification that is not a call, kept off a binding (`docs/apns.md`).
    pub const NOT_A_CALL: &'static str = "not_a_call";
    /// A device's push binding older than another of the same device.
    pub const OLDER_BINDING: &'static str = "older_binding";
    /// A device's push, spared by its socket's acknowledgement (`prefer_websocket`).
    pub const SOCKET_ACKNOWLEDGED: &'static str = "socket_acknowledged";

    pub fn new(rule: &'static str, detail: impl Into<String>) -> Self {
        Self {
            rule,
            detail: detail.into(),
        }
    }
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Dead(_) => "removed",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped(_) => "skipped",
        }
    }
}

/// One delivery as the call trace records it: the outcome, how many requests it took and what
/// the vendor said last. A socket's delivery is one attempt with no vendor answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    pub attempts: u32,
    pub vendor: VendorAnswer,
}

impl Report {
    /// A delivery without a vendor (a socket, or a push refused before any request).
    pub fn plain(outcome: Outcome, attempts: u32) -> Self {
        Self {
            outcome,
            attempts,
            vendor: VendorAnswer::default(),
        }
    }
}

/// What Apple or Google answered to the last request: the HTTP status, their reason or error
/// code (or `timeout`, `connection_error`), and APNs's `apns-id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendorAnswer {
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub id: Option<String>,
}

/// Counts a push's requests and keeps the last answer while its retry loop runs.
#[derive(Debug, Default)]
pub(crate) struct Trail {
    attempts: u32,
    last: VendorAnswer,
}

impl Trail {
    pub(crate) fn answered(&mut self, status: Option<u16>, reason: Option<&str>, id: Option<&str>) {
        self.attempts += 1;
        self.last = VendorAnswer {
            status,
            reason: reason.map(str::to_owned),
            id: id.map(str::to_owned),
        };
    }

    pub(crate) fn report(self, outcome: Outcome) -> Report {
        Report {
            outcome,
            attempts: self.attempts,
            vendor: self.last,
        }
    }
}

/// A push app (APNs or FCM, one per configured `[[apps]]` entry): pushes a notification to
/// one of its bindings. Sockets are the WebSocket channel's, delivered to by its own method.
#[async_trait]
pub trait PushApp: Send + Sync + 'static {
    /// Pushes `notification` to `binding`'s device, giving up at `deadline`.
    async fn push(
        &self,
        binding: &Binding,
        notification: &CallNotification,
        deadline: Instant,
    ) -> Report;
}

/// Every channel this process can deliver through: the WebSocket channel and one push app
/// per configured app.
#[derive(Clone)]
pub struct Channels {
    pub websocket: Arc<websocket::WebSocketChannel>,
    pub apps: HashMap<String, Arc<dyn PushApp>>,
}

impl Channels {
    /// Delivers `notification` to `target` through the channel serving it.
    pub async fn deliver(
        &self,
        target: &Target,
        notification: &CallNotification,
        deadline: Instant,
    ) -> Report {
        match target {
            Target::Socket(presence) => Report::plain(
                self.websocket
                    .deliver(presence, notification, deadline)
                    .await,
                1,
            ),
            Target::Push(binding) => match self.apps.get(&binding.app) {
                Some(app) => app.push(binding, notification, deadline).await,
                None => Report::plain(
                    Outcome::Failed("the binding's app is not configured".into()),
                    0,
                ),
            },
        }
    }
}

/// Counts one push attempt's `result` in `callrelay_push_results_total`.
fn count_push(metrics: &crate::metrics::Metrics, app: &str, channel: &'static str, result: &str) {
    metrics
        .push_results
        .get_or_create(&crate::metrics::PushLabels {
            app: app.to_owned(),
            channel,
            result: result.to_owned(),
        })
        .inc();
}

/// One push app per configured app: `given` ones first, the rest built from their settings.
/// Configuration has read and loaded the settings, so only an HTTP client that cannot be built
/// with them fails here; every app is tried, so the error names each one.
pub fn push_channels(
    config: &crate::config::Config,
    mut given: HashMap<String, Arc<dyn PushApp>>,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<HashMap<String, Arc<dyn PushApp>>, AppErrors> {
    let mut channels = HashMap::new();
    let mut errors = Vec::new();
    for (index, app) in config.apps.iter().enumerate() {
        if let Some(channel) = given.remove(&app.name) {
            channels.insert(app.name.clone(), channel);
            continue;
        }
        let built: Result<Arc<dyn PushApp>, SettingsError> = match &app.settings {
            AppSettings::Apns(settings) => {
                apns::ApnsChannel::new(&app.name, settings, metrics.clone())
                    .map(|c| Arc::new(c) as Arc<dyn PushApp>)
            }
            AppSettings::Fcm(settings) => {
                fcm::FcmChannel::new(&app.name, settings, metrics.clone())
                    .map(|c| Arc::new(c) as Arc<dyn PushApp>)
            }
        };
        match built {
            Ok(channel) => {
                channels.insert(app.name.clone(), channel);
            }
            Err(e) => errors.push(AppError {
                index,
                name: app.name.clone(),
                key: e.key,
                message: e.message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(channels)
    } else {
        Err(AppErrors(errors))
    }
}
