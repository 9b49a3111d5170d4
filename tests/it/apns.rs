//! The APNs channel through the real webhook, against the local APNs mock (HTTP/2 over TLS,
//! provider tokens checked against the team's public key, client certificates checked by TLS).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use callrelay::domain::{Binding, PushChannel};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use callrelay_testkit::apns::{MockApns, Recorded, Reply, TeamKey};
use callrelay_testkit::tls::{TestCa, temp_file};
use tempfile::TempPath;

pub(crate) const TOPIC: &str = "com.example.voice";
pub(crate) const TEAM: &str = "TEAM123456";
pub(crate) const KEY_ID: &str = "KEY1234567";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn toml_str(s: impl AsRef<str>) -> String {
    // TOML basic strings share JSON's escapes.
    serde_json::to_string(s.as_ref()).unwrap()
}

fn path_str(p: &Path) -> String {
    toml_str(p.to_str().unwrap())
}

pub(crate) struct Setup {
    pub app: TestApp,
    pub apns: MockApns,
}

/// callrelay with one token-auth APNs app `ios`, `extra` added to its table.
pub(crate) async fn start(extra: &str) -> Setup {
    start_with(extra, TestConfig::default()).await
}

async fn start_with(extra: &str, config: TestConfig) -> Setup {
    let key = TeamKey::generate(TEAM, KEY_ID);
    let apns = MockApns::token_auth(&[&key]).await;
    let app = spawn_with(TestConfig {
        extra: apns.token_app("ios", TOPIC, &key, extra),
        ..config
    })
    .await;
    Setup { app, apns }
}

/// The value of one series in the Prometheus text, if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn push_result(text: &str, app: &str, result: &str) -> f64 {
    metric(
        text,
        &format!(r#"callrelay_push_results_total{{app="{app}",channel="apns",result="{result}"}}"#),
    )
    .unwrap_or(0.0)
}

fn header_u64(r: &Recorded, name: &str) -> u64 {
    r.header(name).parse().unwrap()
}

fn assert_expiration_in_window(r: &Recorded, window: u64) {
    let now = unix_now();
    let exp = header_u64(r, "apns-expiration");
    assert!(
        (now + window - 2..=now + window + 2).contains(&exp),
        "apns-expiration {exp} is not now ({now}) + {window} s"
    );
}

#[tokio::test]
async fn voip_push_carries_apples_headers_and_the_webhook_bytes() {
    let s = start("").await;
    let binding = s.app.register_apns("bob", APNS_TOKEN).await;
    let body = payload(ACCOUNT, "bob");
    let answer = s.app.webhook(body.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        answer.body,
        json!({"delivered": 1, "failed": 0, "removed": 0})
    );

    let requests = s.apns.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.prefix, "/prod");
    assert_eq!(r.device_token, APNS_TOKEN);
    assert_eq!(r.version, axum::http::Version::HTTP_2);
    assert_eq!(r.header("apns-topic"), "com.example.voice.voip");
    assert_eq!(r.header("apns-push-type"), "voip");
    assert_eq!(r.header("apns-priority"), "10");
    assert_expiration_in_window(r, 30);
    assert_eq!(
        r.verified_key_id.as_deref(),
        Some(KEY_ID),
        "the provider token must verify against the team's key"
    );
    assert_eq!(&r.body[..], &body[..], "VoIP bodies are the webhook bytes");

    // A delivered push extends the binding's life.
    let refreshed = eventually(Duration::from_secs(2), || async {
        let b = s.app.get_binding("bob", binding.id.as_str()).await;
        let b: Binding = serde_json::from_value(b.body).unwrap();
        b.updated_at != binding.updated_at && b.expires_at != binding.expires_at
    })
    .await;
    assert!(refreshed, "the binding's expiry was not refreshed");

    let m = s.app.metrics().await;
    assert_eq!(push_result(&m, "ios", "success"), 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            r#"callrelay_deliveries_total{channel="apns",outcome="delivered"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn ringing_window_sets_the_expiration() {
    let s = start("ringing_window_secs = 45").await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    assert_eq!(s.app.notify("bob").await.status, StatusCode::OK);
    assert_expiration_in_window(&s.apns.requests()[0], 45);
}

/// Every member of the webhook payload is in `got` with the same value, and `got` has `aps`.
fn assert_members_kept(sent: &[u8], got: &[u8]) -> Value {
    let sent: Value = serde_json::from_slice(sent).unwrap();
    let got: Value = serde_json::from_slice(got).unwrap();
    let (sent, got_obj) = (sent.as_object().unwrap(), got.as_object().unwrap());
    for (k, v) in sent {
        assert_eq!(got_obj.get(k), Some(v), "member {k}");
    }
    assert_eq!(got_obj.len(), sent.len() + 1, "only aps is added");
    got["aps"].clone()
}

#[tokio::test]
async fn alert_and_background_pushes_add_aps_to_the_payload() {
    let s = start(r#"alert_template = "{from} is calling""#).await;
    s.app
        .register(
            "bob",
            PushChannel::Apns,
            APNS_TOKEN,
            json!({"push_type": "alert"}),
        )
        .await;
    s.app
        .register(
            "carol",
            PushChannel::Apns,
            APNS_TOKEN_2,
            json!({"push_type": "background"}),
        )
        .await;
    let to_bob = payload(ACCOUNT, "bob");
    let to_carol = payload(ACCOUNT, "carol");
    assert_eq!(s.app.webhook(to_bob.clone()).await.status, StatusCode::OK);
    assert_eq!(s.app.webhook(to_carol.clone()).await.status, StatusCode::OK);

    let requests = s.apns.requests();
    let alert = requests
        .iter()
        .find(|r| r.device_token == APNS_TOKEN)
        .unwrap();
    assert_eq!(alert.header("apns-topic"), TOPIC);
    assert_eq!(alert.header("apns-push-type"), "alert");
    assert_eq!(alert.header("apns-priority"), "10");
    assert_expiration_in_window(alert, 30);
    let aps = assert_members_kept(&to_bob, &alert.body);
    // `twi_from` is `client:alice`; the prefix is not shown to people.
    assert_eq!(
        aps,
        json!({"alert": {"body": "alice is calling"}, "sound": "default"})
    );
    // The original bytes come first, untouched.
    assert_eq!(&alert.body[..to_bob.len() - 1], &to_bob[..to_bob.len() - 1]);

    let background = requests
        .iter()
        .find(|r| r.device_token == APNS_TOKEN_2)
        .unwrap();
    assert_eq!(background.header("apns-topic"), TOPIC);
    assert_eq!(background.header("apns-push-type"), "background");
    assert_eq!(background.header("apns-priority"), "5");
    let aps = assert_members_kept(&to_carol, &background.body);
    assert_eq!(aps, json!({"content-available": 1}));
}

#[tokio::test]
async fn sandbox_and_production_bindings_go_to_their_hosts() {
    let s = start("").await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    s.app
        .register(
            "bob",
            PushChannel::Apns,
            APNS_TOKEN_2,
            json!({"apns_environment": "sandbox"}),
        )
        .await;
    let answer = s.app.notify("bob").await;
    assert_eq!(
        answer.body,
        json!({"delivered": 2, "failed": 0, "removed": 0})
    );
    let mut routes: Vec<(String, String)> = s
        .apns
        .requests()
        .into_iter()
        .map(|r| (r.device_token, r.prefix))
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        vec![
            (APNS_TOKEN.to_string(), "/prod".to_string()),
            (APNS_TOKEN_2.to_string(), "/sandbox".to_string()),
        ]
    );
}

async fn dead_token_removes_the_binding(status: u16, reason: &'static str) {
    let s = start("").await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    s.apns.script([Reply::error(status, reason)]);
    let answer = s.app.notify("bob").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);
    assert_eq!(
        answer.body,
        json!({"delivered": 0, "failed": 0, "removed": 1})
    );
    assert_eq!(s.apns.request_count(), 1, "a dead token is not retried");
    assert!(s.app.bindings_of("bob").await.is_empty());
    let next = s.app.notify("bob").await;
    assert_eq!(next.status, StatusCode::NOT_FOUND);
    assert_eq!(next.body["type"], "urn:callrelay:problem:no-binding");
    assert_eq!(s.apns.request_count(), 1);
    let m = s.app.metrics().await;
    assert_eq!(push_result(&m, "ios", reason), 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            r#"callrelay_deliveries_total{channel="apns",outcome="removed"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn unregistered_token_removes_the_binding() {
    dead_token_removes_the_binding(410, "Unregistered").await;
}

#[tokio::test]
async fn bad_device_token_removes_the_binding() {
    dead_token_removes_the_binding(400, "BadDeviceToken").await;
}

#[tokio::test]
async fn token_for_another_topic_removes_the_binding() {
    dead_token_removes_the_binding(400, "DeviceTokenNotForTopic").await;
}

#[tokio::test]
async fn service_unavailable_is_retried_then_delivered() {
    let s = start("").await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    s.apns.script([Reply::error(503, "ServiceUnavailable")]);
    let body = payload(ACCOUNT, "bob");
    let started = Instant::now();
    let answer = s.app.webhook(body.clone()).await;
    // The backoff is short: the first retry follows within tens of milliseconds.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        answer.body,
        json!({"delivered": 1, "failed": 0, "removed": 0})
    );
    let requests = s.apns.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.body == body));
    let m = s.app.metrics().await;
    assert_eq!(push_result(&m, "ios", "ServiceUnavailable"), 1.0, "{m}");
    assert_eq!(push_result(&m, "ios", "success"), 1.0, "{m}");
}

#[tokio::test]
async fn other_refusals_fail_with_apples_reason_and_keep_the_binding() {
    let s = start("").await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    s.apns.script([Reply::error(400, "BadTopic")]);
    let answer = s.app.notify("bob").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text);
    assert_eq!(
        answer.body,
        json!({"delivered": 0, "failed": 1, "removed": 0})
    );
    assert_eq!(s.apns.request_count(), 1, "a bad request is not retried");
    assert_eq!(s.app.bindings_of("bob").await.len(), 1);
    let m = s.app.metrics().await;
    assert_eq!(push_result(&m, "ios", "BadTopic"), 1.0, "{m}");
}

#[tokio::test]
async fn slow_apns_fails_within_the_webhook_deadline() {
    let s = start_with(
        "",
        TestConfig {
            deadline_ms: 500,
            ..TestConfig::default()
        },
    )
    .await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    s.apns.script([Reply::ok().after(Duration::from_secs(3))]);
    let started = Instant::now();
    let answer = s.app.notify("bob").await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text);
    assert_eq!(
        answer.body,
        json!({"delivered": 0, "failed": 1, "removed": 0})
    );
    assert!(
        took < Duration::from_millis(800),
        "answered after {took:?}, deadline 500 ms"
    );
    assert!(
        took >= Duration::from_millis(400),
        "gave up early: {took:?}"
    );
    let m = s.app.metrics().await;
    assert_eq!(push_result(&m, "ios", "timeout"), 1.0, "{m}");
}

#[tokio::test]
async fn concurrent_pushes_share_one_connection_and_one_provider_token() {
    const N: usize = 60;
    let s = start("connections = 1").await;
    let identities: Vec<String> = (0..N).map(|i| format!("user{i}")).collect();
    let addresses: Vec<String> = (0..N).map(|i| format!("{i:064x}")).collect();
    join_all(
        identities
            .iter()
            .zip(&addresses)
            .map(|(id, address)| s.app.register_apns(id, address)),
    )
    .await;
    let answers = join_all(identities.iter().map(|id| s.app.notify(id))).await;
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }
    let requests = s.apns.requests();
    assert_eq!(requests.len(), N);
    let mut tokens: Vec<&str> = requests.iter().map(|r| r.device_token.as_str()).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), N, "each binding got its push");
    assert_eq!(
        s.apns.connection_count(),
        1,
        "one HTTP/2 connection multiplexes every push"
    );
    assert_eq!(s.apns.distinct_bearer_tokens().len(), 1);
}

#[tokio::test]
async fn several_connections_are_used_in_turn() {
    let s = start("connections = 3").await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    for _ in 0..6 {
        assert_eq!(s.app.notify("bob").await.status, StatusCode::OK);
    }
    assert_eq!(s.apns.connection_count(), 3);
    assert_eq!(
        s.apns.distinct_bearer_tokens().len(),
        1,
        "connections share the app's provider token"
    );
}

#[tokio::test]
async fn the_provider_token_is_signed_once_and_reused() {
    let s = start("").await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    s.app
        .register(
            "carol",
            PushChannel::Apns,
            APNS_TOKEN_2,
            json!({"apns_environment": "sandbox"}),
        )
        .await;
    for i in 0..10 {
        let who = if i % 2 == 0 { "bob" } else { "carol" };
        assert_eq!(s.app.notify(who).await.status, StatusCode::OK);
    }
    let requests = s.apns.requests();
    assert_eq!(requests.len(), 10);
    assert!(
        requests
            .iter()
            .all(|r| r.verified_key_id.as_deref() == Some(KEY_ID))
    );
    assert_eq!(
        s.apns.distinct_bearer_tokens().len(),
        1,
        "one JWT for every push, both environments"
    );
    let m = s.app.metrics().await;
    assert_eq!(
        metric(&m, r#"callrelay_push_auth_tokens_total{app="ios"}"#),
        Some(1.0),
        "{m}"
    );
}

/// Apple allows one provider-token update per 20 minutes, so a token refused while younger
/// than that is kept: the push fails with Apple's reason and the same token carries on. (Renewal
/// of an older refused token is unit-tested with the cache's clock in `channels::apns::token`.)
#[tokio::test]
async fn a_refused_provider_token_younger_than_twenty_minutes_is_not_re_signed() {
    let s = start("").await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    s.apns.script([
        Reply::error(403, "ExpiredProviderToken"),
        Reply::error(403, "InvalidProviderToken"),
    ]);
    for _ in 0..2 {
        let answer = s.app.notify("bob").await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text);
        let body: Value = serde_json::from_str(&answer.text).unwrap();
        assert_eq!(body["failed"], 1, "{body}");
    }
    // One request per push: no retry with a new token.
    assert_eq!(s.apns.request_count(), 2);
    // Apple accepts it again: the same token carries on.
    assert_eq!(s.app.notify("bob").await.status, StatusCode::OK);
    assert_eq!(s.apns.request_count(), 3);
    assert_eq!(s.apns.distinct_bearer_tokens().len(), 1);
    let m = s.app.metrics().await;
    assert_eq!(
        metric(&m, r#"callrelay_push_auth_tokens_total{app="ios"}"#),
        Some(1.0),
        "{m}"
    );
    assert_eq!(push_result(&m, "ios", "ExpiredProviderToken"), 1.0);
    assert_eq!(push_result(&m, "ios", "InvalidProviderToken"), 1.0);
}

/// A client certificate issued by `client_ca`, with its PEM files.
struct ClientCert {
    key_pem: String,
    cert_der: Vec<u8>,
    cert_file: tempfile::TempPath,
    key_file: tempfile::TempPath,
}

fn client_cert(client_ca: &TestCa) -> ClientCert {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let issued = client_ca.issue(&["callrelay"], "Apple VoIP Services: com.example.voice");
    ClientCert {
        cert_der: CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
            .unwrap()
            .to_vec(),
        cert_file: temp_file("voip.pem", &issued.cert_pem),
        key_file: temp_file("voip.key", &issued.key_pem),
        key_pem: issued.key_pem,
    }
}

fn not_after(cert_der: &[u8]) -> i64 {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    cert.validity().not_after.timestamp()
}

fn cert_app(apns: &MockApns, auth: &str) -> String {
    format!(
        r#"
[[apps]]
name = "ios"
channel = "apns"
topic = "{TOPIC}"
production_url = "{prod}"
sandbox_url = "{sandbox}"
ca_file = {ca}
{auth}
"#,
        prod = apns.url("/prod"),
        sandbox = apns.url("/sandbox"),
        ca = path_str(&apns.ca.ca_file),
    )
}

/// `auth` gives the app's authentication settings and the files they name, kept until the
/// app has read them.
async fn certificate_auth_delivers(auth: impl FnOnce(&ClientCert) -> (String, Vec<TempPath>)) {
    let client_ca = TestCa::new("apns-client");
    let cert = client_cert(&client_ca);
    let apns = MockApns::certificate_auth(&client_ca).await;
    let (settings, _files) = auth(&cert);
    let app = spawn_with(TestConfig {
        extra: cert_app(&apns, &settings),
        ..TestConfig::default()
    })
    .await;
    app.register_apns("bob", APNS_TOKEN).await;
    let answer = app.notify("bob").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let requests = apns.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].client_certificate.as_deref(),
        Some(&cert.cert_der[..]),
        "the mock saw callrelay's client certificate"
    );
    assert!(
        requests[0].bearer.is_none(),
        "no provider token with certificate authentication"
    );
    assert_eq!(requests[0].header("apns-topic"), "com.example.voice.voip");
    let m = app.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"callrelay_apns_certificate_expiry_timestamp_seconds{app="ios"}"#
        ),
        Some(not_after(&cert.cert_der) as f64),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"callrelay_push_auth_tokens_total{app="ios"}"#),
        None
    );
}

#[tokio::test]
async fn certificate_auth_with_a_pem_pair() {
    certificate_auth_delivers(|c| {
        let settings = format!(
            "cert_file = {}\nprivate_key_file = {}",
            path_str(&c.cert_file),
            path_str(&c.key_file)
        );
        (settings, Vec::new())
    })
    .await;
}

#[tokio::test]
async fn certificate_auth_with_an_inline_private_key() {
    certificate_auth_delivers(|c| {
        let settings = format!(
            "cert_file = {}\nprivate_key = {}",
            path_str(&c.cert_file),
            toml_str(&c.key_pem)
        );
        (settings, Vec::new())
    })
    .await;
}

fn pkcs12(cert: &ClientCert, password: &str) -> Vec<u8> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let chain = PrivateKeyChain::new(
        b"voip".as_slice(),
        PrivateKey::from_der(key.secret_der()).unwrap(),
        [Certificate::from_der(&cert.cert_der).unwrap()],
    );
    let mut store = KeyStore::new();
    store.add_entry("voip", KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().unwrap()
}

#[tokio::test]
async fn certificate_auth_with_pkcs12() {
    certificate_auth_delivers(|c| {
        let file = temp_file("voip.p12", pkcs12(c, "s3cret"));
        let password = temp_file("p12-password", "s3cret\n");
        let settings = format!(
            "pkcs12_file = {}\npkcs12_password_file = {}",
            path_str(&file),
            path_str(&password)
        );
        (settings, vec![file, password])
    })
    .await;
}

#[tokio::test]
async fn a_client_without_a_certificate_cannot_push_to_a_certificate_server() {
    let client_ca = TestCa::new("apns-client");
    let apns = MockApns::certificate_auth(&client_ca).await;
    let key = TeamKey::generate(TEAM, KEY_ID);
    let app = spawn_with(TestConfig {
        extra: apns.token_app("ios", TOPIC, &key, ""),
        deadline_ms: 600,
        ..TestConfig::default()
    })
    .await;
    app.register_apns("bob", APNS_TOKEN).await;
    let answer = app.notify("bob").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text);
    assert_eq!(apns.request_count(), 0, "TLS refused the connection");
    let m = app.metrics().await;
    assert!(push_result(&m, "ios", "connection_error") >= 1.0, "{m}");
    assert_eq!(app.bindings_of("bob").await.len(), 1);
}

#[tokio::test]
async fn oversize_payloads_are_refused_without_being_sent() {
    let s = start("").await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    s.app
        .register(
            "carol",
            PushChannel::Apns,
            APNS_TOKEN_2,
            json!({"push_type": "alert"}),
        )
        .await;
    let padded = |identity: &str, size: usize| {
        let mut body = payload(ACCOUNT, identity);
        body.pop();
        let pad = size - body.len() - r#","pad":""}"#.len();
        body.extend_from_slice(format!(r#","pad":"{}"}}"#, "x".repeat(pad)).as_bytes());
        assert_eq!(body.len(), size);
        body
    };
    // Over the VoIP limit (5120 bytes), well within the webhook's.
    let answer = s.app.webhook(padded("bob", 6000)).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text);
    assert_eq!(
        answer.body,
        json!({"delivered": 0, "failed": 1, "removed": 0})
    );
    // 4500 bytes: too big for an alert (4096), fine for VoIP.
    let answer = s.app.webhook(padded("carol", 4500)).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text);
    assert_eq!(s.apns.request_count(), 0, "nothing was sent");
    assert_eq!(
        s.app.webhook(padded("bob", 4500)).await.status,
        StatusCode::OK
    );
    assert_eq!(s.apns.request_count(), 1);
    assert_eq!(s.app.bindings_of("bob").await.len(), 1);
    let m = s.app.metrics().await;
    assert_eq!(push_result(&m, "ios", "payload_too_large"), 2.0, "{m}");
}

#[tokio::test]
async fn several_apns_apps_push_with_their_own_keys_and_topics() {
    let key_a = TeamKey::generate("TEAMAAAAAA", "KEYAAAAAAA");
    let key_b = TeamKey::generate("TEAMBBBBBB", "KEYBBBBBBB");
    let apns = MockApns::token_auth(&[&key_a, &key_b]).await;
    let app = spawn_with(TestConfig {
        extra: format!(
            "{}{}",
            apns.token_app("voice-a", "com.example.a", &key_a, ""),
            // The second key inline rather than in a file.
            apns.token_app("voice-b", "com.example.b", &key_b, "")
                .replace(
                    &format!("key_file = {}", path_str(&key_b.p8_file)),
                    &format!("key = {}", toml_str(&key_b.p8_pem)),
                )
        ),
        ..TestConfig::default()
    })
    .await;
    app.register(
        "bob",
        PushChannel::Apns,
        APNS_TOKEN,
        json!({"app": "voice-a"}),
    )
    .await;
    app.register(
        "carol",
        PushChannel::Apns,
        APNS_TOKEN_2,
        json!({"app": "voice-b"}),
    )
    .await;
    for who in ["bob", "carol", "bob", "carol"] {
        let answer = app.notify(who).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    let requests = apns.requests();
    assert_eq!(requests.len(), 4);
    for r in &requests {
        let (kid, topic) = if r.device_token == APNS_TOKEN {
            ("KEYAAAAAAA", "com.example.a.voip")
        } else {
            ("KEYBBBBBBB", "com.example.b.voip")
        };
        assert_eq!(r.verified_key_id.as_deref(), Some(kid));
        assert_eq!(r.header("apns-topic"), topic);
    }
    assert_eq!(apns.distinct_bearer_tokens().len(), 2, "one token per app");
    let m = app.metrics().await;
    assert_eq!(push_result(&m, "voice-a", "success"), 2.0, "{m}");
    assert_eq!(push_result(&m, "voice-b", "success"), 2.0, "{m}");
}

fn check_config(extra: &str) -> (Option<i32>, String) {
    let text = TestConfig::default().toml("127.0.0.1:0", "127.0.0.1:0") + extra;
    let path = temp_file("check.toml", &text);
    let out = Command::new(env!("CARGO_BIN_EXE_callrelay"))
        .env_remove("CALLRELAY_CONFIG")
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn check_config_names_the_broken_apns_setting() {
    let key = TeamKey::generate(TEAM, KEY_ID);
    let apns = MockApns::token_auth(&[&key]).await;
    let good = apns.token_app("ios", TOPIC, &key, "");
    let (code, out) = check_config(&good);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("configuration OK"), "{out}");

    let not_a_key = temp_file(
        "AuthKey.p8",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let expired = {
        let mut params = rcgen::CertificateParams::new(vec!["callrelay".to_string()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_577_836_800).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(1_609_459_200).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (
            temp_file("old.pem", cert.pem()),
            temp_file("old.key", key.serialize_pem()),
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            good.replace(&path_str(&key.p8_file), &path_str(&not_a_key)),
            "apps[0].key_file",
            "PKCS#8",
        ),
        (
            good.replace(&format!("topic = \"{TOPIC}\"\n"), ""),
            "apps[0].topic",
            "required",
        ),
        (
            format!("{good}cert_file = \"/etc/voip.pem\"\nprivate_key_file = \"/etc/voip.key\"\n"),
            "apps[0].cert_file",
            "exactly one",
        ),
        (
            cert_app(
                &apns,
                &format!(
                    "cert_file = {}\nprivate_key_file = {}",
                    path_str(&expired.0),
                    path_str(&expired.1)
                ),
            ),
            "apps[0].cert_file",
            "expired",
        ),
        (
            good.replace(&path_str(&apns.ca.ca_file), "\"/nonexistent/ca.pem\""),
            "apps[0].ca_file",
            "cannot read",
        ),
    ];
    for (config, key_name, needle) in cases {
        let (code, out) = check_config(&config);
        assert_eq!(code, Some(2), "{config}\n{out}");
        assert!(out.contains(key_name), "expected {key_name}: {out}");
        assert!(out.contains(needle), "expected {needle}: {out}");
        assert!(out.contains("app `ios`"), "{out}");
        assert!(!out.contains("PRIVATE KEY"), "no key material: {out}");
    }
}
