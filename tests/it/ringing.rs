//! Ringing right (README, "Ringing right"): what goes out as a VoIP push, one ring per
//! device, acknowledgements, no late rings and no missed calls.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::apns::{KEY_ID, TEAM, TOPIC, start};
use crate::helpers::*;
use callrelay::domain::PushChannel;
use callrelay_testkit::apns::{MockApns, TeamKey};
use callrelay_testkit::fcm::MockFcm;

/// `body` with its `twi_message_type` set to `kind`.
fn of_type(body: &[u8], kind: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    v["twi_message_type"] = json!(kind);
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn only_a_call_goes_out_as_a_voip_push_and_other_types_reach_sockets_and_fcm_unmodified() {
    let key = TeamKey::generate(TEAM, KEY_ID);
    let apns = MockApns::token_auth(&[&key]).await;
    let fcm = MockFcm::start().await;
    let app = spawn_with(TestConfig {
        extra: apns.token_app("ios", TOPIC, &key, "") + &fcm.app_toml("android", "voice-project"),
        ..TestConfig::default()
    })
    .await;
    app.register_apns("bob", APNS_TOKEN).await;
    app.register_fcm("bob", "fcm-token:bob-pixel").await;
    let mut socket = app.connect_ws("bob").await;

    for kind in ["twilio.voice.cancel", "twilio.voice.something-new"] {
        let body = of_type(&payload(ACCOUNT, "bob"), kind);
        let r = app.webhook(body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text);
        assert_eq!(
            r.body,
            json!({"delivered": 2, "failed": 0, "removed": 0, "skipped": 1}),
            "{kind}"
        );
        let frame = socket.next_text(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            frame.as_bytes(),
            &body[..],
            "{kind}: the socket gets Twilio's bytes"
        );
        let last = fcm.messages().pop().unwrap();
        assert_eq!(last["data"]["twi_message_type"], kind);
    }
    assert!(
        apns.requests().is_empty(),
        "no APNs push for a notification that is not a call"
    );
    let m = app.metrics().await;
    assert!(
        m.contains(r#"callrelay_deliveries_total{channel="apns",outcome="skipped"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"callrelay_push_results_total{app="ios",channel="apns",result="skipped_not_a_call"} 2"#),
        "{m}"
    );

    // A call still rings as a VoIP push.
    let call = payload(ACCOUNT, "bob");
    assert_eq!(app.webhook(call.clone()).await.status, StatusCode::OK);
    let pushes = apns.requests();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].header("apns-push-type"), "voip");
    assert_eq!(pushes[0].body, call);
}

#[tokio::test]
async fn a_payload_without_a_type_is_not_a_voip_push() {
    let s = start("").await;
    s.app.register_apns("bob", APNS_TOKEN).await;
    let mut v: Value = serde_json::from_slice(&payload(ACCOUNT, "bob")).unwrap();
    v.as_object_mut().unwrap().remove("twi_message_type");
    let r = s.app.webhook(serde_json::to_vec(&v).unwrap()).await;
    // Skipped by rule, not failed: Twilio is not asked to retry.
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["skipped"], 1);
    assert!(s.apns.requests().is_empty());
}

/// Registers Bob's regular (not PushKit) APNs token for `push_type` pushes, and his PushKit
/// token beside it.
async fn regular_and_voip(app: &TestApp, push_type: &str) {
    app.register(
        "bob",
        PushChannel::Apns,
        APNS_TOKEN_2,
        json!({"push_type": push_type}),
    )
    .await;
    app.register_apns("bob", APNS_TOKEN).await;
}

#[tokio::test]
async fn an_app_may_send_other_types_to_regular_tokens_as_background_or_alert_pushes_never_voip() {
    let s = start(r#"non_call_push = "background""#).await;
    regular_and_voip(&s.app, "background").await;
    let cancel = of_type(&payload(ACCOUNT, "bob"), "twilio.voice.cancel");
    let r = s.app.webhook(cancel.clone()).await;
    // The PushKit token is skipped even so: it takes VoIP pushes only, and Apple would
    // answer DeviceTokenNotForTopic (and the binding would go) to anything else.
    assert_eq!(
        r.body,
        json!({"delivered": 1, "failed": 0, "removed": 0, "skipped": 1})
    );
    let pushes = s.apns.requests();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].device_token, APNS_TOKEN_2);
    assert_eq!(pushes[0].header("apns-push-type"), "background");
    assert_eq!(pushes[0].header("apns-topic"), TOPIC, "not the .voip topic");
    assert_eq!(pushes[0].header("apns-priority"), "5");
    let sent: Value = serde_json::from_slice(&pushes[0].body).unwrap();
    assert_eq!(sent["aps"], json!({"content-available": 1}));
    assert_eq!(sent["twi_message_type"], "twilio.voice.cancel");

    let s = start(
        r#"non_call_push = "alert"
non_call_alert_template = "{from} hung up""#,
    )
    .await;
    regular_and_voip(&s.app, "alert").await;
    assert_eq!(s.app.webhook(cancel).await.status, StatusCode::OK);
    let pushes = s.apns.requests();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].device_token, APNS_TOKEN_2);
    assert_eq!(pushes[0].header("apns-push-type"), "alert");
    assert_eq!(pushes[0].header("apns-topic"), TOPIC);
    let sent: Value = serde_json::from_slice(&pushes[0].body).unwrap();
    assert_eq!(sent["aps"]["alert"]["body"], "alice hung up");

    // By default a regular token is skipped too.
    let s = start("").await;
    regular_and_voip(&s.app, "alert").await;
    let cancel = of_type(&payload(ACCOUNT, "bob"), "twilio.voice.cancel");
    let r = s.app.webhook(cancel).await;
    assert_eq!(r.body["skipped"], 2);
    assert!(s.apns.requests().is_empty());
}
