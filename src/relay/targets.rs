//! Forwarding targets managed through the admin API, beside those of the configuration:
//! listed together, added and removed in the store, where every replica's forwarders find
//! them (`forward::start` looks every few seconds). A configured target's name cannot be taken
//! or removed through the API: the configuration file is its source.

use serde::Serialize;

use super::{Relay, TargetError};
use crate::config::{RawEventTarget, new_secret, validate_event_target};
use crate::domain::AccountSid;
use crate::store::StoredTarget;

/// A target as the API shows it: never its secret, except once, when the relay made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetView {
    pub name: String,
    pub url: String,
    pub types: Vec<String>,
    /// `configuration` or `api`.
    pub source: &'static str,
    /// Only in the answer that created it, when the relay generated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Relay {
    fn account_for_targets(&self, account: &AccountSid) -> Result<(), TargetError> {
        self.config
            .account(account)
            .map(|_| ())
            .ok_or_else(|| TargetError::UnknownAccount(account.clone()))
    }

    pub async fn list_targets(&self, account: &AccountSid) -> Result<Vec<TargetView>, TargetError> {
        self.account_for_targets(account)?;
        let configured = self
            .config
            .account(account)
            .map(|a| a.event_targets.clone())
            .unwrap_or_default();
        let mut all: Vec<TargetView> = configured
            .iter()
            .map(|t| TargetView {
                name: t.name.clone(),
                url: t.url.clone(),
                types: t.types.clone(),
                source: "configuration",
                secret: None,
            })
            .collect();
        for t in self.store.event_targets(account).await? {
            if !all.iter().any(|c| c.name == t.name) {
                all.push(TargetView {
                    name: t.name,
                    url: t.url,
                    types: t.types,
                    source: "api",
                    secret: None,
                });
            }
        }
        Ok(all)
    }

    /// Adds a target, or replaces the API's target of that name. Without a secret, one is
    /// generated and returned in this answer only.
    pub async fn put_target(
        &self,
        account: &AccountSid,
        mut raw: RawEventTarget,
    ) -> Result<TargetView, TargetError> {
        self.account_for_targets(account)?;
        if raw.secret_file.is_some() {
            return Err(TargetError::Invalid(
                "secret_file is for the configuration file; send the secret, or none to have one generated".into(),
            ));
        }
        let generated = raw.secret.is_none().then(new_secret);
        if let Some(secret) = &generated {
            raw.secret = Some(secret.clone());
        }
        let target = validate_event_target("target", raw)
            .map_err(|e| TargetError::Invalid(e.to_string()))?;
        if self
            .config
            .account(account)
            .is_some_and(|a| a.event_targets.iter().any(|t| t.name == target.name))
        {
            return Err(TargetError::Configured(target.name));
        }
        self.store
            .put_event_target(
                account,
                &StoredTarget {
                    name: target.name.clone(),
                    url: target.url.clone(),
                    types: target.types.clone(),
                    secret: target.secret.expose().to_owned(),
                },
            )
            .await?;
        tracing::info!(account = %account, target_name = target.name, url = target.url, "forwarding target added");
        Ok(TargetView {
            name: target.name,
            url: target.url,
            types: target.types,
            source: "api",
            secret: generated,
        })
    }

    pub async fn remove_target(&self, account: &AccountSid, name: &str) -> Result<(), TargetError> {
        self.account_for_targets(account)?;
        if self
            .config
            .account(account)
            .is_some_and(|a| a.event_targets.iter().any(|t| t.name == name))
        {
            return Err(TargetError::Configured(name.to_owned()));
        }
        if self.store.remove_event_target(account, name).await? {
            tracing::info!(account = %account, target_name = name, "forwarding target removed");
            Ok(())
        } else {
            Err(TargetError::NotFound(name.to_owned()))
        }
    }

    /// Whether `account` has a target by that name, in the configuration or the store.
    async fn target_exists(&self, account: &AccountSid, name: &str) -> Result<(), TargetError> {
        self.account_for_targets(account)?;
        let configured = self
            .config
            .account(account)
            .is_some_and(|a| a.event_targets.iter().any(|t| t.name == name));
        if configured
            || self
                .store
                .event_targets(account)
                .await?
                .iter()
                .any(|t| t.name == name)
        {
            Ok(())
        } else {
            Err(TargetError::NotFound(name.to_owned()))
        }
    }

    /// The positions of events the target did not take within the retry budget, oldest
    /// first (the most recent `MAX_FAILED_FORWARDS` are kept).
    pub async fn failed_forwards(
        &self,
        account: &AccountSid,
        name: &str,
    ) -> Result<Vec<String>, TargetError> {
        self.target_exists(account, name).await?;
        Ok(self
            .store
            .failed_forwards(account, name, crate::store::MAX_FAILED_FORWARDS as usize)
            .await?)
    }

    /// Queues every event set aside for `name` to be sent again, before its next events;
    /// returns how many.
    pub async fn replay_failed(
        &self,
        account: &AccountSid,
        name: &str,
    ) -> Result<u64, TargetError> {
        self.target_exists(account, name).await?;
        let queued = self.store.replay_failed(account, name).await?;
        tracing::info!(account = %account, target_name = name, queued, "events set aside queued to be sent again");
        Ok(queued)
    }
}
