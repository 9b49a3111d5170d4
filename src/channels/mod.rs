//! Delivery channels. Each takes one target and the notification and says what happened;
//! none of them touches HTTP routing or decides what a webhook answers.

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

/// A push app whose channel this build cannot serve, or whose settings are wrong.
#[derive(Debug, thiserror::Error)]
#[error("apps[{index}] ({name}): {message}")]
pub struct ChannelConfigError {
    pub index: usize,
    pub name: String,
    pub message: String,
}

/// One push channel per configured app: `given` ones first, the rest built from the
/// configuration.
pub fn push_channels(
    config: &crate::config::Config,
    mut given: HashMap<String, Arc<dyn Channel>>,
) -> Result<HashMap<String, Arc<dyn Channel>>, ChannelConfigError> {
    let mut channels = HashMap::new();
    for (index, app) in config.apps.iter().enumerate() {
        if let Some(channel) = given.remove(&app.name) {
            channels.insert(app.name.clone(), channel);
            continue;
        }
        return Err(ChannelConfigError {
            index,
            name: app.name.clone(),
            message: format!(
                "the {} channel is not available in this version of callrelay",
                app.channel.as_str()
            ),
        });
    }
    Ok(channels)
}
