//! `callrelay check-config --connect`: connect as `serve` would, say what answered (version,
//! mode, where), and turn a refusal into advice. Every message names addresses and keys, never
//! a password or a URL that could carry one.

use std::time::Duration;

use redis::{ErrorKind, RedisError, Value};

use super::connect::{Conn, Dialer};
use crate::config::{RedisConfig, Topology};
use crate::store::StoreError;

/// What `check-config --connect` reports about the Redis it reached.
#[derive(Debug, Clone)]
pub struct ServerReport {
    /// `standalone`, `sentinel` or `cluster`.
    pub mode: &'static str,
    /// `redis_version` from `INFO server`.
    pub version: String,
    /// Where: the server's address, the master Sentinel named, or the cluster's shape.
    pub detail: String,
}

/// Connects and asks the server who it is; fails with a message fit for an operator.
pub async fn probe(config: &RedisConfig, timeout: Duration) -> Result<ServerReport, StoreError> {
    let dialer = Dialer::new(config, timeout)?;
    let mode = dialer.mode();
    let conn = dialer.dial(None).await?;
    let at = match &conn {
        Conn::Single { addr, .. } => addr.clone(),
        Conn::Cluster(_) => "the cluster's seed nodes".to_owned(),
    };
    let info = match ask(&conn, &["INFO", "server"], timeout, &at).await {
        Err(StoreError::Unavailable(why)) if uses_tls(config) && why.contains("did not answer") => {
            // A TLS client facing a plain port waits for a handshake that never comes.
            return Err(StoreError::Unavailable(format!(
                "{why}; the URLs say rediss://: does that port speak TLS?"
            )));
        }
        other => text(other?),
    };
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    let version = field(&info, "redis_version").unwrap_or_else(|| "unknown".into());
    let server_mode = field(&info, "redis_mode").unwrap_or_else(|| "standalone".into());
    let detail = match conn.clone() {
        Conn::Single { addr, .. } => {
            if server_mode == "cluster" {
                return Err(StoreError::Unavailable(format!(
                    "{addr} is a Redis Cluster node: list the nodes in store.redis_cluster_urls"
                )));
            }
            let role = match ask(&conn, &["ROLE"], timeout, &at).await? {
                Value::Array(items) => items.into_iter().next().map(text).unwrap_or_default(),
                other => text(other),
            };
            if mode == "sentinel" {
                format!("master at {addr} (role {role})")
            } else {
                format!("{addr} (role {role})")
            }
        }
        Conn::Cluster(_) => {
            let info = text(ask(&conn, &["CLUSTER", "INFO"], timeout, &at).await?);
            let state = field(&info, "cluster_state").unwrap_or_default();
            if state != "ok" {
                return Err(StoreError::Unavailable(format!(
                    "the cluster answers but its state is `{state}` (CLUSTER INFO)"
                )));
            }
            format!(
                "state ok, {} masters serving slots, {} known nodes",
                field(&info, "cluster_size").unwrap_or_default(),
                field(&info, "cluster_known_nodes").unwrap_or_default()
            )
        }
    };
    Ok(ServerReport {
        mode,
        version,
        detail,
    })
}

/// One bounded command; a failure explained.
async fn ask(
    conn: &Conn,
    words: &[&str],
    timeout: Duration,
    at: &str,
) -> Result<Value, StoreError> {
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    let mut conn = conn.clone();
    match tokio::time::timeout(timeout, conn.send_near("callrelay", cmd)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(explain(&e, at)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "{at} did not answer within {} ms (store.command_timeout_ms)",
            timeout.as_millis()
        ))),
    }
}

fn uses_tls(config: &RedisConfig) -> bool {
    match &config.topology {
        Topology::Standalone { url } => url.expose().starts_with("rediss://"),
        Topology::Sentinel {
            urls, master_tls, ..
        } => *master_tls || urls.iter().any(|u| u.starts_with("rediss://")),
        Topology::Cluster { urls } => urls.iter().any(|u| u.starts_with("rediss://")),
    }
}

fn text(value: Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::SimpleString(s) => s,
        Value::VerbatimString { text, .. } => text,
        other => format!("{other:?}"),
    }
}

/// Names the likely cause of a refusal and the keys to look at.
fn explain(e: &RedisError, at: &str) -> StoreError {
    let message = e.to_string();
    let lower = message.to_ascii_lowercase();
    let hint = if e.kind() == ErrorKind::AuthenticationFailed
        || lower.contains("wrongpass")
        || lower.contains("noauth")
        || lower.contains("invalid password")
        || lower.contains("invalid username-password")
    {
        "authentication failed: check store.password / store.username (or the credentials in store.redis_url)"
    } else if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("peer sent no certificates")
    {
        "TLS failed: check store.tls_ca_file, and store.tls_cert_file/store.tls_key_file if the server wants a client certificate"
    } else if e.is_connection_refusal() || e.is_io_error() {
        "cannot connect"
    } else {
        "Redis refused"
    };
    StoreError::Unavailable(format!("{hint} ({at}): {message}"))
}
