//! One identity reached over every channel at once.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::apns::{KEY_ID, TEAM, TOPIC};
use crate::helpers::*;
use callrelay_testkit::apns::{MockApns, TeamKey};
use callrelay_testkit::fcm::MockFcm;

#[tokio::test]
async fn a_websocket_an_apns_and_an_fcm_binding_all_receive() {
    let key = TeamKey::generate(TEAM, KEY_ID);
    let apns = MockApns::token_auth(&[&key]).await;
    let fcm = MockFcm::start().await;
    let app = spawn_with(TestConfig {
        extra: apns.token_app("ios", TOPIC, &key, "") + &fcm.app_toml("android", "voice-project"),
        ..TestConfig::redis()
    })
    .await;
    app.register_apns("bob", APNS_TOKEN).await;
    app.register_fcm("bob", "fcm-token:bob-pixel").await;
    let mut socket = app.connect_ws("bob").await;

    let body = payload(ACCOUNT, "bob");
    let r = app.webhook(body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 3, "failed": 0, "removed": 0}));

    // The socket and the VoIP push carry Twilio's bytes; FCM carries each member as a string.
    let frame = socket.next_text(Duration::from_secs(5)).await.unwrap();
    assert_eq!(frame.as_bytes(), &body[..]);
    let pushes = apns.requests();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].body, body);
    assert_eq!(pushes[0].header("apns-topic"), format!("{TOPIC}.voip"));
    let messages = fcm.messages();
    assert_eq!(messages.len(), 1);
    let sent: Value = serde_json::from_slice(&body).unwrap();
    let data = messages[0]["data"].as_object().unwrap();
    assert_eq!(data.len(), sent.as_object().unwrap().len());
    for (k, v) in sent.as_object().unwrap() {
        assert_eq!(data[k], *v, "{k}");
    }
    assert_eq!(messages[0]["token"], "fcm-token:bob-pixel");
}
