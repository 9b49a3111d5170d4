//! Delivery channels. Each takes one target and the notification and says what happened;
//! none of them touches HTTP routing or decides what a webhook answers.

pub mod apns;
pub mod fcm;
pub mod http;
pub mod retry;
pub mod websocket;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::domain::{Binding, CallNotification};
use crate::store::SocketPresence;

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
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Dead(_) => "removed",
            Outcome::Failed(_) => "failed",
        }
    }
}

#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Delivers `notification` to `target`, giving up at `deadline`.
    async fn deliver(
        &self,
        target: &Target,
        notification: &CallNotification,
        deadline: Instant,
    ) -> Outcome;
}

/// Every channel this process can deliver through: the WebSocket channel and one push
/// channel per configured app.
#[derive(Clone)]
pub struct Channels {
    pub websocket: Arc<websocket::WebSocketChannel>,
    pub apps: HashMap<String, Arc<dyn Channel>>,
}

impl Channels {
    /// The channel serving `target`, if it is still configured.
    pub fn for_target(&self, target: &Target) -> Option<Arc<dyn Channel>> {
        match target {
            Target::Socket(_) => Some(self.websocket.clone() as Arc<dyn Channel>),
            Target::Push(b) => self.apps.get(&b.app).cloned(),
        }
    }
}

/// A push app whose settings are wrong or whose key or certificate cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("apps[{index}].{key}: {message} (app `{name}`)")]
pub struct ChannelConfigError {
    pub index: usize,
    pub name: String,
    pub key: String,
    pub message: String,
}

/// What a channel reports about its own settings; `key` is relative to the app's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub key: String,
    pub message: String,
}

impl SettingsError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Reads an app's channel-specific settings into `T`, naming the key on error.
pub fn parse_settings<T: serde::de::DeserializeOwned>(
    table: &toml::Table,
) -> Result<T, SettingsError> {
    serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let key = e.path().to_string();
        SettingsError::new(
            if key == "." { "settings".into() } else { key },
            e.into_inner().to_string(),
        )
    })
}

/// One push channel per configured app: `given` ones first, the rest built from the
/// configuration (which loads every key and certificate, so a broken one is named here).
pub fn push_channels(
    config: &crate::config::Config,
    mut given: HashMap<String, Arc<dyn Channel>>,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<HashMap<String, Arc<dyn Channel>>, ChannelConfigError> {
    use crate::domain::PushChannel;
    let mut channels = HashMap::new();
    for (index, app) in config.apps.iter().enumerate() {
        if let Some(channel) = given.remove(&app.name) {
            channels.insert(app.name.clone(), channel);
            continue;
        }
        let built: Result<Arc<dyn Channel>, SettingsError> = match app.channel {
            PushChannel::Apns => {
                apns::ApnsChannel::from_config(&app.name, &app.settings, metrics.clone())
                    .map(|c| Arc::new(c) as Arc<dyn Channel>)
            }
            PushChannel::Fcm => {
                fcm::FcmChannel::from_config(&app.name, &app.settings, metrics.clone())
                    .map(|c| Arc::new(c) as Arc<dyn Channel>)
            }
        };
        let channel = built.map_err(|e| ChannelConfigError {
            index,
            name: app.name.clone(),
            key: e.key,
            message: e.message,
        })?;
        channels.insert(app.name.clone(), channel);
    }
    Ok(channels)
}
