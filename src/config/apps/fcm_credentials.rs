//! Where an FCM app's access tokens come from: a service-account key (`service_account` or
//! `service_account_file`), or, without a key file, Google's own credentials for the workload:
//! the metadata server (GKE Workload Identity, Compute Engine, Cloud Run) or application
//! default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, then gcloud's well-known file, then
//! the metadata server), as Google's client libraries look for them.

use std::path::{Path, PathBuf};

use super::SettingsError;
use super::fcm::ServiceAccount;

/// The metadata server's address unless `metadata_url` or `GCE_METADATA_HOST` says otherwise.
pub const DEFAULT_METADATA_URL: &str = "http://metadata.google.internal";
/// The token path under the metadata server.
pub const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// How an FCM app gets its access tokens.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// An OAuth JWT-bearer grant signed with the key, at the key's `token_uri`.
    ServiceAccount(ServiceAccount),
    /// `GET <url>/computeMetadata/v1/instance/service-accounts/default/token` with
    /// `Metadata-Flavor: Google`: the token of the workload's own service account.
    MetadataServer { url: String },
}

impl Credentials {
    /// The project the credentials name, if they name one (a key does; the metadata server
    /// is not asked at start-up).
    pub fn project_id(&self) -> Option<&str> {
        match self {
            Credentials::ServiceAccount(a) => Some(&a.project_id),
            Credentials::MetadataServer { .. } => None,
        }
    }

    /// What `check-config` and the start-up line say about them.
    pub fn describe(&self) -> String {
        match self {
            Credentials::ServiceAccount(a) => format!("service account {}", a.client_email),
            Credentials::MetadataServer { url } => format!("metadata server at {url}"),
        }
    }
}

/// What `credentials` asks for.
pub enum Source {
    ServiceAccount,
    MetadataServer,
    ApplicationDefault,
}

impl Source {
    pub fn parse(value: Option<&str>) -> Result<Self, SettingsError> {
        match value {
            None | Some("service_account") => Ok(Source::ServiceAccount),
            Some("metadata_server") => Ok(Source::MetadataServer),
            Some("application_default") => Ok(Source::ApplicationDefault),
            Some(other) => Err(SettingsError::new(
                "credentials",
                format!(
                    "{:?} is not one of service_account, metadata_server, application_default",
                    other.chars().take(40).collect::<String>()
                ),
            )),
        }
    }
}

/// The metadata server's base URL: `metadata_url`, else `http://$GCE_METADATA_HOST`, else
/// the default.
pub fn metadata_url(configured: Option<String>) -> Result<String, SettingsError> {
    let url = match configured {
        Some(url) => url,
        None => match std::env::var("GCE_METADATA_HOST") {
            Ok(host) if !host.trim().is_empty() => format!("http://{}", host.trim()),
            _ => DEFAULT_METADATA_URL.to_owned(),
        },
    };
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| SettingsError::new("metadata_url", format!("is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(SettingsError::new(
            "metadata_url",
            "must be an http:// or https:// URL",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Application default credentials, in Google's order: the key file
/// `GOOGLE_APPLICATION_CREDENTIALS` names, gcloud's well-known file, then the metadata server.
/// Only service-account keys are read from files: an end user's credentials
/// (`gcloud auth application-default login`) are for developers' tools, not a relay.
pub fn application_default(metadata: String) -> Result<Credentials, SettingsError> {
    let named = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let well_known = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".config/gcloud/application_default_credentials.json"))
        .filter(|p| p.is_file());
    let (path, what) = match (named, well_known) {
        (Some(p), _) => (p, "the file GOOGLE_APPLICATION_CREDENTIALS names"),
        (None, Some(p)) => (p, "gcloud's application default credentials file"),
        (None, None) => return Ok(Credentials::MetadataServer { url: metadata }),
    };
    let json = std::fs::read_to_string(&path).map_err(|e| {
        SettingsError::new(
            "credentials",
            format!("cannot read {what} ({}): {e}", path.display()),
        )
    })?;
    ServiceAccount::parse(&json)
        .map(Credentials::ServiceAccount)
        .map_err(|m| SettingsError::new("credentials", format!("{what} ({}) {m}", path.display())))
}
