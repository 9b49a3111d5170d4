//! `callrelay config defaults`: every configuration key, what it means and its default, as a
//! commented TOML file. `examples/callrelay.toml` is its output (a test keeps them equal).
//!
//! The defaults shown are read from the configuration this crate builds from an empty file
//! (and, for an account's keys, from a minimal account), not written down a second time, so
//! they cannot drift from the code. Each key's description lives below; a test checks that the
//! keys listed here are exactly those the configuration's parsers accept, so a key added to
//! the code without a description fails the build's tests and names the key.
//!
//! Push apps' settings are read by their channels; FCM's defaults come from its constants.
//! APNs keeps its defaults private to its channel, so its three are written here (30, the
//! alert template, 1) and must follow `channels/apns/config.rs` if that changes.

use super::{Config, from_toml_str};

/// How a key is shown.
enum Shown {
    /// A default, taken from the defaults the code produces.
    Default(fn(&Defaults) -> toml::Value),
    /// A default that applies only once Redis is configured (with the memory store the key
    /// is refused), taken from a configuration that names a Redis.
    RedisDefault(fn(&Defaults) -> toml::Value),
    /// No default: an example value (TOML text).
    Example(&'static str),
}

struct Key {
    name: &'static str,
    doc: &'static str,
    shown: Shown,
    /// For arrays of tables written inline (`shared_keys = [{ … }]`): their keys and meaning.
    members: &'static [(&'static str, &'static str)],
}

struct Section {
    /// `server`, or `accounts` for `[[accounts]]`; apps' channels share `apps`.
    name: &'static str,
    /// Several of them, each written `[[name]]`: shown commented out, as examples.
    array: bool,
    doc: &'static str,
    keys: Vec<Key>,
}

/// What an empty configuration (and a minimal account, and a bare Redis URL) resolves to.
struct Defaults {
    config: Config,
    account: super::AccountConfig,
    redis: super::store::RedisConfig,
}

/// The Redis URL a configuration names for the defaults that need one.
const SOME_REDIS: &str = "redis://127.0.0.1:6379";

impl Defaults {
    fn load() -> Self {
        let config = from_toml_str("").expect("an empty configuration is valid");
        let with_account = from_toml_str(
            "[server]\ntrust_forwarded_headers = true\n\
             [[accounts]]\nsid = \"AC00000000000000000000000000000000\"\nauth_token = \"x\"\n",
        )
        .expect("a minimal account is valid");
        let account = with_account
            .accounts
            .into_iter()
            .next()
            .expect("one account");
        let redis = from_toml_str(&format!("[store]\nredis_url = \"{SOME_REDIS}\"\n"))
            .expect("a bare Redis URL is valid")
            .store
            .redis
            .expect("Redis is configured");
        Self {
            config,
            account,
            redis,
        }
    }
}

fn key(name: &'static str, doc: &'static str, shown: Shown) -> Key {
    Key {
        name,
        doc,
        shown,
        members: &[],
    }
}

fn millis(d: std::time::Duration) -> toml::Value {
    toml::Value::Integer(d.as_millis() as i64)
}

fn int(n: impl TryInto<i64>) -> toml::Value {
    toml::Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

fn text(s: impl Into<String>) -> toml::Value {
    toml::Value::String(s.into())
}

fn default(f: fn(&Defaults) -> toml::Value) -> Shown {
    Shown::Default(f)
}

fn redis_default(f: fn(&Defaults) -> toml::Value) -> Shown {
    Shown::RedisDefault(f)
}

fn example(text: &'static str) -> Shown {
    Shown::Example(text)
}

fn sections() -> Vec<Section> {
    vec![
        Section {
            name: "server",
            array: false,
            doc: "The two listeners, and how webhooks are answered.",
            keys: vec![
                key(
                    "listen",
                    "Public listener: the call-notification webhook, the bindings API and WebSockets. HTTP/1.1;\nput a TLS-terminating proxy in front.",
                    default(|d| text(d.config.server.listen.to_string())),
                ),
                key(
                    "admin_listen",
                    "Admin listener: /healthz, /readyz and /metrics. Never expose it publicly.",
                    default(|d| text(d.config.server.admin_listen.to_string())),
                ),
                key(
                    "public_url",
                    "The URL Twilio calls, without the endpoint's path (scheme, host, and any path prefix a proxy\nstrips): Twilio signs the URL it called, and behind a proxy this is the only way to know it.\nRequired when accounts are configured, unless trust_forwarded_headers. No default.",
                    example("\"https://relay.example.com\""),
                ),
                key(
                    "trust_forwarded_headers",
                    "Check signatures against each request's Host and X-Forwarded-Proto instead of public_url\n(not both). Only behind a proxy that sets both headers itself: a request signed for any other\nhost with the same Auth Token would verify.",
                    default(|d| toml::Value::Boolean(d.config.server.trust_forwarded_headers)),
                ),
                key(
                    "webhook_deadline_ms",
                    "Time allowed for answering one notification, looking up its targets and delivering to all of\nthem: Twilio has its answer by then (50..=60000).",
                    default(|d| millis(d.config.server.webhook_deadline)),
                ),
                key(
                    "dedupe_window_secs",
                    "How long a delivered twi_message_id is remembered, so that Twilio's retry of it is answered\n\"duplicate\" rather than delivered again (1..=86400).",
                    default(|d| int(d.config.server.dedupe_window.as_secs())),
                ),
                key(
                    "shutdown_grace_ms",
                    "On SIGTERM, how long in-flight webhooks and WebSocket closes may take before the process\nexits (0..=600000).",
                    default(|d| millis(d.config.server.shutdown_grace)),
                ),
            ],
        },
        Section {
            name: "store",
            array: false,
            doc: "Where bindings, socket presence and delivered-message markers live.",
            keys: vec![
                key(
                    "redis_url",
                    "One Redis server (or a managed Redis's single endpoint): redis://, rediss:// (TLS),\nredis+unix:// or unix://, credentials optional in it; Redis 6.2 or newer. A secret (it may\ncarry a password): or redis_url_file. Set at most one of redis_url, sentinel_urls and\nredis_cluster_urls; none of them: the embedded memory store, for one process, in memory only.",
                    example("\"redis://127.0.0.1:6379\""),
                ),
                key(
                    "redis_url_file",
                    "A file holding redis_url.",
                    example("\"/run/secrets/callrelay/redis-url\""),
                ),
                key(
                    "sentinel_urls",
                    "Redis Sentinel: the sentinels (redis://, or rediss:// when they speak TLS). callrelay\nconnects to the master they name and follows failovers.",
                    example(
                        "[\"redis://sentinel-1:26379\", \"redis://sentinel-2:26379\", \"redis://sentinel-3:26379\"]",
                    ),
                ),
                key(
                    "sentinel_master",
                    "The name of the master the sentinels monitor; required with sentinel_urls.",
                    example("\"mymaster\""),
                ),
                key(
                    "sentinel_username",
                    "Credentials for the sentinels themselves.",
                    example("\"callrelay\""),
                ),
                key(
                    "sentinel_password",
                    "The sentinels' password (a secret).",
                    example("\"…\""),
                ),
                key(
                    "sentinel_password_file",
                    "A file holding sentinel_password.",
                    example("\"/run/secrets/callrelay/sentinel-password\""),
                ),
                key(
                    "sentinel_master_tls",
                    "Whether the master and its replicas speak TLS. Default: as the sentinels' URLs say.",
                    example("true"),
                ),
                key(
                    "redis_cluster_urls",
                    "Redis Cluster (Redis 7.0 or newer): a few of its nodes, redis:// or rediss://; the rest is\ndiscovered.",
                    example(
                        "[\"redis://redis-0:6379\", \"redis://redis-1:6379\", \"redis://redis-2:6379\"]",
                    ),
                ),
                key(
                    "username",
                    "Credentials for the data servers (the server, the Sentinel master, the cluster nodes); for\nredis_url they may be in the URL instead, not both.",
                    example("\"callrelay\""),
                ),
                key("password", "Their password (a secret).", example("\"…\"")),
                key(
                    "password_file",
                    "A file holding password.",
                    example("\"/run/secrets/callrelay/redis-password\""),
                ),
                key(
                    "tls_ca",
                    "PEM certificates of the CA that signs the Redis servers' certificates, inline; they replace\nthe system's roots for Redis. Default: the system's roots.",
                    example("\"-----BEGIN CERTIFICATE-----…\""),
                ),
                key(
                    "tls_ca_file",
                    "A file holding tls_ca.",
                    example("\"/run/secrets/redis-ca/ca.crt\""),
                ),
                key(
                    "tls_cert",
                    "A client certificate chain (PEM), for servers that require mutual TLS.",
                    example("\"-----BEGIN CERTIFICATE-----…\""),
                ),
                key(
                    "tls_cert_file",
                    "A file holding tls_cert.",
                    example("\"/run/secrets/callrelay/redis-client.crt\""),
                ),
                key(
                    "tls_key",
                    "The client certificate's private key (PEM; a secret).",
                    example("\"-----BEGIN PRIVATE KEY-----…\""),
                ),
                key(
                    "tls_key_file",
                    "A file holding tls_key.",
                    example("\"/run/secrets/callrelay/redis-client.key\""),
                ),
                key(
                    "min_replica_acks",
                    "Replicas that must have a binding write before it is acknowledged (WAIT); 0: replication\nstays asynchronous (0..=16). Only with Redis.",
                    redis_default(|d| int(d.redis.min_replica_acks)),
                ),
                key(
                    "key_prefix",
                    "Prefix of every Redis key and channel: replicas with the same prefix share their bindings.\nLetters, digits, - _ . and : only.",
                    default(|d| text(d.config.store.key_prefix.clone())),
                ),
                key(
                    "command_timeout_ms",
                    "Bound on every store call: past it the request gets 503, so a slow or unreachable Redis never\nhangs a webhook (10..=60000).",
                    default(|d| millis(d.config.store.command_timeout)),
                ),
            ],
        },
        Section {
            name: "websocket",
            array: false,
            doc: "WebSocket clients (GET /v1/ws).",
            keys: vec![
                key(
                    "ping_interval_ms",
                    "Ping period; a client silent for two periods is dropped (100..=600000).",
                    default(|d| millis(d.config.websocket.ping_interval)),
                ),
                key(
                    "queue_capacity",
                    "Notifications waiting to be written to one socket; beyond that a delivery fails rather than\nqueueing (1..=4096).",
                    default(|d| int(d.config.websocket.queue_capacity)),
                ),
                key(
                    "presence_ttl_ms",
                    "How long a socket counts as reachable without its replica renewing it (every third of this):\na replica that dies stops receiving deliveries within it (300..=600000).",
                    default(|d| millis(d.config.websocket.presence_ttl)),
                ),
                key(
                    "ringing_window_secs",
                    "How long a call notification is worth ringing (1..=300): a frame that waited longer inside\ncallrelay is dropped, never delivered late, and a client reconnecting with replay_since gets\nwhat arrived within it.",
                    default(|d| int(d.config.websocket.ringing_window.as_secs() as usize)),
                ),
                key(
                    "ack_timeout_ms",
                    "With delivery = \"prefer_websocket\": how long a device's socket has to acknowledge a call\nbefore its push goes out (10..=60000; at most half of server.webhook_deadline_ms). Default: 1000,\nor half of server.webhook_deadline_ms when that is shorter.",
                    default(|d| millis(d.config.websocket.ack_timeout)),
                ),
                key(
                    "replay",
                    "Keep each identity's call notifications for the ringing window (in the store), so a client\nthat reconnects with replay_since receives the calls it missed.",
                    default(|d| toml::Value::Boolean(d.config.websocket.replay)),
                ),
            ],
        },
        Section {
            name: "log",
            array: false,
            doc: "Logs, written to stderr.",
            keys: vec![
                key(
                    "format",
                    "text, or json (one object per line).",
                    default(|d| {
                        text(match d.config.log.format {
                            super::LogFormat::Text => "text",
                            super::LogFormat::Json => "json",
                        })
                    }),
                ),
                key(
                    "level",
                    "A tracing filter such as \"info,callrelay=debug\"; RUST_LOG overrides it.",
                    default(|d| text(d.config.log.level.clone())),
                ),
            ],
        },
        Section {
            name: "events",
            array: false,
            doc: "Twilio's status callbacks and Event Streams: each account's events are kept in a log (a Redis\nstream, or memory) before Twilio is answered, for as long and as many as this says.",
            keys: vec![
                key(
                    "retention_secs",
                    "How long an event is kept, and how long a repeat of it (same id) is recognised and dropped\n(60..=7776000).",
                    default(|d| int(d.config.events.max_age.as_secs())),
                ),
                key(
                    "max_per_account",
                    "The most events one account's log keeps; the oldest go first (100..=100000000).",
                    default(|d| int(d.config.events.max_events)),
                ),
                key(
                    "forward_retry_secs",
                    "How long after it was kept an event is still retried to a target that does not take it;\nthen it is set aside as failed and the target gets the next one (1..=604800).",
                    default(|d| int(d.config.forwarding.retry_for.as_secs())),
                ),
                key(
                    "forward_timeout_ms",
                    "One forwarding attempt's time limit (100..=60000).",
                    default(|d| millis(d.config.forwarding.attempt_timeout)),
                ),
            ],
        },
        Section {
            name: "calls",
            array: false,
            doc: "The per-call delivery trace (GET /v1/calls): every call notification answered, with each target\ntried and what Apple or Google said, recorded off the answer's path, and the Voice Insights\nsummaries Event Streams brings for the call.",
            keys: vec![
                key(
                    "trace",
                    "Record the trace (true or false).",
                    default(|d| toml::Value::Boolean(d.config.calls.trace)),
                ),
                key(
                    "retention_secs",
                    "How long a call's trace is kept (60..=7776000).",
                    default(|d| int(d.config.calls.retention.as_secs())),
                ),
                key(
                    "max_per_identity",
                    "The most notifications an identity's list of calls keeps (a call retried takes one line per\nnotification); the oldest go first (1..=1000000).",
                    default(|d| int(d.config.calls.max_per_identity)),
                ),
            ],
        },
        Section {
            name: "rooms",
            array: false,
            doc: "The room ledger (GET /v1/rooms): per room and participant, connected time and billable time,\nbuilt from Twilio's room and participant status callbacks.",
            keys: vec![
                key(
                    "ledger",
                    "Keep the ledger (true or false).",
                    default(|d| toml::Value::Boolean(d.config.rooms.ledger)),
                ),
                key(
                    "retention_secs",
                    "How long a room's events are kept for its ledger (3600..=94867200).",
                    default(|d| int(d.config.rooms.retention.as_secs())),
                ),
                key(
                    "billing",
                    "How connected time becomes billable time: per_started_minute (each participant's time\nrounded up to whole minutes) or per_second.",
                    default(|d| {
                        text(match d.config.rooms.billing {
                            crate::domain::ledger::BillingRule::PerStartedMinute => {
                                "per_started_minute"
                            }
                            crate::domain::ledger::BillingRule::PerSecond => "per_second",
                        })
                    }),
                ),
            ],
        },
        Section {
            name: "traces",
            array: false,
            doc: "OpenTelemetry traces over OTLP/HTTP (protobuf): spans for each request, the webhook, the store\nlookup, each delivery and the replica bus's acknowledgement; the trace id in the request's log\nlines. Off unless otlp_endpoint is set. OTEL_EXPORTER_OTLP_HEADERS adds headers (a vendor's API\nkey); OTEL_RESOURCE_ATTRIBUTES adds resource attributes.",
            keys: vec![
                key(
                    "otlp_endpoint",
                    "The collector's base URL; spans are sent to /v1/traces under it, as with\nOTEL_EXPORTER_OTLP_ENDPOINT. No default: no traces.",
                    example("\"http://otel-collector.monitoring:4318\""),
                ),
                key(
                    "sample_percent",
                    "Share of new traces kept (0..=100). A request inside a sampled trace of the caller's is kept\nwhatever this says.",
                    default(|d| int(d.config.traces.sample_percent)),
                ),
                key(
                    "service_name",
                    "The service.name resource attribute.",
                    default(|d| text(d.config.traces.service_name.clone())),
                ),
            ],
        },
        Section {
            name: "limits",
            array: false,
            doc: "What one client, one identity or the whole replica may use. max_connections + max_sockets is\nthe descriptor budget: the process's nofile limit must exceed it by a few hundred.",
            keys: vec![
                key(
                    "max_connections",
                    "Open HTTP connections on the public listener; more wait in the accept queue. A connection\nupgraded to a WebSocket counts against max_sockets instead (1..=1000000).",
                    default(|d| int(d.config.limits.max_connections)),
                ),
                key(
                    "header_read_timeout_ms",
                    "Time a client gets to send a request's headers, and the longest an idle keep-alive connection\nstays open (100..=600000).",
                    default(|d| millis(d.config.limits.header_read_timeout)),
                ),
                key(
                    "max_header_bytes",
                    "Largest request head (request line and headers); larger is 431 (8192..=1048576).",
                    default(|d| int(d.config.limits.max_header_bytes)),
                ),
                key(
                    "request_timeout_ms",
                    "Time a request may take, body included (408 past it); must exceed webhook_deadline_ms. Default:\nserver.webhook_deadline_ms + 10000.",
                    default(|d| millis(d.config.limits.request_timeout)),
                ),
                key(
                    "binding_requests_per_minute",
                    "Bindings API requests per credential per replica, in bursts of as many; 429 beyond. 0 turns\nthe limit off.",
                    default(|d| int(d.config.limits.binding_requests_per_minute)),
                ),
                key(
                    "max_bindings_per_identity",
                    "Push bindings per identity; a new one beyond is 409 (1..=10000).",
                    default(|d| int(d.config.limits.max_bindings_per_identity)),
                ),
                key(
                    "max_sockets_per_identity",
                    "Open WebSockets per identity across replicas; beyond is 429 (1..=10000).",
                    default(|d| int(d.config.limits.max_sockets_per_identity)),
                ),
                key(
                    "max_sockets",
                    "WebSockets one replica holds, from before the upgrade until the connection closes; beyond is\n503 (1..=1000000).",
                    default(|d| int(d.config.limits.max_sockets)),
                ),
                key(
                    "max_client_message_bytes",
                    "Largest WebSocket frame or message a client may send; a larger one closes the socket\n(128..=1048576).",
                    default(|d| int(d.config.limits.max_client_message_bytes)),
                ),
                key(
                    "max_binding_bytes",
                    "Largest bindings API request body; larger is 413 (1024..=1048576).",
                    default(|d| int(d.config.limits.max_binding_bytes)),
                ),
            ],
        },
        Section {
            name: "admin",
            array: false,
            doc: "Bearer keys for app backends managing any identity's bindings (at least 24 characters, no\nspaces). None by default: only Access Tokens get in.",
            keys: vec![
                key(
                    "api_keys",
                    "The keys, inline (secrets).",
                    // None by default (a test checks that this is what the code says).
                    default(|_| toml::Value::Array(Vec::new())),
                ),
                key(
                    "api_keys_file",
                    "A file of keys, one per line; lines starting with # are ignored.",
                    example("\"/run/secrets/callrelay/admin-api-keys\""),
                ),
            ],
        },
        Section {
            name: "accounts",
            array: true,
            doc: "A Twilio account whose call notifications this relay answers. Repeat for each account.",
            keys: vec![
                key(
                    "sid",
                    "The Account SID. Required.",
                    example("\"AC00000000000000000000000000000000\""),
                ),
                key(
                    "auth_token",
                    "The account's Auth Token: verifies X-Twilio-Signature. Required unless only shared_keys sign.",
                    example("\"…\""),
                ),
                key(
                    "auth_token_file",
                    "A file holding auth_token.",
                    example("\"/run/secrets/callrelay/twilio-auth-token\""),
                ),
                key(
                    "secondary_auth_token",
                    "Also accepted, while the Auth Token is being rotated.",
                    example("\"…\""),
                ),
                key(
                    "secondary_auth_token_file",
                    "A file holding secondary_auth_token.",
                    example("\"/run/secrets/callrelay/twilio-auth-token-2\""),
                ),
                Key {
                    members: &[
                        (
                            "id",
                            "the key's id, as X-Twilio-Webhooks-Signature-Settings names it",
                        ),
                        ("secret", "the key (or secret_file)"),
                        ("secret_file", "a file holding it"),
                    ],
                    ..key(
                        "shared_keys",
                        "Webhook signing keys, HMAC-SHA256.",
                        example(
                            "[{ id = \"key-1\", secret_file = \"/run/secrets/callrelay/twilio-webhook-key\" }]",
                        ),
                    )
                },
                Key {
                    members: &[
                        ("sid", "the API key's SID (SK…)"),
                        ("secret", "its secret (or secret_file)"),
                        ("secret_file", "a file holding it"),
                    ],
                    ..key(
                        "api_keys",
                        "API keys whose secrets verify the Access Tokens apps present (bindings API, WebSockets).",
                        example(
                            "[{ sid = \"SK00000000000000000000000000000000\", secret_file = \"/run/secrets/callrelay/twilio-api-key-secret\" }]",
                        ),
                    )
                },
                key(
                    "webhook_username",
                    "HTTP Basic credentials the webhook requires, when the URL Twilio calls embeds them: none is\n401 with a Basic challenge (Twilio then sends them), wrong ones are 403.",
                    example("\"twilio\""),
                ),
                key(
                    "webhook_password",
                    "The Basic password (a secret).",
                    example("\"…\""),
                ),
                key(
                    "webhook_password_file",
                    "A file holding webhook_password.",
                    example("\"/run/secrets/callrelay/webhook-password\""),
                ),
                key(
                    "delivery",
                    "A device with an open socket and a push binding (same device_id) gets a call: all (both at\nonce) or prefer_websocket (the socket first, the push only without an acknowledgement within\nwebsocket.ack_timeout_ms). An app's own delivery overrides it.",
                    default(|_| text("all")),
                ),
                key(
                    "require_signature",
                    "false only together with Basic credentials.",
                    default(|d| toml::Value::Boolean(d.account.require_signature)),
                ),
                Key {
                    members: &[
                        (
                            "name",
                            "unique within the account: 1 to 64 of A-Z a-z 0-9 . _ -",
                        ),
                        ("url", "where the events are POSTed (http or https)"),
                        (
                            "types",
                            "event types forwarded, `*` matching any run of characters; all when left out",
                        ),
                        (
                            "secret",
                            "the Standard Webhooks signing secret, whsec_ and 24 to 64 bytes in base64 (or secret_file)",
                        ),
                        ("secret_file", "a file holding it"),
                    ],
                    ..key(
                        "event_targets",
                        "HTTP endpoints the account's status callbacks and Event Streams events are forwarded to,\neach as a POST of the event's envelope signed per Standard Webhooks (webhook-id,\nwebhook-timestamp, webhook-signature), in the log's order, retried until it is taken.",
                        example(
                            "[{ name = \"billing\", url = \"https://billing.example.com/twilio-events\", types = [\"participant-*\", \"room-ended\"], secret_file = \"/run/secrets/callrelay/billing-webhook-secret\" }]",
                        ),
                    )
                },
            ],
        },
        Section {
            name: "apps",
            array: true,
            doc: "An APNs app (docs/apns.md). Token auth (team_id, key_id, key) or certificate auth (cert_file\nand private_key, or pkcs12_file).",
            keys: vec![
                key(
                    "name",
                    "The app's name, which bindings give as `app`: 1 to 64 of A-Z, a-z, 0-9, `.`, `_` and `-`.\nRequired.",
                    example("\"ios\""),
                ),
                key("channel", "apns.", example("\"apns\"")),
                key(
                    "delivery",
                    "Overrides the account's delivery (all | prefer_websocket) for this app's bindings.",
                    example("\"prefer_websocket\""),
                ),
                key(
                    "topic",
                    "The bundle ID, without .voip. Required.",
                    example("\"com.example.phone\""),
                ),
                key(
                    "team_id",
                    "Token auth: the Team ID.",
                    example("\"ABCDE12345\""),
                ),
                key(
                    "key_id",
                    "Token auth: the .p8 key's Key ID.",
                    example("\"FGHIJ67890\""),
                ),
                key(
                    "key",
                    "Token auth: the .p8 key itself (a secret).",
                    example("\"-----BEGIN PRIVATE KEY-----…\""),
                ),
                key(
                    "key_file",
                    "Token auth: a file holding the .p8 key.",
                    example("\"/run/secrets/callrelay/apns-auth-key.p8\""),
                ),
                key(
                    "cert_file",
                    "Certificate auth: the client certificate (PEM).",
                    example("\"/run/secrets/callrelay/voip.pem\""),
                ),
                key(
                    "private_key",
                    "Certificate auth: its private key (PEM; a secret).",
                    example("\"-----BEGIN PRIVATE KEY-----…\""),
                ),
                key(
                    "private_key_file",
                    "Certificate auth: a file holding the private key.",
                    example("\"/run/secrets/callrelay/voip.key\""),
                ),
                key(
                    "pkcs12_file",
                    "Certificate auth: certificate and key in one PKCS#12 file.",
                    example("\"/run/secrets/callrelay/voip.p12\""),
                ),
                key(
                    "pkcs12_password",
                    "The PKCS#12 file's password (a secret); empty when not set.",
                    example("\"…\""),
                ),
                key(
                    "pkcs12_password_file",
                    "A file holding pkcs12_password.",
                    example("\"/run/secrets/callrelay/voip.p12.password\""),
                ),
                key(
                    "base_url",
                    "Replaces both environments' base URL (a proxy; https only). Default: Apple's hosts.",
                    example("\"https://apns-proxy.internal\""),
                ),
                key(
                    "production_url",
                    "The production base URL; wins over base_url.",
                    example("\"https://api.push.apple.com\""),
                ),
                key(
                    "sandbox_url",
                    "The sandbox base URL; wins over base_url.",
                    example("\"https://api.sandbox.push.apple.com\""),
                ),
                key(
                    "ca_file",
                    "Extra CAs to trust for this app's connections (PEM).",
                    example("\"/etc/ssl/extra-ca.pem\""),
                ),
                key(
                    "ringing_window_secs",
                    "apns-expiration = now + this (1..=300).",
                    default(|_| int(30)),
                ),
                key(
                    "alert_template",
                    "The alert text of `alert` pushes; {from} is the caller.",
                    default(|_| text("Incoming call from {from}")),
                ),
                key(
                    "non_call_push",
                    "What a notification other than twilio.voice.call (e.g. twilio.voice.cancel) becomes for\nbindings with push_type alert or background: skip, background or alert. PushKit (voip)\nbindings never get one (docs/apns.md).",
                    default(|_| text("skip")),
                ),
                key(
                    "non_call_alert_template",
                    "The alert text when non_call_push = \"alert\"; {from} is the caller.",
                    default(|_| text("Missed call from {from}")),
                ),
                key(
                    "connections",
                    "HTTP/2 connections per environment, used in turn (1..=16).",
                    default(|_| int(1)),
                ),
            ],
        },
        Section {
            name: "apps",
            array: true,
            doc: "An FCM app (docs/fcm.md).",
            keys: vec![
                key(
                    "name",
                    "The app's name, which bindings give as `app`: 1 to 64 of A-Z, a-z, 0-9, `.`, `_` and `-`.\nRequired.",
                    example("\"android\""),
                ),
                key("channel", "fcm.", example("\"fcm\"")),
                key(
                    "delivery",
                    "Overrides the account's delivery (all | prefer_websocket) for this app's bindings.",
                    example("\"prefer_websocket\""),
                ),
                key(
                    "service_account",
                    "The Firebase service-account key's JSON (a secret).",
                    example("\"{ … }\""),
                ),
                key(
                    "service_account_file",
                    "A file holding the service-account key. This or service_account is required,\nunless credentials says otherwise.",
                    example("\"/run/secrets/callrelay/firebase-service-account.json\""),
                ),
                key(
                    "credentials",
                    "Where access tokens come from: service_account (the key above), metadata_server\n(no key: the workload's own service account, as on GKE with Workload Identity, Compute\nEngine or Cloud Run; needs project_id) or application_default (the key file\nGOOGLE_APPLICATION_CREDENTIALS names, else gcloud's well-known file, else the metadata\nserver).",
                    default(|_| text("service_account")),
                ),
                key(
                    "metadata_url",
                    "The metadata server, for metadata_server and application_default. Default:\nhttp://$GCE_METADATA_HOST if that is set, else http://metadata.google.internal.",
                    example("\"http://metadata.google.internal\""),
                ),
                key(
                    "project_id",
                    "The project to send through. Default: the key's project_id (required without a key).",
                    example("\"my-other-project\""),
                ),
                key(
                    "base_url",
                    "Replaces Google's host (a proxy; https only).",
                    default(|_| text(crate::config::apps::fcm::DEFAULT_BASE_URL)),
                ),
                key(
                    "ca_file",
                    "Extra CAs to trust for this app's connections (PEM).",
                    example("\"/etc/ssl/extra-ca.pem\""),
                ),
                key(
                    "ttl_secs",
                    "android.ttl (0..=2419200); 0 means now or never.",
                    default(|_| int(crate::config::apps::fcm::DEFAULT_TTL_SECS)),
                ),
                key(
                    "connections",
                    "HTTP/2 connections to FCM, used in turn (1..=16).",
                    default(|_| int(1)),
                ),
            ],
        },
    ]
}

const HEADER: &str = "\
# callrelay's configuration: every key, what it means, and its default.
#
# Written by `callrelay config defaults` (this file is its output, and a test keeps it so).
# `#key = value` lines show the default: uncomment one to change it. Keys without a default
# show an example instead. Every key can also be set from the environment as
# CALLRELAY__SECTION__KEY (CALLRELAY__SERVER__LISTEN=0.0.0.0:8080, CALLRELAY__ACCOUNTS__0__SID=…).
# Every secret `x` can be given inline as `x` or read from a file as `x_file`; keep secrets in
# files. `callrelay check-config` checks a configuration and names any key that is wrong.
";

fn comment(out: &mut String, doc: &str) {
    for line in doc.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
}

/// The commented TOML file.
pub fn render() -> String {
    let defaults = Defaults::load();
    let mut out = String::from(HEADER);
    for section in sections() {
        out.push('\n');
        comment(&mut out, section.doc);
        if section.array {
            out.push_str(&format!("#[[{}]]\n", section.name));
        } else {
            out.push_str(&format!("[{}]\n", section.name));
        }
        for key in &section.keys {
            comment(&mut out, key.doc);
            for (member, doc) in key.members {
                out.push_str(&format!("#   {member}: {doc}\n"));
            }
            let value = match &key.shown {
                Shown::Default(f) | Shown::RedisDefault(f) => f(&defaults).to_string(),
                Shown::Example(text) => (*text).to_owned(),
            };
            out.push_str(&format!("#{} = {value}\n", key.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The fields a parser accepts, from serde's refusal of one it does not know ("unknown field
    /// `x`, expected one of `a`, `b`, `c`"): serde offers no other way to list a struct's fields.
    fn expected_fields(message: &str) -> BTreeSet<String> {
        let list = message
            .split_once("expected one of ")
            .or_else(|| message.split_once("expected "))
            .unwrap_or_else(|| panic!("not an unknown-field error: {message}"))
            .1;
        // serde writes one field as `a`, two as `a` or `b`, more as one of `a`, `b`, `c`.
        let list = list
            .lines()
            .next()
            .unwrap_or_default()
            .replace("` or `", "`, `");
        list.split(", ")
            .map(|f| f.trim().trim_matches('`').to_owned())
            .collect()
    }

    fn refused(text: &str) -> String {
        from_toml_str(text)
            .expect_err("an unknown key is refused")
            .to_string()
    }

    /// The keys apps of a channel accept, besides `name` and `channel`.
    fn app_fields(channel: &str) -> BTreeSet<String> {
        let error = refused(&format!(
            "[[apps]]\nname = \"x\"\nchannel = \"{channel}\"\n__probe__ = 1\n"
        ));
        let mut fields = expected_fields(&error);
        fields.extend([
            "name".to_owned(),
            "channel".to_owned(),
            "delivery".to_owned(),
        ]);
        fields
    }

    fn listed(section: &Section) -> BTreeSet<String> {
        section.keys.iter().map(|k| k.name.to_owned()).collect()
    }

    #[test]
    fn every_key_the_parsers_accept_is_described_and_no_other() {
        let sections = sections();
        let top: BTreeSet<String> = sections.iter().map(|s| s.name.to_owned()).collect();
        assert_eq!(top, expected_fields(&refused("__probe__ = 1")));
        for section in &sections {
            let accepted = match (section.name, section.keys.iter().any(|k| k.name == "topic")) {
                ("apps", true) => app_fields("apns"),
                ("apps", false) => app_fields("fcm"),
                (name, _) => {
                    let header = if section.array {
                        format!("[[{name}]]")
                    } else {
                        format!("[{name}]")
                    };
                    expected_fields(&refused(&format!("{header}\n__probe__ = 1\n")))
                }
            };
            assert_eq!(listed(section), accepted, "[{}]", section.name);
            for key in section.keys.iter().filter(|k| !k.members.is_empty()) {
                let members: BTreeSet<String> =
                    key.members.iter().map(|(m, _)| (*m).to_owned()).collect();
                let accepted = expected_fields(&refused(&format!(
                    "[[{}]]\n{} = [{{ __probe__ = 1 }}]\n",
                    section.name, key.name
                )));
                assert_eq!(members, accepted, "{}.{}", section.name, key.name);
            }
        }
    }

    /// Uncommenting every default changes nothing: each default is shown under its own key.
    #[test]
    fn the_defaults_shown_are_the_defaults() {
        let defaults = Defaults::load();
        let mut table = toml::Table::new();
        for section in sections().iter().filter(|s| !s.array) {
            let mut keys = toml::Table::new();
            for key in &section.keys {
                if let Shown::Default(f) = &key.shown {
                    keys.insert(key.name.to_owned(), f(&defaults));
                }
            }
            table.insert(section.name.to_owned(), toml::Value::Table(keys));
        }
        let explicit = super::super::from_table(table).unwrap();
        assert_eq!(format!("{explicit:?}"), format!("{:?}", defaults.config));

        // Defaults that need Redis, beside a Redis URL.
        let with_redis = |keys: &[(&str, toml::Value)]| {
            let mut store = toml::Table::new();
            store.insert("redis_url".into(), text(SOME_REDIS));
            for (k, v) in keys {
                store.insert((*k).to_owned(), v.clone());
            }
            let mut table = toml::Table::new();
            table.insert("store".into(), toml::Value::Table(store));
            format!("{:?}", super::super::from_table(table).unwrap())
        };
        let redis_defaults: Vec<(&str, toml::Value)> = sections()
            .iter()
            .flat_map(|s| s.keys.iter())
            .filter_map(|k| match &k.shown {
                Shown::RedisDefault(f) => Some((k.name, f(&defaults))),
                _ => None,
            })
            .collect();
        assert!(!redis_defaults.is_empty());
        assert_eq!(with_redis(&redis_defaults), with_redis(&[]));

        // A key shown under the wrong name would change something: a sanity check of the test.
        let mut swapped = toml::Table::new();
        swapped.insert(
            "websocket".into(),
            toml::Value::Table(toml::from_str("ping_interval_ms = 15000").unwrap()),
        );
        let changed = super::super::from_table(swapped).unwrap();
        assert_ne!(format!("{changed:?}"), format!("{:?}", defaults.config));
    }

    #[test]
    fn the_file_is_valid_toml_that_changes_nothing() {
        let text = render();
        let parsed = from_toml_str(&text).unwrap();
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", Defaults::load().config)
        );
        assert!(text.contains("#webhook_deadline_ms = 5000\n"), "{text}");
        assert!(text.contains("#[[accounts]]\n"), "{text}");
    }
}
