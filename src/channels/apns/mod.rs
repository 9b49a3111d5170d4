//! Placeholder until the apns channel lands.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Channel, Outcome, SettingsError, Target};
use crate::domain::CallNotification;
use crate::metrics::Metrics;

pub struct ApnsChannel;

impl ApnsChannel {
    pub fn from_config(
        _app: &str,
        _settings: &toml::Table,
        _metrics: Arc<Metrics>,
    ) -> Result<Self, SettingsError> {
        Err(SettingsError::new(
            "channel",
            "the apns channel is not available in this version of callrelay",
        ))
    }
}

#[async_trait]
impl Channel for ApnsChannel {
    async fn deliver(&self, _: &Target, _: &CallNotification, _: Instant) -> Outcome {
        Outcome::Failed("the apns channel is not available".into())
    }
}
