//! The plumbing the push apps (APNs, FCM) share: the HTTP/2 client, reqwest over rustls (ring),
//! with the system's trust roots plus an optional extra CA and an optional client certificate,
//! HTTP/2 only (Apple's and Google's push services speak it; one connection carries many
//! concurrent requests); a pool of such clients used in turn; and error descriptions that never
//! name the request's URL. The settings both vendors share are checked in `config::apps`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::apps::SettingsError;

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

/// A client for plain HTTP/1.1 or HTTP/2 endpoints that are not push services (event
/// forwarding targets, an OTLP collector): rustls with the system's roots, each request given
/// up after `timeout`, and no redirect followed: a redirect would turn a POST into a GET
/// without its body and carry its headers (signatures) elsewhere, so it counts as a failure.
pub fn plain_client(timeout: Duration) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("callrelay/", env!("CARGO_PKG_VERSION")))
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
