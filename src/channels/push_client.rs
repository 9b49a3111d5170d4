//! The plumbing the push apps (APNs, FCM) share: the HTTP/2 client, reqwest over rustls (ring),
//! with the system's trust roots plus an optional extra CA and an optional client certificate,
//! HTTP/2 only (Apple's and Google's push services speak it; one connection carries many
//! concurrent requests); a pool of such clients used in turn; error descriptions that never
//! name the request's URL; and the checks of the settings both vendors have (base URLs, CA
//! files, connection counts).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::SettingsError;
use crate::config::ConfigError;

/// TLS material for one push app.
#[derive(Default)]
pub struct TlsSettings {
    /// Trusted in addition to the system roots (a proxy's or a test server's CA).
    pub extra_ca: Vec<reqwest::Certificate>,
    /// Client certificate and key (APNs certificate authentication).
    pub identity: Option<reqwest::Identity>,
}

/// Makes ring the process's rustls provider. Idempotent; called before any client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
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

/// A client for one push endpoint. Each client keeps its own connection pool, so a channel
/// that wants several connections builds several clients.
pub fn client(tls: &TlsSettings) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .http2_prior_knowledge()
        .connect_timeout(Duration::from_secs(5))
        // Keep the connection warm between calls, and notice a dead one before a push needs it.
        .pool_idle_timeout(None)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .http2_keep_alive_while_idle(true)
        .user_agent(concat!("callrelay/", env!("CARGO_PKG_VERSION")));
    for ca in &tls.extra_ca {
        builder = builder.add_root_certificate(ca.clone());
    }
    if let Some(identity) = &tls.identity {
        builder = builder.identity(identity.clone());
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// `connections` clients, one HTTP/2 connection each, used in turn: one connection carries
/// many concurrent streams, but the services cap the streams per connection, so busy apps
/// open a few.
pub struct Pool {
    clients: Vec<reqwest::Client>,
    next: AtomicUsize,
}

impl Pool {
    /// Builds the clients; a failure is the TLS material's, named by `setting`.
    pub fn new(
        tls: &TlsSettings,
        connections: usize,
        setting: &str,
    ) -> Result<Self, SettingsError> {
        let clients = (0..connections.max(1))
            .map(|_| client(tls))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| SettingsError::new(setting, m))?;
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// The client for the next request.
    pub fn client(&self) -> &reqwest::Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    /// The first client, for side requests (FCM's token endpoint) that need no connection of
    /// their own.
    pub fn first(&self) -> &reqwest::Client {
        &self.clients[0]
    }
}

/// A reqwest error and its causes (`connection refused`, `invalid peer certificate…`, which
/// its own message leaves out), without the URL: APNs's holds the device token.
pub fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Checks a push service's base URL and returns it without a trailing slash: https (the
/// services speak HTTP/2 over TLS), with a host, no query, fragment or credentials.
pub fn check_base_url(key: &str, url: &str) -> Result<String, SettingsError> {
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

/// The extra CA of `ca_file`, if set.
pub fn extra_ca(ca_file: Option<&Path>) -> Result<Vec<reqwest::Certificate>, SettingsError> {
    ca_file
        .map(|path| load_ca_file(path).map_err(|m| SettingsError::new("ca_file", m)))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Checks `connections`, 1 to `max`.
pub fn check_connections(connections: u64, max: u64) -> Result<usize, SettingsError> {
    if !(1..=max).contains(&connections) {
        return Err(SettingsError::new(
            "connections",
            format!("{connections} is out of range (1..={max})"),
        ));
    }
    Ok(connections as usize)
}

/// A secret setting's error (`key` or `key_file` unreadable…), named by its key; any other
/// configuration error is put on `key`.
pub fn settings_error(key: &str, e: ConfigError) -> SettingsError {
    match e {
        ConfigError::Invalid { key, message } => SettingsError::new(key, message),
        other => SettingsError::new(key, other.to_string()),
    }
}
