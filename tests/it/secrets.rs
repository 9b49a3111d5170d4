//! No secret ever leaves callrelay: it runs with known secrets and debug logging for every
//! crate, every error path is driven, and the logs, the metrics and every answer are searched
//! for each secret.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use callrelay::auth::signature::SignatureAlgorithm;
use reqwest::Method;
use serde_json::json;

use crate::apns::{KEY_ID, TEAM, TOPIC};
use crate::helpers::redis::RedisServer;
use crate::helpers::*;
use callrelay_testkit::apns::{MockApns, Reply as ApnsReply, TeamKey};
use callrelay_testkit::fcm::{MockFcm, Reply as FcmReply};

const BASIC_ACCOUNT: &str = "AC22222222222222222222222222222222";
const BASIC_PASSWORD: &str = "basic-password-never-shown";
const SHARED_KEY: &str = "shared-key-secret";
const REDIS_PASSWORD: &str = "redis-password-never-shown";

/// The webhook accounts of these tests: signatures with both Auth Tokens and a shared key, and
/// one account that takes HTTP Basic credentials instead.
fn accounts() -> String {
    format!(
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
    )
}

#[tokio::test]
async fn secrets_never_appear_in_logs_metrics_or_answers() {
    let redis = RedisServer::start_with_password(Some(REDIS_PASSWORD));
    // Push apps with real keys, against the local mocks: their keys and tokens are secrets too.
    let team_key = TeamKey::generate(TEAM, KEY_ID);
    let apns = MockApns::token_auth(&[&team_key]).await;
    let fcm = MockFcm::start().await;
    let config = TestConfig {
        engine: Engine::RedisAt(redis.url()),
        accounts: Some(accounts()),
        extra: apns.token_app("ios", TOPIC, &team_key, "")
            + &fcm.app_toml("android", "voice-project"),
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

    // A live socket, an APNs and an FCM binding for bob, and a binding-less identity, so
    // webhooks take the 200, 404 and push paths; the push services refuse some of them.
    let mut socket = WsClient::connect(&app.base, &bob, None).await.unwrap();
    for binding in [
        json!({"channel": "apns", "address": APNS_TOKEN}),
        json!({"channel": "fcm", "address": "fcm-token:secret-test"}),
    ] {
        let r = answer(
            http.post(format!("{}/v1/bindings", app.base))
                .bearer_auth(&bob)
                .json(&binding)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.text);
    }
    apns.script([
        ApnsReply::error(403, "InvalidProviderToken"),
        ApnsReply::error(500, "InternalServerError"),
    ]);
    fcm.answer([FcmReply::error("INVALID_ARGUMENT")]);
    fcm.revoke_tokens();

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
            Some(json!({"channel": "sms", "address": API_SECRET})),
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
    // Browsers put the token in the query; it must not be logged with the request's URI.
    let query_token = token("bob-in-a-browser");
    let query_socket =
        WsClient::connect(&app.base, "", Some(&format!("access_token={query_token}")))
            .await
            .expect("a socket with the token in the query opens");
    query_socket.close().await;
    let refused_in_query = format!("access_token={wrong_secret}&device_id=web");
    for (credential, query) in [
        (wrong_secret.as_str(), None),
        ("garbage", None),
        (ADMIN_KEY, None),
        ("", Some(refused_in_query.as_str())),
    ] {
        if let Err(tokio_tungstenite::tungstenite::Error::Http(response)) =
            WsClient::connect(&app.base, credential, query).await
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

    let mut push_tokens: Vec<String> = apns.distinct_bearer_tokens();
    push_tokens.extend(fcm.sent().iter().filter_map(|s| {
        s.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
    }));
    assert!(!push_tokens.is_empty(), "the push services were reached");
    // A line from the middle of each private key.
    let p8_line = team_key.p8_pem.lines().nth(1).unwrap().to_owned();
    let fcm_key_line = callrelay_testkit::fcm::PRIVATE_KEY
        .lines()
        .nth(5)
        .unwrap()
        .to_owned();
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
        &query_token,
        &expired,
        &wrong_secret,
        &basic["Basic ".len()..],
        &p8_line,
        &fcm_key_line,
    ];
    for (place, text) in [("logs", logs.as_str()), ("metrics", metrics.as_str())]
        .into_iter()
        .chain(seen.iter().map(|s| ("an answer", s.as_str())))
    {
        for secret in secrets
            .iter()
            .copied()
            .chain(push_tokens.iter().map(String::as_str))
        {
            assert!(
                !text.contains(secret),
                "a secret ({}…) appears in {place}: {}",
                &secret[..6],
                if place == "an answer" { text } else { "" }
            );
        }
    }
}

/// Every webhook refusal is a `403` whose log line (found by the request's id) says which check
/// failed, and holds no secret: not the account's, nor the wrong one a caller sent. A request
/// without the Basic credentials an account requires is Twilio's first try: a `401` and a
/// debug line.
#[tokio::test]
async fn each_webhook_refusal_logs_its_reason_without_the_secret() {
    const WRONG_PASSWORD: &str = "wrong-basic-password-never-shown";
    const WRONG_TOKEN: &str = "wrong-auth-token-never-shown";
    let config = TestConfig {
        accounts: Some(accounts()),
        ..TestConfig::default()
    };
    let app = ProcessApp::start_with_env(&config, &[("CALLRELAY__LOG__FORMAT", "json")]).await;
    let http = reqwest::Client::new();
    let basic = |password: &str| format!("Basic {}", STANDARD.encode(format!("twilio:{password}")));

    struct Case {
        id: &'static str,
        account: &'static str,
        /// Signed with this key (over the URL with the body's hash unless `hash_of` is set).
        key: Option<&'static str>,
        hash_of: Option<&'static [u8]>,
        headers: Vec<(&'static str, String)>,
        status: u16,
        problem: &'static str,
        level: &'static str,
        logged: &'static str,
    }
    let cases = [
        Case {
            id: "signature-mismatch",
            account: ACCOUNT,
            key: Some(WRONG_TOKEN),
            hash_of: None,
            headers: vec![],
            status: 403,
            problem: "webhook-authentication-failed",
            level: "WARN",
            logged: "the signature does not match",
        },
        Case {
            id: "body-hash-mismatch",
            account: ACCOUNT,
            key: Some(AUTH_TOKEN),
            hash_of: Some(b"{}"),
            headers: vec![],
            status: 403,
            problem: "webhook-authentication-failed",
            level: "WARN",
            logged: "bodySHA256 does not match the body",
        },
        Case {
            id: "missing-signature",
            account: ACCOUNT,
            key: None,
            hash_of: None,
            headers: vec![],
            status: 403,
            problem: "webhook-authentication-failed",
            level: "WARN",
            logged: "no X-Twilio-Signature header",
        },
        Case {
            id: "unknown-shared-key",
            account: ACCOUNT,
            key: Some(SHARED_KEY),
            hash_of: None,
            headers: vec![(
                "x-twilio-webhooks-signature-settings",
                "key=nope,algorithm=HMAC_SHA256".into(),
            )],
            status: 403,
            problem: "webhook-authentication-failed",
            level: "WARN",
            logged: "names unknown shared key `nope`",
        },
        Case {
            id: "wrong-basic",
            account: BASIC_ACCOUNT,
            key: None,
            hash_of: None,
            headers: vec![("authorization", basic(WRONG_PASSWORD))],
            status: 403,
            problem: "webhook-authentication-failed",
            level: "WARN",
            logged: "wrong HTTP Basic credentials",
        },
        Case {
            id: "missing-basic",
            account: BASIC_ACCOUNT,
            key: None,
            hash_of: None,
            headers: vec![],
            status: 401,
            problem: "webhook-authentication-required",
            level: "DEBUG",
            logged: "webhook without Basic credentials",
        },
        Case {
            id: "unknown-account",
            account: UNCONFIGURED_ACCOUNT,
            key: Some(AUTH_TOKEN),
            hash_of: None,
            headers: vec![],
            status: 403,
            problem: "unknown-account",
            level: "WARN",
            logged: "webhook for an account that is not configured",
        },
    ];
    let secrets = [
        AUTH_TOKEN,
        SECONDARY_AUTH_TOKEN,
        SHARED_KEY,
        BASIC_PASSWORD,
        WRONG_PASSWORD,
        WRONG_TOKEN,
        &basic(BASIC_PASSWORD)["Basic ".len()..],
        &basic(WRONG_PASSWORD)["Basic ".len()..],
    ];
    for case in &cases {
        let body = payload(case.account, "bob");
        let path = webhook_path(case.hash_of.unwrap_or(&body));
        let url = format!("{}{path}", app.base);
        let mut request = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-request-id", case.id)
            .body(body);
        if let Some(key) = case.key {
            let alg = if case.headers.is_empty() {
                SignatureAlgorithm::HmacSha1
            } else {
                SignatureAlgorithm::HmacSha256
            };
            let signature = callrelay::auth::signature::compute(alg, key.as_bytes(), &url, &[]);
            request = request.header("x-twilio-signature", signature);
        }
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let r = answer(request.send().await.unwrap()).await;
        assert_eq!(r.status.as_u16(), case.status, "{}: {}", case.id, r.text);
        assert_eq!(
            r.body["type"],
            format!("urn:callrelay:problem:{}", case.problem),
            "{}",
            case.id
        );
        assert!(
            !r.text.contains(case.logged),
            "{}: the reason is only logged",
            case.id
        );

        let logs = app.logs();
        let lines: Vec<&str> = logs
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
                    v["request_id"] == case.id
                        && v["level"] == case.level
                        && v["message"] != "answered"
                })
            })
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: one line for the request: {logs}",
            case.id
        );
        assert!(lines[0].contains(case.logged), "{}: {}", case.id, lines[0]);
        // Nor the query string, whose bodySHA256 helps nobody reading the log.
        assert!(
            !lines[0].contains("bodySHA256=") && !lines[0].contains('?'),
            "{}: the query string is logged: {}",
            case.id,
            lines[0]
        );
        for secret in secrets {
            assert!(
                !lines[0].contains(secret),
                "{}: a secret ({}…) is logged: {}",
                case.id,
                &secret[..6],
                lines[0]
            );
        }
    }
    // Nothing anywhere in the log holds a secret either.
    let logs = app.logs();
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "a secret ({}…) is logged",
            &secret[..6]
        );
    }
}
