//! No secret ever leaves callrelay: it runs with known secrets and debug logging for every
//! crate, every error path is driven, and the logs, the metrics and every answer are searched
//! for each secret.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::json;

use crate::helpers::redis::RedisServer;
use crate::helpers::*;

const BASIC_ACCOUNT: &str = "AC22222222222222222222222222222222";
const BASIC_PASSWORD: &str = "basic-password-never-shown";
const SHARED_KEY: &str = "shared-key-secret";
const REDIS_PASSWORD: &str = "redis-password-never-shown";

#[tokio::test]
async fn secrets_never_appear_in_logs_metrics_or_answers() {
    let redis = RedisServer::start_with_password(Some(REDIS_PASSWORD));
    let accounts = format!(
        r#"
[[accounts]]
sid = "{ACCOUNT}"
auth_token = "{AUTH_TOKEN}"
secondary_auth_token = "{SECONDARY_AUTH_TOKEN}"
shared_keys = [{{ id = "k1", secret = "{SHARED_KEY}" }}]
api_keys = [{{ sid = "{API_KEY}", secret = "{API_SECRET}" }}]

[[accounts]]
sid = "{OTHER_ACCOUNT}"
auth_token = "{OTHER_AUTH_TOKEN}"
api_keys = [{{ sid = "{OTHER_API_KEY}", secret = "{OTHER_API_SECRET}" }}]

[[accounts]]
sid = "{BASIC_ACCOUNT}"
require_signature = false
webhook_username = "twilio"
webhook_password = "{BASIC_PASSWORD}"
"#
    );
    let config = TestConfig {
        engine: Engine::RedisAt(redis.url()),
        accounts: Some(accounts),
        ..TestConfig::default()
    };
    let app = ProcessApp::start_with_env(
        &config,
        &[("RUST_LOG", "debug"), ("CALLRELAY__LOG__FORMAT", "json")],
    )
    .await;
    let http = reqwest::Client::new();
    let mut seen = Vec::<String>::new();
    let mut record = |r: Answer| {
        seen.push(format!("{} {:?} {}", r.status, r.headers, r.text));
    };

    let bob = token("bob");
    let expired = callrelay::auth::access_token::mint_at(
        &callrelay::domain::AccountSid::parse(ACCOUNT).unwrap(),
        &callrelay::domain::ApiKeySid::parse(API_KEY).unwrap(),
        &callrelay::config::Secret::new(API_SECRET),
        &callrelay::domain::Identity::parse("bob").unwrap(),
        (time::OffsetDateTime::now_utc().unix_timestamp() - 7200) as u64,
        Duration::from_secs(3600),
    );
    let wrong_secret = mint(
        ACCOUNT,
        API_KEY,
        "not-the-secret",
        "bob",
        Duration::from_secs(600),
    );
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("twilio:{BASIC_PASSWORD}"))
    );
    let wrong_basic = format!("Basic {}", STANDARD.encode("twilio:nope"));

    // A live socket and a binding-less identity, so webhooks take both the 200 and 404 paths.
    let mut socket = WsClient::connect(&app.base, &bob, None).await.unwrap();

    let webhook = |body: Vec<u8>, token: Option<&str>, extra: Option<(&'static str, String)>| {
        let url = format!("{}{}", app.base, webhook_path(&body));
        let mut request = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            request = request.header("x-twilio-signature", sign(t, &url));
        }
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        request.send()
    };
    for (body, token, extra) in [
        (payload(ACCOUNT, "bob"), Some(AUTH_TOKEN), None),
        (payload(ACCOUNT, "nobody"), Some(SECONDARY_AUTH_TOKEN), None),
        (payload(ACCOUNT, "bob"), Some("wrong-token"), None),
        (payload(ACCOUNT, "bob"), Some(OTHER_AUTH_TOKEN), None),
        (payload(ACCOUNT, "bob"), None, None),
        (payload(UNCONFIGURED_ACCOUNT, "bob"), Some(AUTH_TOKEN), None),
        (b"{not json".to_vec(), Some(AUTH_TOKEN), None),
        (vec![b' '; 70_000], Some(AUTH_TOKEN), None),
        (
            payload(ACCOUNT, "bob"),
            Some(SHARED_KEY),
            Some((
                "x-twilio-webhooks-signature-settings",
                "key=k1,algorithm=HMAC_SHA256".into(),
            )),
        ),
        (
            payload(ACCOUNT, "bob"),
            Some(AUTH_TOKEN),
            Some((
                "x-twilio-webhooks-signature-settings",
                "key=nope,algorithm=HMAC_SHA256".into(),
            )),
        ),
        (
            payload(BASIC_ACCOUNT, "bob"),
            None,
            Some(("authorization", basic.clone())),
        ),
        (
            payload(BASIC_ACCOUNT, "bob"),
            None,
            Some(("authorization", wrong_basic.clone())),
        ),
    ] {
        record(answer(webhook(body, token, extra).await.unwrap()).await);
    }
    assert!(socket.next_text(Duration::from_secs(5)).await.is_some());

    let api =
        |method: Method, path: &str, auth: Option<String>, body: Option<serde_json::Value>| {
            let mut request = http.request(method, format!("{}{path}", app.base));
            if let Some(a) = auth {
                request = request.header("authorization", a);
            }
            if let Some(b) = body {
                request = request.json(&b);
            }
            request.send()
        };
    for (method, path, auth, body) in [
        (
            Method::GET,
            "/v1/bindings",
            Some(format!("Bearer {bob}")),
            None,
        ),
        (
            Method::GET,
            "/v1/bindings",
            Some(format!("Bearer {expired}")),
            None,
        ),
        (
            Method::GET,
            "/v1/bindings",
            Some(format!("Bearer {wrong_secret}")),
            None,
        ),
        (
            Method::GET,
            "/v1/bindings",
            Some(format!("Bearer {ADMIN_KEY}")),
            None,
        ),
        (
            Method::GET,
            &format!("/v1/bindings?account_sid={ACCOUNT}&identity=bob"),
            Some(format!("Bearer {ADMIN_KEY}")),
            None,
        ),
        (
            Method::GET,
            "/v1/bindings",
            Some(format!("Bearer {ADMIN_KEY}x")),
            None,
        ),
        (
            Method::GET,
            "/v1/bindings",
            Some(format!("Basic {ADMIN_KEY}")),
            None,
        ),
        (
            Method::GET,
            "/v1/bindings",
            Some(format!("Bearer {API_SECRET}")),
            None,
        ),
        (
            Method::POST,
            "/v1/bindings",
            Some(format!("Bearer {bob}")),
            Some(json!({"channel": "fcm", "address": "t"})),
        ),
        (
            Method::POST,
            "/v1/bindings",
            Some(format!("Bearer {bob}")),
            Some(json!({"channel": "fcm", "address": API_SECRET})),
        ),
        (
            Method::PUT,
            "/v1/bindings/x",
            Some(format!("Bearer {bob}")),
            Some(json!({"identity": "alice", "channel": "fcm", "address": "t"})),
        ),
        (
            Method::DELETE,
            "/v1/bindings/x",
            Some(format!("Bearer {bob}")),
            None,
        ),
    ] {
        record(answer(api(method, path, auth, body).await.unwrap()).await);
    }
    for credential in [wrong_secret.as_str(), "garbage", ADMIN_KEY] {
        if let Err(tokio_tungstenite::tungstenite::Error::Http(response)) =
            WsClient::connect(&app.base, credential, None).await
        {
            seen.push(format!(
                "{:?} {}",
                response.headers(),
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
            ));
        } else {
            panic!("a bad credential must not open a socket");
        }
    }
    let metrics = http
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    socket.close().await;
    let logs = app.logs();
    assert!(
        logs.contains("webhook authentication failed"),
        "the failures were logged"
    );
    assert!(logs.contains("\"level\":\"DEBUG\""), "debug logging was on");

    let secrets = [
        AUTH_TOKEN,
        SECONDARY_AUTH_TOKEN,
        OTHER_AUTH_TOKEN,
        SHARED_KEY,
        API_SECRET,
        OTHER_API_SECRET,
        ADMIN_KEY,
        BASIC_PASSWORD,
        REDIS_PASSWORD,
        &bob,
        &expired,
        &wrong_secret,
        &basic["Basic ".len()..],
    ];
    for (place, text) in [("logs", logs.as_str()), ("metrics", metrics.as_str())]
        .into_iter()
        .chain(seen.iter().map(|s| ("an answer", s.as_str())))
    {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "a secret ({}…) appears in {place}",
                &secret[..6]
            );
        }
    }
}
