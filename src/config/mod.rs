//! Configuration: a TOML file, `CALLRELAY__…` environment overrides, secrets inline or from
//! files, validated once at start-up with errors that name the offending key.

pub mod apps;
mod defaults;
mod env;
mod event_targets;
mod raw;
mod records;
mod secret;
mod store;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use apps::{AppConfig, AppSettings};
pub use defaults::render as render_defaults;
pub use raw::lenient;
pub use records::{CallsConfig, RoomsConfig};
pub use secret::Secret;
pub use store::{RedisConfig, StoreConfig, TlsFiles, Topology};

use crate::domain::{AccountSid, ApiKeySid};
pub use event_targets::{EventTarget, new_secret, validate_one as validate_event_target};
use raw::RawConfig;
pub use raw::RawEventTarget;

/// Everything callrelay needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub websocket: WebSocketConfig,
    pub log: LogConfig,
    pub traces: TracesConfig,
    pub events: EventRetention,
    pub calls: CallsConfig,
    pub rooms: RoomsConfig,
    pub forwarding: Forwarding,
    pub limits: Limits,
    pub accounts: Vec<AccountConfig>,
    pub admin: AdminConfig,
    pub apps: Vec<AppConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The base URL Twilio calls (scheme, host, optional port and path prefix, no trailing
    /// slash). Required when accounts are configured, unless `trust_forwarded_headers`.
    pub public_url: Option<String>,
    /// Check webhook signatures against each request's `Host` and `X-Forwarded-Proto` instead
    /// of `public_url`. Off unless the operator says so: whoever can reach the listener
    /// chooses those headers, so a request Twilio signed for another host that uses the same
    /// Auth Token (another relay, another app of the account) would verify here too.
    pub trust_forwarded_headers: bool,
    pub webhook_deadline: Duration,
    pub dedupe_window: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    pub ping_interval: Duration,
    pub queue_capacity: usize,
    pub presence_ttl: Duration,
    /// How long a call notification is worth ringing: a frame that waited longer is dropped,
    /// and a reconnecting client is replayed what arrived within it.
    pub ringing_window: Duration,
    /// Whether call notifications are kept for the ringing window, for clients that
    /// reconnect with `replay_since`.
    pub replay: bool,
    /// With `delivery = "prefer_websocket"`: how long a device's socket has to acknowledge
    /// before its push goes out.
    pub ack_timeout: Duration,
}

/// Abuse limits: what one client, one identity or the whole replica may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections on the public listener (WebSockets included); more wait to be accepted.
    pub max_connections: usize,
    /// Time a client gets to send a request's headers, and the longest a keep-alive connection
    /// may sit idle: a slow client cannot hold a connection.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Time a request (body included) may take, WebSocket sessions excepted.
    pub request_timeout: Duration,
    /// Bindings API requests per minute per credential (per replica); `0` turns the limit off.
    pub binding_requests_per_minute: u32,
    pub max_bindings_per_identity: usize,
    pub max_sockets_per_identity: usize,
    /// WebSocket connections one replica holds.
    pub max_sockets: usize,
    /// Largest WebSocket frame and message a client may send; a larger one closes the socket.
    pub max_client_message_bytes: usize,
    /// Largest bindings API request body; larger is `413`.
    pub max_binding_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// How long, and how many, events each account's log keeps (`[events]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetention {
    pub max_age: Duration,
    pub max_events: u64,
}

/// How events are forwarded to `event_targets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    /// How long after an event was kept it is still retried; then it is set aside as failed.
    pub retry_for: Duration,
    /// One attempt's time limit.
    pub attempt_timeout: Duration,
}

/// OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when an endpoint is set.
#[derive(Debug, Clone)]
pub struct TracesConfig {
    /// The collector's base URL (`http://otel-collector:4318`); spans go to `/v1/traces`
    /// under it, as with `OTEL_EXPORTER_OTLP_ENDPOINT`. None: no traces, and no cost.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces kept (0..=100); a request that arrives inside a sampled trace is
    /// kept whatever this says.
    pub sample_percent: u8,
    pub service_name: String,
}

/// How a device that has both an open socket and a push binding gets a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Both at once.
    #[default]
    All,
    /// The socket first; the push only if the socket has not acknowledged within
    /// `websocket.ack_timeout_ms`.
    PreferWebsocket,
}

impl Delivery {
    pub fn parse(key: &str, value: Option<&str>) -> Result<Option<Self>, ConfigError> {
        match value {
            None => Ok(None),
            Some("all") => Ok(Some(Self::All)),
            Some("prefer_websocket") => Ok(Some(Self::PreferWebsocket)),
            Some(other) => Err(ConfigError::invalid(
                key,
                format!("`{other}` is not one of all, prefer_websocket"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::PreferWebsocket => "prefer_websocket",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub sid: AccountSid,
    /// The primary Auth Token, then the secondary one during a rotation.
    pub auth_tokens: Vec<Secret>,
    /// Webhook signing keys by id (`X-Twilio-Webhooks-Signature-Settings: key=<id>`).
    pub shared_keys: Vec<(String, Secret)>,
    /// API keys whose secrets verify Access Tokens minted for this account.
    pub api_keys: Vec<(ApiKeySid, Secret)>,
    pub webhook_basic_auth: Option<BasicAuth>,
    pub require_signature: bool,
    /// How a device with a socket and a push binding gets a call (an app may override it).
    pub delivery: Delivery,
    /// HTTP endpoints the account's events are forwarded to.
    pub event_targets: Vec<EventTarget>,
}

#[derive(Debug, Clone)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    pub api_keys: Vec<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// Every push app whose settings are wrong or whose key or certificate cannot be loaded.
    #[error(transparent)]
    Apps(apps::AppErrors),
}

impl ConfigError {
    fn env(var: &str, message: &str) -> Self {
        Self::Env {
            var: var.to_owned(),
            message: message.to_owned(),
        }
    }

    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where configuration values come from: the optional file, then the environment.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let mut table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.message().to_owned(),
            })?
        }
        None => toml::Table::new(),
    };
    env::apply(&mut table, std::env::vars())?;
    from_table(table)
}

/// Parses and validates a configuration held in a string (no environment overrides).
pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: PathBuf::from("<string>"),
        message: e.message().to_owned(),
    })?;
    from_table(table)
}

fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
    let raw: RawConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                "(top level)".into()
            } else {
                key
            };
            ConfigError::invalid(key, e.into_inner().to_string())
        })?;
    validate(raw)
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let server = validate_server(raw.server)?;
    let store = store::validate(raw.store)?;
    let websocket = WebSocketConfig {
        ping_interval: millis(
            "websocket.ping_interval_ms",
            raw.websocket.ping_interval_ms,
            20_000,
            100..=600_000,
        )?,
        queue_capacity: raw.websocket.queue_capacity.unwrap_or(16) as usize,
        presence_ttl: millis(
            "websocket.presence_ttl_ms",
            raw.websocket.presence_ttl_ms,
            15_000,
            300..=600_000,
        )?,
        ringing_window: Duration::from_secs(match raw.websocket.ringing_window_secs {
            None => 30,
            Some(secs @ 1..=300) => secs,
            Some(_) => {
                return Err(ConfigError::invalid(
                    "websocket.ringing_window_secs",
                    "must be between 1 and 300",
                ));
            }
        }),
        replay: raw.websocket.replay.unwrap_or(true),
        // Unset, it leaves the push at least half of a short deadline.
        ack_timeout: millis(
            "websocket.ack_timeout_ms",
            raw.websocket.ack_timeout_ms,
            (server.webhook_deadline.as_millis() as u64 / 2).clamp(10, 1000),
            10..=60_000,
        )?,
    };
    if websocket.ack_timeout > server.webhook_deadline / 2 {
        return Err(ConfigError::invalid(
            "websocket.ack_timeout_ms",
            "must be at most half of server.webhook_deadline_ms: a push that follows an unacknowledged socket needs the other half",
        ));
    }
    if !(1..=4096).contains(&websocket.queue_capacity) {
        return Err(ConfigError::invalid(
            "websocket.queue_capacity",
            "must be between 1 and 4096",
        ));
    }
    let log = LogConfig {
        format: match raw.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "log.format",
                    format!("`{other}` is not one of text, json"),
                ));
            }
        },
        level: raw.log.level.unwrap_or_else(|| "info".into()),
    };
    let traces = validate_traces(raw.traces)?;
    let forwarding = validate_forwarding(&raw.events)?;
    let events = validate_events(raw.events)?;
    let calls = records::validate_calls(raw.calls)?;
    let rooms = records::validate_rooms(raw.rooms)?;

    let limits = validate_limits(raw.limits, &server)?;

    let mut accounts = Vec::new();
    let mut seen = HashSet::new();
    for (i, account) in raw.accounts.into_iter().enumerate() {
        let parsed = validate_account(&format!("accounts[{i}]"), account)?;
        if !seen.insert(parsed.sid.clone()) {
            return Err(ConfigError::invalid(
                format!("accounts[{i}].sid"),
                format!("account {} is configured twice", parsed.sid),
            ));
        }
        accounts.push(parsed);
    }

    // Without a public URL, the URL a webhook was signed for can only come from headers the
    // caller chooses: a request signed for another host would verify. Only by explicit choice.
    if !accounts.is_empty() && server.public_url.is_none() && !server.trust_forwarded_headers {
        return Err(ConfigError::invalid(
            "server.public_url",
            "is required when accounts are configured: set it to the URL Twilio calls (e.g. https://relay.example.com), \
             or set server.trust_forwarded_headers = true to check signatures against each request's Host and X-Forwarded-Proto",
        ));
    }

    let admin = validate_admin(raw.admin)?;
    let apps = apps::validate(raw.apps)?;
    Ok(Config {
        server,
        store,
        websocket,
        log,
        traces,
        events,
        calls,
        rooms,
        forwarding,
        limits,
        accounts,
        admin,
        apps,
    })
}

fn validate_limits(raw: raw::RawLimits, server: &ServerConfig) -> Result<Limits, ConfigError> {
    let count =
        |key: &str, value: Option<u64>, default: u64, range: std::ops::RangeInclusive<u64>| {
            let v = value.unwrap_or(default);
            if range.contains(&v) {
                Ok(v)
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("{v} is out of range ({}..={})", range.start(), range.end()),
                ))
            }
        };
    let request_timeout = millis(
        "limits.request_timeout_ms",
        raw.request_timeout_ms,
        server.webhook_deadline.as_millis() as u64 + 10_000,
        100..=600_000,
    )?;
    if request_timeout <= server.webhook_deadline {
        return Err(ConfigError::invalid(
            "limits.request_timeout_ms",
            "must be longer than server.webhook_deadline_ms, or webhooks would be cut off",
        ));
    }
    Ok(Limits {
        max_connections: count(
            "limits.max_connections",
            raw.max_connections,
            50_000,
            1..=1_000_000,
        )? as usize,
        header_read_timeout: millis(
            "limits.header_read_timeout_ms",
            raw.header_read_timeout_ms,
            10_000,
            100..=600_000,
        )?,
        max_header_bytes: count(
            "limits.max_header_bytes",
            raw.max_header_bytes,
            32 * 1024,
            8192..=1024 * 1024,
        )? as usize,
        request_timeout,
        binding_requests_per_minute: count(
            "limits.binding_requests_per_minute",
            raw.binding_requests_per_minute,
            120,
            0..=1_000_000,
        )? as u32,
        max_bindings_per_identity: count(
            "limits.max_bindings_per_identity",
            raw.max_bindings_per_identity,
            20,
            1..=10_000,
        )? as usize,
        max_sockets_per_identity: count(
            "limits.max_sockets_per_identity",
            raw.max_sockets_per_identity,
            10,
            1..=10_000,
        )? as usize,
        max_sockets: count("limits.max_sockets", raw.max_sockets, 20_000, 1..=1_000_000)? as usize,
        // Clients only answer pings (control frames carry at most 125 bytes), so a few KiB is
        // plenty and 128 bytes the least that still lets a pong through.
        max_client_message_bytes: count(
            "limits.max_client_message_bytes",
            raw.max_client_message_bytes,
            4 * 1024,
            128..=1024 * 1024,
        )? as usize,
        // A binding is well under 1 KiB, though a long FCM token makes it up to about 5 KiB.
        max_binding_bytes: count(
            "limits.max_binding_bytes",
            raw.max_binding_bytes,
            16 * 1024,
            1024..=1024 * 1024,
        )? as usize,
    })
}

fn validate_server(raw: raw::RawServer) -> Result<ServerConfig, ConfigError> {
    let addr = |key: &str, value: Option<String>, default: &str| {
        let value = value.unwrap_or_else(|| default.into());
        value.parse::<SocketAddr>().map_err(|_| {
            ConfigError::invalid(
                key,
                format!("`{value}` is not an address like 0.0.0.0:8080"),
            )
        })
    };
    let public_url = match raw.public_url {
        None => None,
        Some(url) => Some(validate_base_url(
            "server.public_url",
            &url,
            "configure webhook_username/webhook_password instead",
        )?),
    };
    let trust_forwarded_headers = raw.trust_forwarded_headers.unwrap_or(false);
    if trust_forwarded_headers && public_url.is_some() {
        return Err(ConfigError::invalid(
            "server.trust_forwarded_headers",
            "is true but server.public_url is set; signatures are checked against one of them: remove one",
        ));
    }
    Ok(ServerConfig {
        listen: addr("server.listen", raw.listen, "0.0.0.0:8080")?,
        admin_listen: addr("server.admin_listen", raw.admin_listen, "0.0.0.0:9090")?,
        public_url,
        trust_forwarded_headers,
        webhook_deadline: millis(
            "server.webhook_deadline_ms",
            raw.webhook_deadline_ms,
            5000,
            50..=60_000,
        )?,
        dedupe_window: Duration::from_secs(match raw.dedupe_window_secs.unwrap_or(600) {
            s @ 1..=86_400 => s,
            _ => {
                return Err(ConfigError::invalid(
                    "server.dedupe_window_secs",
                    "must be between 1 and 86400",
                ));
            }
        }),
        shutdown_grace: millis(
            "server.shutdown_grace_ms",
            raw.shutdown_grace_ms,
            10_000,
            0..=600_000,
        )?,
    })
}

fn validate_forwarding(raw: &raw::RawEvents) -> Result<Forwarding, ConfigError> {
    let retry = raw.forward_retry_secs.unwrap_or(24 * 3600);
    if !(1..=7 * 24 * 3600).contains(&retry) {
        return Err(ConfigError::invalid(
            "events.forward_retry_secs",
            "must be between 1 and 604800 (7 days)",
        ));
    }
    let timeout = raw.forward_timeout_ms.unwrap_or(10_000);
    if !(100..=60_000).contains(&timeout) {
        return Err(ConfigError::invalid(
            "events.forward_timeout_ms",
            "must be between 100 and 60000",
        ));
    }
    Ok(Forwarding {
        retry_for: Duration::from_secs(retry),
        attempt_timeout: Duration::from_millis(timeout),
    })
}

/// How long and how many events each account's log keeps (`[events]`).
fn validate_events(raw: raw::RawEvents) -> Result<EventRetention, ConfigError> {
    let retention = raw.retention_secs.unwrap_or(3 * 24 * 3600);
    if !(60..=90 * 24 * 3600).contains(&retention) {
        return Err(ConfigError::invalid(
            "events.retention_secs",
            "must be between 60 and 7776000 (90 days)",
        ));
    }
    let max_events = raw.max_per_account.unwrap_or(100_000);
    if !(100..=100_000_000).contains(&max_events) {
        return Err(ConfigError::invalid(
            "events.max_per_account",
            "must be between 100 and 100000000",
        ));
    }
    Ok(EventRetention {
        max_age: Duration::from_secs(retention),
        max_events,
    })
}

fn validate_traces(raw: raw::RawTraces) -> Result<TracesConfig, ConfigError> {
    let otlp_endpoint = match raw.otlp_endpoint.filter(|url| !url.trim().is_empty()) {
        None => None,
        Some(url) => Some(validate_base_url(
            "traces.otlp_endpoint",
            &url,
            "send them in OTEL_EXPORTER_OTLP_HEADERS instead",
        )?),
    };
    let sample_percent = raw.sample_percent.unwrap_or(100);
    let sample_percent = u8::try_from(sample_percent)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| {
            ConfigError::invalid("traces.sample_percent", "must be between 0 and 100")
        })?;
    let service_name = raw.service_name.unwrap_or_else(|| "callrelay".into());
    if service_name.trim().is_empty() {
        return Err(ConfigError::invalid(
            "traces.service_name",
            "must not be empty",
        ));
    }
    Ok(TracesConfig {
        otlp_endpoint,
        sample_percent,
        service_name,
    })
}

/// A base URL callrelay appends paths to: http(s), a host, no query, fragment or credentials
/// (`credentials_instead` says where those go).
fn validate_base_url(
    key: &str,
    url: &str,
    credentials_instead: &str,
) -> Result<String, ConfigError> {
    let bad = |why: &str| ConfigError::invalid(key, why.to_owned());
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("must start with https:// or http://"))?;
    if url.contains('?') || url.contains('#') {
        return Err(bad("must not have a query string or a fragment"));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if authority.contains('@') {
        return Err(bad(&format!(
            "must not carry credentials; {credentials_instead}"
        )));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain whitespace"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn validate_account(key: &str, raw: raw::RawAccount) -> Result<AccountConfig, ConfigError> {
    let sid_text = raw
        .sid
        .ok_or_else(|| ConfigError::invalid(format!("{key}.sid"), "is required"))?;
    let sid = AccountSid::parse(&sid_text)
        .map_err(|e| ConfigError::invalid(format!("{key}.sid"), e.0))?;
    let mut auth_tokens = Vec::new();
    if let Some(t) = secret(
        &format!("{key}.auth_token"),
        raw.auth_token,
        raw.auth_token_file,
    )? {
        auth_tokens.push(t);
    }
    if let Some(t) = secret(
        &format!("{key}.secondary_auth_token"),
        raw.secondary_auth_token,
        raw.secondary_auth_token_file,
    )? {
        if auth_tokens.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.secondary_auth_token"),
                "is set without auth_token; set the primary token first",
            ));
        }
        auth_tokens.push(t);
    }
    let mut shared_keys = Vec::new();
    for (j, k) in raw.shared_keys.into_iter().enumerate() {
        let kkey = format!("{key}.shared_keys[{j}]");
        let id =
            k.id.filter(|id| !id.is_empty())
                .ok_or_else(|| ConfigError::invalid(format!("{kkey}.id"), "is required"))?;
        let secret = secret(&format!("{kkey}.secret"), k.secret, k.secret_file)?
            .ok_or_else(|| ConfigError::invalid(format!("{kkey}.secret"), "is required"))?;
        shared_keys.push((id, secret));
    }
    let mut api_keys = Vec::new();
    for (j, k) in raw.api_keys.into_iter().enumerate() {
        let kkey = format!("{key}.api_keys[{j}]");
        let sid_text = k
            .sid
            .ok_or_else(|| ConfigError::invalid(format!("{kkey}.sid"), "is required"))?;
        let sid = ApiKeySid::parse(&sid_text)
            .map_err(|e| ConfigError::invalid(format!("{kkey}.sid"), e.0))?;
        let secret = secret(&format!("{kkey}.secret"), k.secret, k.secret_file)?
            .ok_or_else(|| ConfigError::invalid(format!("{kkey}.secret"), "is required"))?;
        api_keys.push((sid, secret));
    }
    let password = secret(
        &format!("{key}.webhook_password"),
        raw.webhook_password,
        raw.webhook_password_file,
    )?;
    let webhook_basic_auth = match (raw.webhook_username, password) {
        (None, None) => None,
        (Some(username), Some(password)) if !username.is_empty() => {
            Some(BasicAuth { username, password })
        }
        _ => {
            return Err(ConfigError::invalid(
                format!("{key}.webhook_username"),
                "webhook_username and webhook_password go together",
            ));
        }
    };
    let require_signature = raw.require_signature.unwrap_or(true);
    if require_signature && auth_tokens.is_empty() && shared_keys.is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}.auth_token"),
            "is required to check X-Twilio-Signature (or configure shared_keys)",
        ));
    }
    if !require_signature && webhook_basic_auth.is_none() {
        return Err(ConfigError::invalid(
            format!("{key}.require_signature"),
            "is false but no webhook_username/webhook_password is set: the webhook would accept anyone",
        ));
    }
    let event_targets = event_targets::validate(key, raw.event_targets)?;
    let delivery =
        Delivery::parse(&format!("{key}.delivery"), raw.delivery.as_deref())?.unwrap_or_default();
    Ok(AccountConfig {
        sid,
        auth_tokens,
        shared_keys,
        api_keys,
        webhook_basic_auth,
        require_signature,
        delivery,
        event_targets,
    })
}

/// Admin keys must be long enough that guessing them is hopeless.
const MIN_ADMIN_KEY_LEN: usize = 24;

fn validate_admin(raw: raw::RawAdmin) -> Result<AdminConfig, ConfigError> {
    let mut keys: Vec<(String, String)> = raw
        .api_keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| (format!("admin.api_keys[{i}]"), k))
        .collect();
    if let Some(path) = raw.api_keys_file {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::invalid(
                "admin.api_keys_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                keys.push((
                    format!("admin.api_keys_file (line {})", n + 1),
                    line.to_owned(),
                ));
            }
        }
    }
    let mut api_keys = Vec::new();
    for (key, value) in keys {
        if value.len() < MIN_ADMIN_KEY_LEN || value.chars().any(char::is_whitespace) {
            return Err(ConfigError::invalid(
                key,
                format!("admin keys are at least {MIN_ADMIN_KEY_LEN} characters without spaces"),
            ));
        }
        if value.split('.').count() == 3 {
            return Err(ConfigError::invalid(
                key,
                "an admin key must not look like a JWT (two dots)",
            ));
        }
        api_keys.push(Secret::new(value));
    }
    Ok(AdminConfig { api_keys })
}

/// Resolves a secret given inline as `key` or in a file as `key_file`. Push apps use it for
/// their own settings, so every secret follows the same rules.
pub fn secret(
    key: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            key,
            format!("set either {key} or {key}_file, not both"),
        )),
        (Some(value), None) => {
            if value.is_empty() {
                Err(ConfigError::invalid(key, "is empty"))
            } else {
                Ok(Some(Secret::new(value)))
            }
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::invalid(
                    format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            // Files written by `echo` or editors end with a newline that is not part of the secret.
            let value = text.trim_end_matches(['\n', '\r']).to_owned();
            if value.is_empty() {
                Err(ConfigError::invalid(
                    format!("{key}_file"),
                    format!("{} is empty", path.display()),
                ))
            } else {
                Ok(Some(Secret::new(value)))
            }
        }
        (None, None) => Ok(None),
    }
}

fn millis(
    key: &str,
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        Ok(Duration::from_millis(v))
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "{v} is out of range ({}..={} milliseconds)",
                range.start(),
                range.end()
            ),
        ))
    }
}

impl Config {
    pub fn account(&self, sid: &AccountSid) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| &a.sid == sid)
    }

    /// How `account`'s bindings of `app` are delivered beside a socket of their device: the
    /// app's `delivery` if it has one, else the account's.
    pub fn delivery(&self, account: &AccountSid, app: &str) -> Delivery {
        self.apps
            .iter()
            .find(|a| a.name == app)
            .and_then(|a| a.delivery)
            .or_else(|| self.account(account).map(|a| a.delivery))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
