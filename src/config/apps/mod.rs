//! `[[apps]]`: the push apps, each read once into typed settings with its key or certificate
//! loaded, so that a broken one is named by `config::load` (and so by `check-config`) before a
//! call needs it. Every app is read, so one error names each broken one.

pub mod apns;
mod apns_credentials;
pub mod fcm;
pub mod fcm_credentials;

use std::collections::HashSet;
use std::path::Path;

use super::ConfigError;
use super::raw::RawApp;
use crate::domain::PushChannel;
pub use apns::ApnsSettings;
pub use fcm::FcmSettings;

#[derive(Clone)]
pub struct AppConfig {
    pub name: String,
    pub channel: PushChannel,
    /// Overrides the account's `delivery` for this app's bindings.
    pub delivery: Option<crate::config::Delivery>,
    pub settings: AppSettings,
}

/// An app's channel-specific settings. They hold keys and certificates, so `Debug` (of the
/// whole `AppConfig`) names the channel only.
#[derive(Clone)]
pub enum AppSettings {
    Apns(ApnsSettings),
    Fcm(FcmSettings),
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("name", &self.name)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// What is wrong with an app's settings; `key` is relative to the app's table.
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

/// A push app whose settings are wrong or whose key or certificate cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("apps[{index}].{key}: {message} (app `{name}`)")]
pub struct AppError {
    pub index: usize,
    pub name: String,
    pub key: String,
    pub message: String,
}

/// Every broken push app of a configuration, in the order of `[[apps]]`: `check-config`
/// reports them all at once rather than one per run.
#[derive(Debug)]
pub struct AppErrors(pub Vec<AppError>);

impl std::fmt::Display for AppErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AppErrors {}

pub(super) fn validate(raw: Vec<RawApp>) -> Result<Vec<AppConfig>, ConfigError> {
    let mut apps = Vec::new();
    let mut names = HashSet::new();
    let mut errors = Vec::new();
    for (index, app) in raw.into_iter().enumerate() {
        let key = format!("apps[{index}]");
        let name = app
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ConfigError::invalid(format!("{key}.name"), "is required"))?;
        // Bindings name their app, and metrics label by it: a name no binding could give
        // would leave the app unreachable.
        crate::domain::check_app_name(&name)
            .map_err(|m| ConfigError::invalid(format!("{key}.name"), m))?;
        if !names.insert(name.clone()) {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                format!("app `{name}` is configured twice"),
            ));
        }
        let channel = match app.channel.as_deref() {
            Some("apns") => PushChannel::Apns,
            Some("fcm") => PushChannel::Fcm,
            Some(other) => {
                return Err(ConfigError::invalid(
                    format!("{key}.channel"),
                    format!("`{other}` is not one of apns, fcm"),
                ));
            }
            None => {
                return Err(ConfigError::invalid(
                    format!("{key}.channel"),
                    "is required (apns or fcm)",
                ));
            }
        };
        let delivery =
            crate::config::Delivery::parse(&format!("{key}.delivery"), app.delivery.as_deref())?;
        let settings = match channel {
            PushChannel::Apns => apns::parse(&app.settings).map(AppSettings::Apns),
            PushChannel::Fcm => FcmSettings::parse(&app.settings).map(AppSettings::Fcm),
        };
        match settings {
            Ok(settings) => apps.push(AppConfig {
                name,
                channel,
                delivery,
                settings,
            }),
            Err(e) => errors.push(AppError {
                index,
                name,
                key: e.key,
                message: e.message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(apps)
    } else {
        Err(ConfigError::Apps(AppErrors(errors)))
    }
}

/// Reads an app's channel-specific settings into `T`, naming the key on error.
fn parse_settings<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T, SettingsError> {
    serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let key = e.path().to_string();
        SettingsError::new(
            if key == "." { "settings".into() } else { key },
            e.into_inner().to_string(),
        )
    })
}

/// Checks a push service's base URL and returns it without a trailing slash: https (the
/// services speak HTTP/2 over TLS), with a host, no query, fragment or credentials.
fn check_base_url(key: &str, url: &str) -> Result<String, SettingsError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| SettingsError::new(key, format!("`{url}` is not a URL: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(SettingsError::new(key, "must be an https:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(SettingsError::new(key, "has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(SettingsError::new(
            key,
            "must not have a query string or a fragment",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(SettingsError::new(key, "must not carry credentials"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Reads a PEM file of one or more CA certificates.
pub fn load_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The extra CA of `ca_file`, if set.
fn extra_ca(ca_file: Option<&Path>) -> Result<Vec<reqwest::Certificate>, SettingsError> {
    ca_file
        .map(|path| load_ca_file(path).map_err(|m| SettingsError::new("ca_file", m)))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Checks `connections`, 1 to `max`.
fn check_connections(connections: u64, max: u64) -> Result<usize, SettingsError> {
    if !(1..=max).contains(&connections) {
        return Err(SettingsError::new(
            "connections",
            format!("{connections} is out of range (1..={max})"),
        ));
    }
    Ok(connections as usize)
}

/// `config::secret` for an app's setting, reporting through `SettingsError`: an error names
/// its key (`key` or `key_file`), anything else is put on `key`.
fn secret(
    key: &str,
    inline: Option<String>,
    file: Option<std::path::PathBuf>,
) -> Result<Option<super::Secret>, SettingsError> {
    super::secret(key, inline, file).map_err(|e| match e {
        ConfigError::Invalid { key, message } => SettingsError::new(key, message),
        other => SettingsError::new(key, other.to_string()),
    })
}
