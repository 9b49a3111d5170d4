//! The configuration as written: what serde reads from the TOML file and the environment,
//! before secrets are resolved and values validated (see `super::validate`).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub websocket: RawWebSocket,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub traces: RawTraces,
    #[serde(default)]
    pub events: RawEvents,
    #[serde(default)]
    pub calls: RawCalls,
    #[serde(default)]
    pub rooms: RawRooms,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub apps: Vec<RawApp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub public_url: Option<String>,
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub trust_forwarded_headers: Option<bool>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub webhook_deadline_ms: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub dedupe_window_secs: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub shutdown_grace_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub redis_url: Option<String>,
    pub redis_url_file: Option<PathBuf>,
    pub sentinel_urls: Option<Vec<String>>,
    pub sentinel_master: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    pub sentinel_password_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub sentinel_master_tls: Option<bool>,
    pub redis_cluster_urls: Option<Vec<String>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub tls_ca: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key: Option<String>,
    pub tls_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub min_replica_acks: Option<u64>,
    pub key_prefix: Option<String>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub command_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    #[serde(default, deserialize_with = "lenient::number")]
    pub ping_interval_ms: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub queue_capacity: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub presence_ttl_ms: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub ringing_window_secs: Option<u64>,
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub replay: Option<bool>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub ack_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default, deserialize_with = "lenient::number")]
    pub max_connections: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub header_read_timeout_ms: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub max_header_bytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub request_timeout_ms: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub binding_requests_per_minute: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub max_bindings_per_identity: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub max_sockets_per_identity: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub max_sockets: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub max_client_message_bytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub max_binding_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCalls {
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub trace: Option<bool>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub retention_secs: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub max_per_identity: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRooms {
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub ledger: Option<bool>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub retention_secs: Option<u64>,
    pub billing: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    #[serde(default, deserialize_with = "lenient::number")]
    pub retention_secs: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub max_per_account: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub forward_retry_secs: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub forward_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraces {
    pub otlp_endpoint: Option<String>,
    #[serde(default, deserialize_with = "lenient::number")]
    pub sample_percent: Option<u64>,
    pub service_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub sid: Option<String>,
    pub auth_token: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    pub secondary_auth_token: Option<String>,
    pub secondary_auth_token_file: Option<PathBuf>,
    #[serde(default)]
    pub shared_keys: Vec<RawSharedKey>,
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    pub webhook_username: Option<String>,
    pub webhook_password: Option<String>,
    pub webhook_password_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub require_signature: Option<bool>,
    /// `all` or `prefer_websocket`.
    pub delivery: Option<String>,
    #[serde(default)]
    pub event_targets: Vec<RawEventTarget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEventTarget {
    pub name: Option<String>,
    pub url: Option<String>,
    #[serde(default)]
    pub types: Vec<String>,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharedKey {
    pub id: Option<String>,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub sid: Option<String>,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default)]
    pub api_keys: Vec<String>,
    pub api_keys_file: Option<PathBuf>,
}

/// A push app. Channel-specific settings stay a table until the channel reads them.
#[derive(Debug, Default, Deserialize)]
pub struct RawApp {
    pub name: Option<String>,
    pub channel: Option<String>,
    /// Overrides the account's `delivery` for this app's bindings.
    pub delivery: Option<String>,
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// Environment overrides arrive as strings; numbers and booleans accept both forms.
pub mod lenient {
    use std::fmt;
    use std::str::FromStr;

    use serde::Deserializer;
    use serde::de::{self, Visitor};

    pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Option<u64>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(Some)
                    .map_err(|_| E::custom("expected a non-negative integer"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                u64::from_str(v.trim())
                    .map(Some)
                    .map_err(|_| E::custom(format!("expected a non-negative integer, got `{v}`")))
            }
        }
        d.deserialize_any(V)
    }

    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Option<bool>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Some(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v.trim() {
                    "true" => Ok(Some(true)),
                    "false" => Ok(Some(false)),
                    _ => Err(E::custom(format!("expected true or false, got `{v}`"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}
