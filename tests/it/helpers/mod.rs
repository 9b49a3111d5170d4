//! Test harness: callrelay started for real on port 0 (in process, or as the built binary
//! when a test needs to kill it), a private redis-server, signed webhooks, access tokens and
//! WebSocket clients.

pub mod bindings;
pub mod fake_channel;
pub mod load;
pub mod proxy;
pub mod redis;
pub mod topology;
pub mod ws;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use callrelay::auth::access_token;
use callrelay::auth::signature::{self, SignatureAlgorithm};
use callrelay::channels::PushApp;
use callrelay::clock::Clock;
use callrelay::config::Secret;
use callrelay::domain::{AccountSid, ApiKeySid, Identity};
use callrelay::{App, Listeners, Options};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;

pub use fake_channel::FakeChannel;
pub use ws::WsClient;

pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "primary-auth-token-for-tests";
pub const SECONDARY_AUTH_TOKEN: &str = "secondary-auth-token-for-tests";
pub const API_KEY: &str = "SK0123456789abcdef0123456789abcdef";
pub const API_SECRET: &str = "api-key-secret-for-tests";
pub const OTHER_ACCOUNT: &str = "ACfedcba9876543210fedcba9876543210";
pub const OTHER_AUTH_TOKEN: &str = "other-account-auth-token";
pub const OTHER_API_KEY: &str = "SKfedcba9876543210fedcba9876543210";
pub const OTHER_API_SECRET: &str = "other-account-api-secret";
pub const UNCONFIGURED_ACCOUNT: &str = "AC11111111111111111111111111111111";
pub const ADMIN_KEY: &str = "admin-key-for-tests-0123456789abcdef";
pub const APNS_TOKEN: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";
pub const APNS_TOKEN_2: &str = "b0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b2";

/// Once per test process: logs when TEST_LOG is set, and the TLS provider for HTTP clients.
pub fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // The tests' own reqwest clients need the process's rustls provider (reqwest is built
        // with `rustls-no-provider`); callrelay installs it in `start`, after they exist.
        callrelay::channels::push_client::install_crypto_provider();
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "callrelay=debug".into()),
                )
                .with_test_writer()
                .try_init();
        }
    });
}

#[derive(Clone)]
pub enum Engine {
    Memory,
    /// The shared test Redis server.
    Redis,
    /// A given Redis URL (a dedicated server).
    RedisAt(String),
    /// `[store]` keys as TOML lines (Sentinel, Cluster, TLS).
    Store(String),
}

/// How a test wants callrelay configured.
#[derive(Clone)]
pub struct TestConfig {
    pub engine: Engine,
    /// Key prefix; several instances given the same one share their data.
    pub prefix: String,
    pub presence_ttl_ms: u64,
    pub ping_interval_ms: u64,
    pub deadline_ms: u64,
    /// `store.command_timeout_ms`.
    pub command_timeout_ms: u64,
    pub queue_capacity: u64,
    /// `websocket.ringing_window_secs`.
    pub ringing_window_secs: u64,
    /// Push apps served by recording fake channels: (name, "apns" | "fcm").
    pub fake_apps: Vec<(&'static str, &'static str)>,
    /// Appended to the generated TOML (extra sections or keys).
    pub extra: String,
    /// Replaces the whole `[[accounts]]` part.
    pub accounts: Option<String>,
    pub public_url: Option<String>,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self {
            engine: Engine::Memory,
            prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
            presence_ttl_ms: 15_000,
            ping_interval_ms: 20_000,
            deadline_ms: 3_000,
            command_timeout_ms: 500,
            queue_capacity: 16,
            ringing_window_secs: 30,
            fake_apps: Vec::new(),
            extra: String::new(),
            accounts: None,
            public_url: None,
        }
    }
}

impl TestConfig {
    pub fn redis() -> Self {
        Self {
            engine: Engine::Redis,
            ..Self::default()
        }
    }

    pub fn with_engine(engine: Engine) -> Self {
        Self {
            engine,
            ..Self::default()
        }
    }

    pub fn toml(&self, listen: &str, admin_listen: &str) -> String {
        let store = match &self.engine {
            Engine::Memory => String::new(),
            Engine::Redis => format!("redis_url = \"{}\"\n", redis::shared().url()),
            Engine::RedisAt(url) => format!("redis_url = \"{url}\"\n"),
            Engine::Store(keys) => format!("{keys}\n"),
        };
        let accounts = self.accounts.clone().unwrap_or_else(|| {
            format!(
                r#"
[[accounts]]
sid = "{ACCOUNT}"
auth_token = "{AUTH_TOKEN}"
secondary_auth_token = "{SECONDARY_AUTH_TOKEN}"
shared_keys = [{{ id = "k1", secret = "shared-key-secret" }}]
api_keys = [{{ sid = "{API_KEY}", secret = "{API_SECRET}" }}]

[[accounts]]
sid = "{OTHER_ACCOUNT}"
auth_token = "{OTHER_AUTH_TOKEN}"
api_keys = [{{ sid = "{OTHER_API_KEY}", secret = "{OTHER_API_SECRET}" }}]
"#
            )
        });
        let apps: String = self
            .fake_apps
            .iter()
            .map(|(name, channel)| {
                format!(
                    "\n[[apps]]\nname = \"{name}\"\nchannel = \"{channel}\"\n{}",
                    fake_app_settings(channel)
                )
            })
            .collect();
        // Tests sign for the address they send to (bound on port 0, so not known here):
        // without a public URL, the Host header is trusted, by the explicit opt-in.
        let public_url = self.public_url.as_ref().map_or_else(
            || "trust_forwarded_headers = true\n".to_owned(),
            |u| format!("public_url = \"{u}\"\n"),
        );
        format!(
            r#"
[server]
listen = "{listen}"
admin_listen = "{admin_listen}"
webhook_deadline_ms = {deadline}
shutdown_grace_ms = 5000
{public_url}
[store]
key_prefix = "{prefix}"
command_timeout_ms = {command_timeout}
{store}
[websocket]
presence_ttl_ms = {presence}
ping_interval_ms = {ping}
queue_capacity = {queue}
ringing_window_secs = {ringing_window}

[admin]
api_keys = ["{ADMIN_KEY}"]
{accounts}
{apps}
{extra}
"#,
            deadline = self.deadline_ms,
            ringing_window = self.ringing_window_secs,
            command_timeout = self.command_timeout_ms,
            prefix = self.prefix,
            presence = self.presence_ttl_ms,
            ping = self.ping_interval_ms,
            queue = self.queue_capacity,
            extra = self.extra,
        )
    }
}

/// callrelay running in this process.
pub struct TestApp {
    app: Option<App>,
    pub base: String,
    pub admin: String,
    pub http: reqwest::Client,
    pub fakes: HashMap<String, Arc<FakeChannel>>,
}

/// Settings a fake app's channel accepts, secrets inline: configuration reads and loads them,
/// though the app is served by a `FakeChannel`.
fn fake_app_settings(channel: &str) -> String {
    let quote = |text: &str| format!("'''{text}'''");
    match channel {
        "apns" => format!(
            "topic = \"com.example.voice\"\nteam_id = \"TEAM123456\"\nkey_id = \"KEY1234567\"\nkey = {}\n",
            quote(&rcgen::KeyPair::generate().unwrap().serialize_pem())
        ),
        "fcm" => {
            let key = serde_json::json!({
                "type": "service_account",
                "project_id": "callrelay-fake",
                "private_key": callrelay_testkit::fcm::PRIVATE_KEY,
                "client_email": "relay@callrelay-fake.iam.gserviceaccount.com",
                "token_uri": "https://oauth2.googleapis.com/token"
            });
            format!("service_account = {}\n", quote(&key.to_string()))
        }
        other => panic!("no fake app settings for {other}"),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(TestConfig::default()).await
}

pub async fn spawn_with(config: TestConfig) -> TestApp {
    spawn_with_clock(config, None).await
}

/// A wall clock that is off by as many seconds as the test says, either way.
#[derive(Clone, Default)]
pub struct SkewedClock(Arc<AtomicI64>);

impl SkewedClock {
    pub fn set_offset_seconds(&self, seconds: i64) {
        self.0.store(seconds, Ordering::Relaxed);
    }
}

impl Clock for SkewedClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + time::Duration::seconds(self.0.load(Ordering::Relaxed))
    }
}

/// callrelay whose wall clock is `clock` (default: the system's).
pub async fn spawn_with_clock(config: TestConfig, clock: Option<Arc<dyn Clock>>) -> TestApp {
    init_logging();
    let parsed = callrelay::config::from_toml_str(&config.toml("127.0.0.1:0", "127.0.0.1:0"))
        .expect("test configuration is valid");
    let listeners = Listeners {
        public: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let mut fakes = HashMap::new();
    let mut push_channels: HashMap<String, Arc<dyn PushApp>> = HashMap::new();
    for (name, _) in &config.fake_apps {
        let fake = FakeChannel::new();
        fakes.insert(name.to_string(), fake.clone());
        push_channels.insert(name.to_string(), fake);
    }
    let app = callrelay::start(
        parsed,
        Options {
            listeners: Some(listeners),
            push_channels,
            clock,
            ..Options::default()
        },
    )
    .await
    .expect("callrelay starts");
    TestApp {
        base: format!("http://{}", app.public_addr),
        admin: format!("http://{}", app.admin_addr),
        app: Some(app),
        http: reqwest::Client::new(),
        fakes,
    }
}

/// A call notification as Twilio sends it.
pub fn payload(account: &str, identity: &str) -> Vec<u8> {
    let id = uuid::Uuid::new_v4().simple();
    format!(
        r#"{{"twi_account_sid":"{account}","twi_bridge_token":"eyJhbGciOiJkaXIi.bridge.{id}","twi_call_sid":"CA{id}","twi_from":"client:alice","twi_to":"client:{identity}","twi_message_id":"RM{id}","twi_message_type":"twilio.voice.call","twi_params":"foo=bar%20baz&x=%C3%A9"}}"#
    )
    .into_bytes()
}

pub fn with_message_id(body: &[u8], id: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    v["twi_message_id"] = json!(id);
    serde_json::to_vec(&v).unwrap()
}

/// The `X-Twilio-Signature` Twilio would send for `url` and `body`.
pub fn sign(auth_token: &str, url: &str) -> String {
    signature::compute(
        SignatureAlgorithm::HmacSha1,
        auth_token.as_bytes(),
        url,
        &[],
    )
}

pub fn webhook_path(body: &[u8]) -> String {
    format!(
        "/v1/twilio/call-notifications?bodySHA256={}",
        signature::body_sha256_hex(body)
    )
}

pub fn mint(account: &str, key: &str, secret: &str, identity: &str, ttl: Duration) -> String {
    access_token::mint(
        &AccountSid::parse(account).unwrap(),
        &ApiKeySid::parse(key).unwrap(),
        &Secret::new(secret),
        &Identity::parse(identity).unwrap(),
        ttl,
    )
}

pub fn token(identity: &str) -> String {
    mint(
        ACCOUNT,
        API_KEY,
        API_SECRET,
        identity,
        Duration::from_secs(3600),
    )
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts `body` signed with `auth_token` for the URL it is sent to.
    pub async fn webhook_signed_with(&self, body: Vec<u8>, auth_token: &str) -> Answer {
        let url = self.url(&webhook_path(&body));
        let sig = sign(auth_token, &url);
        answer(
            self.http
                .post(url)
                .header("content-type", "application/json")
                .header("x-twilio-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Posts a correctly signed webhook.
    pub async fn webhook(&self, body: Vec<u8>) -> Answer {
        let account: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let token = if account["twi_account_sid"] == OTHER_ACCOUNT {
            OTHER_AUTH_TOKEN
        } else {
            AUTH_TOKEN
        };
        self.webhook_signed_with(body, token).await
    }

    /// Posts a form-encoded status callback signed as Twilio signs it (URL and sorted
    /// parameters, the main account's Auth Token).
    pub async fn status_callback(&self, params: &[(String, String)]) -> Answer {
        let url = self.url("/v1/twilio/status-callbacks");
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let sig = signature::compute(
            SignatureAlgorithm::HmacSha1,
            AUTH_TOKEN.as_bytes(),
            &url,
            &pairs,
        );
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        answer(
            self.http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Posts an Event Streams batch signed with the main account's Auth Token.
    pub async fn event_streams(&self, body: String) -> Answer {
        let url = self.url(&format!(
            "/v1/twilio/event-streams?bodySHA256={}",
            signature::body_sha256_hex(body.as_bytes())
        ));
        let sig = sign(AUTH_TOKEN, &url);
        answer(
            self.http
                .post(url)
                .header("content-type", "application/json")
                .header("x-twilio-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// A GET on the admin listener with the admin key.
    pub async fn admin_get(&self, path: &str) -> Answer {
        answer(
            self.http
                .get(format!("{}{path}", self.admin))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// A signed call notification for `identity` of the main account.
    pub async fn notify(&self, identity: &str) -> Answer {
        self.webhook(payload(ACCOUNT, identity)).await
    }

    pub async fn connect_ws(&self, identity: &str) -> WsClient {
        WsClient::connect(&self.base, &token(identity), None)
            .await
            .expect("WebSocket connects")
    }

    /// This replica's id on the replica bus.
    pub fn node(&self) -> String {
        self.app.as_ref().expect("running").node.clone()
    }

    pub fn fake(&self, app: &str) -> Arc<FakeChannel> {
        self.fakes[app].clone()
    }

    /// Sends a bindings API request with a bearer credential.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(bearer);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.unwrap()).await
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Graceful shutdown, waiting until everything stopped.
    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown();
            app.stopped().await;
        }
    }

    pub fn begin_shutdown(&self) {
        if let Some(app) = &self.app {
            app.shutdown();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(app) = &self.app {
            app.shutdown();
        }
    }
}

/// callrelay running as its own process (the built binary), for tests that kill it.
pub struct ProcessApp {
    child: Option<Child>,
    pub base: String,
    pub admin: String,
    _config: tempfile::TempPath,
    log: tempfile::TempPath,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ProcessApp {
    pub async fn start(config: &TestConfig) -> Self {
        Self::start_with_env(config, &[]).await
    }

    /// Starts the binary with extra environment variables; its stderr (the logs) goes to a
    /// file that `logs` reads.
    pub async fn start_with_env(config: &TestConfig, env: &[(&str, &str)]) -> Self {
        init_logging();
        let (port, admin_port) = (free_port(), free_port());
        let toml = config.toml(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{admin_port}"),
        );
        let path = callrelay_testkit::tls::temp_file("process.toml", toml);
        let log_path = callrelay_testkit::tls::temp_file("process.log", "");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_callrelay"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "callrelay=debug")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("the callrelay binary starts");
        let app = Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            _config: path,
            log: log_path,
        };
        let started = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", app.admin)).await
                && r.status() == StatusCode::OK
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "callrelay process did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app
    }

    /// Everything the process logged so far. callrelay writes its log from a thread of its
    /// own, a moment after the line was logged: wait until the file stops growing.
    pub fn logs(&self) -> String {
        let read = || std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut text = read();
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(20));
            let again = read();
            if again.len() == text.len() {
                break;
            }
            text = again;
        }
        text
    }

    /// SIGKILL: no graceful shutdown, nothing cleaned up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        child.wait().unwrap()
    }
}

impl Drop for ProcessApp {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Polls `check` every 50 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if started.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
