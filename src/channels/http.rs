//! The HTTP/2 client the push channels share: reqwest over rustls (ring), the system's trust
//! roots plus an optional extra CA, an optional client certificate, HTTP/2 only (Apple's and
//! Google's push services speak it; one connection carries many concurrent requests).

use std::path::Path;
use std::time::Duration;

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
