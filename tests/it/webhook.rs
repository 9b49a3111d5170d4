//! `POST /v1/twilio/call-notifications`: validation, authentication, lookup, dedupe,
//! delivery and answers.

use std::time::Duration;

use callrelay::channels::Outcome;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

async fn webhook_delivers_exact_bytes_to_a_socket(config: TestConfig) {
    let app = spawn_with(config).await;
    let mut bob = app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let answer = app.webhook(body.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        answer.body,
        json!({"delivered": 1, "failed": 0, "removed": 0})
    );
    assert!(answer.headers.contains_key("x-request-id"));
    let frame = bob
        .next_text(WAIT)
        .await
        .expect("bob receives the notification");
    assert_eq!(
        frame.as_bytes(),
        &body[..],
        "payload must arrive byte for byte"
    );
}

#[tokio::test]
async fn delivers_exact_bytes_to_a_socket_on_the_memory_store() {
    webhook_delivers_exact_bytes_to_a_socket(TestConfig::default()).await;
}

#[tokio::test]
async fn delivers_exact_bytes_to_a_socket_on_redis() {
    webhook_delivers_exact_bytes_to_a_socket(TestConfig::redis()).await;
}

#[tokio::test]
async fn payload_formatting_and_unknown_members_survive_untouched() {
    let app = spawn_app().await;
    let mut bob = app.connect_ws("bob").await;
    // Whitespace, escapes, key order, numbers and members callrelay never reads.
    let body = format!(
        "{{ \"twi_to\" : \"client:bob\",\n  \"twi_account_sid\":\"{ACCOUNT}\", \"twi_stir_status\":\"A\",\
         \"n\": 1.50e3, \"nested\": {{\"a\": [true, null, \"\\u00e9\\n\"]}}, \"twi_message_id\":\"RMx1\" }}"
    )
    .into_bytes();
    let answer = app.webhook(body.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(bob.next_text(WAIT).await.unwrap().as_bytes(), &body[..]);
}

#[tokio::test]
async fn no_binding_is_404() {
    let app = spawn_with(TestConfig::redis()).await;
    let answer = app.notify("nobody").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body["type"], "urn:callrelay:problem:no-binding");
    assert_eq!(answer.headers["content-type"], "application/problem+json");
}

#[tokio::test]
async fn unknown_identity_in_a_known_account_is_404_even_when_others_are_bound() {
    let app = spawn_app().await;
    let _bob = app.connect_ws("bob").await;
    assert_eq!(app.notify("carol").await.status, StatusCode::NOT_FOUND);
    // Same identity, other account: not bob's binding either.
    let answer = app.webhook(payload(OTHER_ACCOUNT, "bob")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn each_malformed_input_class_is_400_with_a_reason() {
    let app = spawn_app().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"{\"twi_to\": ".to_vec()),
        ("not an object", b"[1,2,3]".to_vec()),
        ("a string", b"\"client:bob\"".to_vec()),
        ("empty body", Vec::new()),
        ("missing account", br#"{"twi_to":"client:bob"}"#.to_vec()),
        (
            "missing callee",
            format!(r#"{{"twi_account_sid":"{ACCOUNT}"}}"#).into_bytes(),
        ),
        (
            "callee not a string",
            format!(r#"{{"twi_account_sid":"{ACCOUNT}","twi_to":42}}"#).into_bytes(),
        ),
        (
            "callee without client: prefix",
            format!(r#"{{"twi_account_sid":"{ACCOUNT}","twi_to":"+14155551212"}}"#).into_bytes(),
        ),
        (
            "empty identity",
            format!(r#"{{"twi_account_sid":"{ACCOUNT}","twi_to":"client:"}}"#).into_bytes(),
        ),
        (
            "account sid malformed",
            br#"{"twi_account_sid":"AC123","twi_to":"client:bob"}"#.to_vec(),
        ),
        (
            "account sid not a string",
            br#"{"twi_account_sid":true,"twi_to":"client:bob"}"#.to_vec(),
        ),
        (
            "message id not a string",
            format!(
                r#"{{"twi_account_sid":"{ACCOUNT}","twi_to":"client:bob","twi_message_id":1}}"#
            )
            .into_bytes(),
        ),
        (
            "duplicate member",
            format!(
                r#"{{"twi_account_sid":"{ACCOUNT}","twi_to":"client:bob","twi_to":"client:eve"}}"#
            )
            .into_bytes(),
        ),
        (
            "invalid UTF-8",
            format!("{{\"twi_account_sid\":\"{ACCOUNT}\",\"twi_to\":\"client:b\u{0}\"}}")
                .into_bytes()
                .into_iter()
                .map(|b| if b == 0 { 0xff } else { b })
                .collect(),
        ),
    ];
    for (what, body) in cases {
        let answer = app.webhook(body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            answer.text
        );
        assert_eq!(
            answer.body["type"], "urn:callrelay:problem:invalid-notification",
            "{what}"
        );
        assert!(
            answer.body["detail"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{what}: the answer says what is wrong"
        );
    }
}

#[tokio::test]
async fn signature_failures_are_403() {
    let app = spawn_app().await;
    let _bob = app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let url = app.url(&webhook_path(&body));

    // No signature at all.
    let r = answer(app.http.post(&url).body(body.clone()).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.body["type"],
        "urn:callrelay:problem:webhook-authentication-failed"
    );

    // A signature made with a wrong token.
    let r = app
        .webhook_signed_with(body.clone(), "not-the-auth-token")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The other configured account's token does not sign for this account.
    let r = app
        .webhook_signed_with(body.clone(), OTHER_AUTH_TOKEN)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A good signature, but over another URL (no bodySHA256: the body is not covered).
    let bare = app.url("/v1/twilio/call-notifications");
    let r = answer(
        app.http
            .post(&bare)
            .header("x-twilio-signature", sign(AUTH_TOKEN, &bare))
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The body changed after signing: its hash no longer matches.
    let mut tampered = body.clone();
    let i = tampered.len() - 3;
    tampered[i] = b'X';
    let r = answer(
        app.http
            .post(&url)
            .header("x-twilio-signature", sign(AUTH_TOKEN, &url))
            .body(tampered)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The detail never says which check failed, and no secret appears.
    assert!(!r.text.contains(AUTH_TOKEN));
    // And the good one still passes.
    assert_eq!(app.webhook(body).await.status, StatusCode::OK);
}

#[tokio::test]
async fn secondary_auth_token_and_shared_keys_are_accepted() {
    let app = spawn_app().await;
    let mut bob = app.connect_ws("bob").await;
    let r = app
        .webhook_signed_with(payload(ACCOUNT, "bob"), SECONDARY_AUTH_TOKEN)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(bob.next_text(WAIT).await.is_some());

    let body = payload(ACCOUNT, "bob");
    let url = app.url(&webhook_path(&body));
    let sig = callrelay::auth::signature::compute(
        callrelay::auth::signature::SignatureAlgorithm::HmacSha256,
        b"shared-key-secret",
        &url,
        &[],
    );
    let r = answer(
        app.http
            .post(&url)
            .header("x-twilio-signature", sig)
            .header(
                "x-twilio-webhooks-signature-settings",
                "key=k1,algorithm=HMAC_SHA256",
            )
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn signatures_are_checked_against_the_public_url() {
    let app = spawn_with(TestConfig {
        public_url: Some("https://relay.example.com/relay".into()),
        ..TestConfig::default()
    })
    .await;
    let _bob = app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let path = webhook_path(&body);
    // Twilio signed the public URL; the request reaches callrelay on its own address.
    let public = format!("https://relay.example.com/relay{path}");
    let send = |sig: String| {
        app.http
            .post(app.url(&path))
            .header("x-twilio-signature", sig)
            .body(body.clone())
            .send()
    };
    let r = answer(send(sign(AUTH_TOKEN, &public)).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // With the default port spelled out, as some Twilio clients sign it.
    let with_port = format!("https://relay.example.com:443/relay{path}");
    let r = answer(send(sign(AUTH_TOKEN, &with_port)).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Signed for the internal address instead: refused.
    let r = answer(send(sign(AUTH_TOKEN, &app.url(&path))).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// A request Twilio signed for another host (another relay or app using the same Auth Token),
/// replayed here with that host in `Host`: refused, because by default signatures are checked
/// against `server.public_url` only. With `server.trust_forwarded_headers` the headers decide.
#[tokio::test]
async fn a_request_signed_for_another_host_does_not_verify_by_default() {
    let replay = |app: &TestApp| {
        let body = payload(ACCOUNT, "bob");
        let path = webhook_path(&body);
        let elsewhere = format!("http://other-host{path}");
        app.http
            .post(app.url(&path))
            .header("host", "other-host")
            .header("x-twilio-signature", sign(AUTH_TOKEN, &elsewhere))
            .body(body)
            .send()
    };
    let app = spawn_with(TestConfig {
        public_url: Some("https://relay.example.com".into()),
        ..TestConfig::default()
    })
    .await;
    let _bob = app.connect_ws("bob").await;
    let r = answer(replay(&app).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(
        r.body["type"],
        "urn:callrelay:problem:webhook-authentication-failed"
    );

    // The opt-in (what the tests' default configuration uses) trusts the header.
    let trusting = spawn_app().await;
    let _bob = trusting.connect_ws("bob").await;
    let r = answer(replay(&trusting).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn unconfigured_account_is_403() {
    let app = spawn_app().await;
    let r = app
        .webhook_signed_with(payload(UNCONFIGURED_ACCOUNT, "bob"), AUTH_TOKEN)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["type"], "urn:callrelay:problem:unknown-account");
}

#[tokio::test]
async fn oversize_body_is_413() {
    let app = spawn_app().await;
    let filler = "x".repeat(70 * 1024);
    let body = format!(
        r#"{{"twi_account_sid":"{ACCOUNT}","twi_to":"client:bob","twi_params":"{filler}"}}"#
    )
    .into_bytes();
    let r = app.webhook(body).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body["type"], "urn:callrelay:problem:payload-too-large");
    // Just under the limit is fine (and merely unbound).
    let filler = "x".repeat(60 * 1024);
    let body = format!(
        r#"{{"twi_account_sid":"{ACCOUNT}","twi_to":"client:bob","twi_params":"{filler}"}}"#
    )
    .into_bytes();
    assert_eq!(app.webhook(body).await.status, StatusCode::NOT_FOUND);
}

async fn duplicates_are_not_delivered_twice(config: TestConfig) {
    let app = spawn_with(config).await;
    let mut bob = app.connect_ws("bob").await;
    let body = with_message_id(&payload(ACCOUNT, "bob"), "RMduplicate");
    let first = app.webhook(body.clone()).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["delivered"], 1);
    assert!(bob.next_text(WAIT).await.is_some());

    let retry = app.webhook(body.clone()).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.body["duplicate"], true);
    assert_eq!(retry.body["delivered"], 0);
    bob.expect_silence(Duration::from_millis(300)).await;

    // Another message id is another call: delivered again, now to both of bob's sockets.
    let _bob2 = app.connect_ws("bob").await;
    let other = with_message_id(&payload(ACCOUNT, "bob"), "RMother");
    assert_eq!(app.webhook(other).await.body["delivered"], 2);
}

#[tokio::test]
async fn duplicate_message_ids_are_not_delivered_twice_memory() {
    duplicates_are_not_delivered_twice(TestConfig::default()).await;
}

#[tokio::test]
async fn duplicate_message_ids_are_not_delivered_twice_redis() {
    duplicates_are_not_delivered_twice(TestConfig::redis()).await;
}

#[tokio::test]
async fn concurrent_retries_deliver_once() {
    let app = spawn_with(TestConfig::redis()).await;
    let mut bob = app.connect_ws("bob").await;
    let body = with_message_id(&payload(ACCOUNT, "bob"), "RMconcurrent");
    let answers = futures_util::future::join_all((0..8).map(|_| app.webhook(body.clone()))).await;
    // Each is the delivery, a duplicate, or (on a machine so loaded that the delivering
    // attempt's outcome is not recorded by another's deadline) still in progress: never a
    // second delivery.
    let delivered: u64 = answers
        .iter()
        .map(|a| match a.status {
            StatusCode::OK => a.body["delivered"].as_u64().unwrap(),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(
                    a.body["type"], "urn:callrelay:problem:notification-in-progress",
                    "{}",
                    a.text
                );
                0
            }
            other => panic!("{other}: {}", a.text),
        })
        .sum();
    assert_eq!(delivered, 1);
    assert!(bob.next_text(WAIT).await.is_some());
    bob.expect_silence(Duration::from_millis(300)).await;
}

fn with_fake_apps() -> TestConfig {
    TestConfig {
        fake_apps: vec![("ios", "apns"), ("android", "fcm")],
        ..TestConfig::default()
    }
}

#[tokio::test]
async fn a_failed_delivery_does_not_count_so_the_retry_goes_through() {
    let app = spawn_with(with_fake_apps()).await;
    app.register_apns("bob", APNS_TOKEN).await;
    let fake = app.fake("ios");
    fake.answer([Outcome::Failed("503 from the push service".into())]);
    let body = with_message_id(&payload(ACCOUNT, "bob"), "RMretry");
    let first = app.webhook(body.clone()).await;
    assert_eq!(first.status, StatusCode::BAD_GATEWAY, "{}", first.text);
    assert_eq!(
        first.body,
        json!({"delivered": 0, "failed": 1, "removed": 0})
    );
    let retry = app.webhook(body).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    assert_eq!(retry.body["delivered"], 1);
    assert_eq!(fake.payloads().len(), 2);
}

#[tokio::test]
async fn dead_bindings_are_removed_and_the_next_webhook_is_404() {
    let app = spawn_with(with_fake_apps()).await;
    app.register_apns("bob", APNS_TOKEN).await;
    app.fake("ios")
        .answer([Outcome::Dead("410 Unregistered".into())]);
    let first = app.notify("bob").await;
    assert_eq!(first.status, StatusCode::NOT_FOUND, "{}", first.text);
    assert_eq!(
        first.body,
        json!({"delivered": 0, "failed": 0, "removed": 1})
    );
    let next = app.notify("bob").await;
    assert_eq!(next.status, StatusCode::NOT_FOUND);
    assert_eq!(next.body["type"], "urn:callrelay:problem:no-binding");
}

#[tokio::test]
async fn mixed_outcomes_are_counted_and_one_success_is_200() {
    let app = spawn_with(with_fake_apps()).await;
    app.register_apns("bob", APNS_TOKEN).await;
    app.register_apns("bob", APNS_TOKEN_2).await;
    let mut socket = app.connect_ws("bob").await;
    let fake = app.fake("ios");
    fake.answer([Outcome::Dead("410".into()), Outcome::Failed("503".into())]);
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 1, "failed": 1, "removed": 1}));
    assert!(socket.next_text(WAIT).await.is_some());
    // Exactly one push binding is left.
    assert_eq!(app.bindings_of("bob").await.len(), 1);
}

#[tokio::test]
async fn successful_pushes_extend_the_binding() {
    let app = spawn_with(with_fake_apps()).await;
    let r = app
        .api(
            reqwest::Method::PUT,
            "/v1/bindings/phone",
            &token("bob"),
            Some(json!({"channel": "apns", "address": APNS_TOKEN, "ttl_seconds": 3600})),
        )
        .await;
    let expires_before = r.body["expires_at"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    let refreshed = eventually(WAIT, || async {
        let b = app
            .api(
                reqwest::Method::GET,
                "/v1/bindings/phone",
                &token("bob"),
                None,
            )
            .await;
        b.body["expires_at"].as_str().unwrap() > expires_before.as_str()
    })
    .await;
    assert!(
        refreshed,
        "expires_at moves forward after a successful push"
    );
}

#[tokio::test]
async fn webhook_metrics_count_outcomes() {
    let app = spawn_app().await;
    let _bob = app.connect_ws("bob").await;
    app.notify("bob").await;
    app.notify("nobody").await;
    app.webhook(b"nope".to_vec()).await;
    let metrics = app.metrics().await;
    for line in [
        "callrelay_webhooks_total{outcome=\"delivered\"} 1",
        "callrelay_webhooks_total{outcome=\"not_found\"} 1",
        "callrelay_webhooks_total{outcome=\"bad_request\"} 1",
        "callrelay_deliveries_total{channel=\"websocket\",outcome=\"delivered\"} 1",
        "callrelay_websocket_connections 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    assert!(metrics.contains("callrelay_delivery_duration_seconds_bucket{le="));
}

#[tokio::test]
async fn query_strings_are_signed_exactly_as_sent() {
    let app = spawn_with(TestConfig {
        public_url: Some("https://relay.example.com".into()),
        ..TestConfig::default()
    })
    .await;
    let _bob = app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let hash = callrelay::auth::signature::body_sha256_hex(&body);
    // Repeated and percent-encoded parameters, as Twilio sends them: signed over the raw URL.
    let query = format!("x=1&x=2&tenant=a%20b%2Fc&empty=&bodySHA256={hash}");
    let path = format!("/v1/twilio/call-notifications?{query}");
    let send = |sig: String| {
        app.http
            .post(app.url(&path))
            .header("x-twilio-signature", sig)
            .body(body.clone())
            .send()
    };
    let signed = sign(AUTH_TOKEN, &format!("https://relay.example.com{path}"));
    let r = answer(send(signed).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The same parameters decoded, or in another order, are another URL.
    for other in [
        format!("x=1&x=2&tenant=a b/c&empty=&bodySHA256={hash}"),
        format!("x=2&x=1&tenant=a%20b%2Fc&empty=&bodySHA256={hash}"),
    ] {
        let sig = sign(
            AUTH_TOKEN,
            &format!("https://relay.example.com/v1/twilio/call-notifications?{other}"),
        );
        let r = answer(send(sig).await.unwrap()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{other}");
    }
}

#[tokio::test]
async fn http_basic_credentials_are_required_when_configured() {
    use base64::Engine as _;
    let basic_account = "AC33333333333333333333333333333333";
    let app = spawn_with(TestConfig {
        accounts: Some(format!(
            "[[accounts]]\nsid = \"{basic_account}\"\nauth_token = \"{AUTH_TOKEN}\"\n\
             webhook_username = \"twilio\"\nwebhook_password = \"basic-pw\"\n\
             api_keys = [{{ sid = \"{API_KEY}\", secret = \"{API_SECRET}\" }}]\n"
        )),
        ..TestConfig::default()
    })
    .await;
    let mut bob = WsClient::connect(
        &app.base,
        &mint(
            basic_account,
            API_KEY,
            API_SECRET,
            "bob",
            Duration::from_secs(600),
        ),
        None,
    )
    .await
    .unwrap();
    let body = payload(basic_account, "bob");
    let url = app.url(&webhook_path(&body));
    let send = |authorization: Option<String>| {
        let mut request = app
            .http
            .post(&url)
            .header("x-twilio-signature", sign(AUTH_TOKEN, &url))
            .body(body.clone());
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        request.send()
    };
    let encode = |creds: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(creds)
        )
    };
    // Twilio's first try carries no credentials: a 401 with a Basic challenge, so it retries
    // with the ones in the URL. A credential of another scheme is no Basic credential either.
    for missing in [None, Some("Bearer x".to_owned())] {
        let r = answer(send(missing.clone()).await.unwrap()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{missing:?}");
        assert_eq!(
            r.headers["www-authenticate"], "Basic realm=\"callrelay\"",
            "{missing:?}"
        );
        assert_eq!(r.headers["content-type"], "application/problem+json");
        assert_eq!(
            r.body["type"],
            "urn:callrelay:problem:webhook-authentication-required"
        );
    }
    // Wrong credentials are refused outright.
    for wrong in [
        encode("twilio:nope"),
        encode("other:basic-pw"),
        encode("twilio"),
        "Basic !!!".to_owned(),
    ] {
        let r = answer(send(Some(wrong.clone())).await.unwrap()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{wrong}");
        assert!(!r.headers.contains_key("www-authenticate"), "{wrong}");
    }
    bob.expect_silence(Duration::from_millis(100)).await;
    let r = answer(send(Some(encode("twilio:basic-pw"))).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(bob.next_text(WAIT).await.is_some());

    // The signature is still required with the right credentials.
    let r = answer(
        app.http
            .post(&url)
            .header("x-twilio-signature", sign("not-the-auth-token", &url))
            .header("authorization", encode("twilio:basic-pw"))
            .body(payload(basic_account, "bob"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("callrelay_webhooks_total{outcome=\"challenged\"} 2"),
        "{metrics}"
    );
}

/// What Twilio does with a URL like `https://twilio:pw@relay/...`: send without credentials,
/// read the `401`'s challenge, send the same request again with them.
#[tokio::test]
async fn the_basic_handshake_as_twilio_makes_it_delivers_once() {
    use base64::Engine as _;
    let basic_account = "AC44444444444444444444444444444444";
    let app = spawn_with(TestConfig {
        accounts: Some(format!(
            "[[accounts]]\nsid = \"{basic_account}\"\nauth_token = \"{AUTH_TOKEN}\"\n\
             webhook_username = \"twilio\"\nwebhook_password = \"basic-pw\"\n\
             api_keys = [{{ sid = \"{API_KEY}\", secret = \"{API_SECRET}\" }}]\n"
        )),
        ..TestConfig::default()
    })
    .await;
    let mut bob = WsClient::connect(
        &app.base,
        &mint(
            basic_account,
            API_KEY,
            API_SECRET,
            "bob",
            Duration::from_secs(600),
        ),
        None,
    )
    .await
    .unwrap();
    let body = payload(basic_account, "bob");
    let url = app.url(&webhook_path(&body));
    let request = || {
        app.http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-twilio-signature", sign(AUTH_TOKEN, &url))
            .body(body.clone())
    };
    let first = answer(request().send().await.unwrap()).await;
    assert_eq!(first.status, StatusCode::UNAUTHORIZED);
    let challenge = first.headers["www-authenticate"].to_str().unwrap();
    let (scheme, realm) = challenge.split_once(' ').unwrap();
    assert!(scheme.eq_ignore_ascii_case("basic"), "{challenge}");
    assert!(realm.starts_with("realm="), "{challenge}");
    // The challenge delivered nothing.
    bob.expect_silence(Duration::from_millis(100)).await;

    let credentials = base64::engine::general_purpose::STANDARD.encode("twilio:basic-pw");
    let second = answer(
        request()
            .header("authorization", format!("Basic {credentials}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.body["delivered"], 1);
    assert!(bob.next_text(WAIT).await.is_some());
    bob.expect_silence(Duration::from_millis(100)).await;
}
