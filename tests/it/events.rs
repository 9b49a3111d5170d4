//! Status callbacks and Event Streams: signed as Twilio signs them, kept in the account's log
//! before the answer, every parameter and CloudEvent kept as sent; forgeries refused; repeats
//! kept once.

use std::sync::Arc;
use std::time::Duration;

use callrelay::auth::signature::{self, SignatureAlgorithm};
use callrelay::domain::AccountSid;
use callrelay::store::Store;
use serde_json::{Value, json};

use crate::helpers::*;

/// A callrelay on the shared Redis and the same store opened beside it, to read its log.
async fn app_and_log() -> (TestApp, Arc<dyn Store>) {
    let config = TestConfig::redis();
    let store_config = callrelay::config::from_toml_str(&format!(
        "[store]\nredis_url = \"{}\"\nkey_prefix = \"{}\"\n",
        redis::shared().url(),
        config.prefix
    ))
    .unwrap();
    let store = callrelay::store::open(&store_config.store).await.unwrap();
    (spawn_with(config).await, store)
}

async fn logged(store: &Arc<dyn Store>) -> Vec<Value> {
    store
        .read_events(&AccountSid::parse(ACCOUNT).unwrap(), None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| serde_json::from_slice(&e.envelope).unwrap())
        .collect()
}

fn sign_form(url: &str, params: &[(String, String)]) -> String {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    signature::compute(
        SignatureAlgorithm::HmacSha1,
        AUTH_TOKEN.as_bytes(),
        url,
        &pairs,
    )
}

fn form(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// One callback of each documented event, with the parameters EVENTS.md lists for it.
fn documented_callbacks() -> Vec<Vec<(String, String)>> {
    let room = [
        ("RoomName", "consult-42"),
        ("RoomSid", "RM0123456789abcdef0123456789abcdef"),
        ("RoomStatus", "in-progress"),
        ("RoomType", "group"),
        ("SequenceNumber", "3"),
    ];
    let participant = [
        ("ParticipantSid", "PA0123456789abcdef0123456789abcdef"),
        ("ParticipantStatus", "connected"),
        ("ParticipantIdentity", "dr-alice"),
    ];
    let track = [
        ("TrackSid", "MT0123456789abcdef0123456789abcdef"),
        ("TrackKind", "video"),
    ];
    let recording = [
        ("RecordingSid", "RT0123456789abcdef0123456789abcdef"),
        ("SourceSid", "MT0123456789abcdef0123456789abcdef"),
        (
            "RecordingUri",
            "/v1/Recordings/RT0123456789abcdef0123456789abcdef",
        ),
        ("Container", "mkv"),
        ("Codec", "VP8"),
        ("Type", "video"),
    ];
    let composition = [
        ("CompositionSid", "CJ0123456789abcdef0123456789abcdef"),
        (
            "CompositionUri",
            "/v1/Compositions/CJ0123456789abcdef0123456789abcdef",
        ),
        ("RoomSid", "RM0123456789abcdef0123456789abcdef"),
    ];
    let hook = [
        ("HookSid", "HK0123456789abcdef0123456789abcdef"),
        ("HookFriendlyName", "all-rooms"),
        ("RoomSid", "RM0123456789abcdef0123456789abcdef"),
    ];
    let processor = [
        ("MediaProcessorSid", "ZX0123456789abcdef0123456789abcdef"),
        ("Extension", "video-composer-v1"),
        ("ExtensionContext", r#"{"room":{"name":"consult-42"}}"#),
    ];
    let streamer = [
        ("PlayerStreamerSid", "VJ0123456789abcdef0123456789abcdef"),
        ("Source", "rtmp://example.com/live"),
    ];
    let events: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("room-created", room.to_vec()),
        (
            "room-ended",
            [&room[..], &[("RoomDuration", "1830")]].concat(),
        ),
        (
            "participant-connected",
            [&room[..], &participant[..]].concat(),
        ),
        (
            "participant-disconnected",
            [
                &room[..],
                &participant[..],
                &[("ParticipantDuration", "1795")],
            ]
            .concat(),
        ),
        (
            "track-added",
            [&room[..], &participant[..], &track[..]].concat(),
        ),
        (
            "track-removed",
            [&room[..], &participant[..], &track[..]].concat(),
        ),
        (
            "track-enabled",
            [&room[..], &participant[..], &track[..]].concat(),
        ),
        (
            "track-disabled",
            [&room[..], &participant[..], &track[..]].concat(),
        ),
        ("recording-started", [&room[..], &recording[..]].concat()),
        (
            "recording-completed",
            [
                &room[..],
                &recording[..],
                &[("Duration", "1790"), ("Size", "1048576")],
            ]
            .concat(),
        ),
        (
            "recording-failed",
            [
                &room[..],
                &recording[..],
                &[("FailedOperation", "RecordingUpload")],
            ]
            .concat(),
        ),
        (
            "composition-enqueued",
            [&composition[..], &hook[..2]].concat(),
        ),
        (
            "composition-hook-failed",
            [
                &hook[..],
                &[("FailedOperation", "X"), ("ErrorMessage", "no room")],
            ]
            .concat(),
        ),
        ("composition-started", composition.to_vec()),
        (
            "composition-available",
            [
                &composition[..],
                &[("MediaUri", "/v1/Compositions/CJ…/Media")],
            ]
            .concat(),
        ),
        (
            "composition-progress",
            [
                &composition[..],
                &[("PercentageDone", "40"), ("SecondsRemaining", "12")],
            ]
            .concat(),
        ),
        (
            "composition-failed",
            [&composition[..], &[("ErrorMessage", "codec")]].concat(),
        ),
        ("media-processor-started", processor.to_vec()),
        (
            "media-processor-ended",
            [
                &processor[..],
                &[("Duration", "60"), ("EndedReason", "ended-via-api")],
            ]
            .concat(),
        ),
        (
            "media-processor-failed",
            [&processor[..], &[("ErrorMessage", "bad extension")]].concat(),
        ),
        ("stream-started", streamer.to_vec()),
        ("stream-ended", streamer.to_vec()),
        ("player-streamer-failed", streamer.to_vec()),
        // Not documented (yet): kept and relayed as well.
        (
            "room-renamed",
            [&room[..], &[("NewField", "kept")]].concat(),
        ),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, (name, params))| {
            let mut all = vec![
                ("AccountSid".to_owned(), ACCOUNT.to_owned()),
                ("StatusCallbackEvent".to_owned(), name.to_owned()),
                (
                    "Timestamp".to_owned(),
                    format!("2026-12-07T10:00:{:02}.000Z", i),
                ),
            ];
            all.extend(
                params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            all
        })
        .collect()
}

#[tokio::test]
async fn every_documented_status_callback_is_kept_with_every_parameter() {
    let (app, store) = app_and_log().await;
    let callbacks = documented_callbacks();
    for params in &callbacks {
        let r = app.status_callback(params).await;
        assert_eq!(r.status, 200, "{}: {}", params[1].1, r.text);
        assert_eq!(r.body, json!({"accepted": 1, "duplicates": 0}));
    }
    let kept = logged(&store).await;
    assert_eq!(kept.len(), callbacks.len());
    for (envelope, params) in kept.iter().zip(&callbacks) {
        let name = &params[1].1;
        assert_eq!(envelope["type"], name.as_str());
        assert_eq!(envelope["account_sid"], ACCOUNT);
        assert_eq!(envelope["source"], "status-callback");
        assert_eq!(envelope["timestamp"], params[2].1.as_str());
        for (k, v) in params {
            assert_eq!(envelope["params"][k], v.as_str(), "{name}: {k}");
        }
    }
    let family = |i: usize| kept[i]["family"].as_str().unwrap().to_owned();
    assert_eq!(family(0), "room");
    assert_eq!(family(2), "participant");
    assert_eq!(family(12), "composition-hook");
    assert_eq!(family(22), "player-streamer");
    assert_eq!(family(23), "unknown");
    assert_eq!(
        kept[2]["resources"]["ParticipantSid"],
        "PA0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        kept[2]["resources"]["RoomSid"],
        "RM0123456789abcdef0123456789abcdef"
    );

    // Twilio delivering a callback again: acknowledged, kept once.
    let r = app.status_callback(&callbacks[0]).await;
    assert_eq!(r.body, json!({"accepted": 0, "duplicates": 1}));
    assert_eq!(logged(&store).await.len(), callbacks.len());

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!(
            "callrelay_events_total{{source=\"status_callback\",outcome=\"accepted\"}} {}",
            callbacks.len()
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_get_callback_is_signed_over_its_url_and_forgeries_are_refused() {
    let (app, store) = app_and_log().await;
    let params = &documented_callbacks()[2];
    let url = format!("{}/v1/twilio/status-callbacks?{}", app.base, form(params));
    let signed = sign_form(&url, &[]);
    let r = app
        .http
        .get(&url)
        .header("x-twilio-signature", &signed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(logged(&store).await[0]["type"], "participant-connected");

    // The POST form of the same signature is not valid: the parameters were not signed.
    let post_url = format!("{}/v1/twilio/status-callbacks", app.base);
    let forgeries = [
        // Signed for other parameters.
        (
            post_url.clone(),
            sign_form(&post_url, &params[1..]),
            form(params),
        ),
        // No signature at all.
        (post_url.clone(), String::new(), form(params)),
        // Another account's token.
        (
            post_url.clone(),
            signature::compute(
                SignatureAlgorithm::HmacSha1,
                OTHER_AUTH_TOKEN.as_bytes(),
                &post_url,
                &params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>(),
            ),
            form(params),
        ),
    ];
    for (url, sig, body) in forgeries {
        let mut request = app.http.post(&url).body(body);
        if !sig.is_empty() {
            request = request.header("x-twilio-signature", sig);
        }
        let r = answer(request.send().await.unwrap()).await;
        assert_eq!(r.status, 403, "{}", r.text);
        assert_eq!(
            r.body["type"],
            "urn:callrelay:problem:webhook-authentication-failed"
        );
    }
    // A callback for an account this relay does not serve; one without an account.
    let mut unknown = params.clone();
    unknown[0].1 = UNCONFIGURED_ACCOUNT.into();
    let r = answer(
        app.http
            .post(&post_url)
            .header("x-twilio-signature", sign_form(&post_url, &unknown))
            .body(form(&unknown))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["type"], "urn:callrelay:problem:unknown-account");
    let r = answer(
        app.http
            .post(&post_url)
            .body(form(&params[1..]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["type"], "urn:callrelay:problem:invalid-event");
    assert_eq!(logged(&store).await.len(), 1, "nothing refused was kept");
}

/// Redis gone: a callback is answered `503` (Twilio retries) and nothing claims it was kept;
/// once Redis is back, the retry is kept, once.
#[tokio::test]
async fn with_the_store_gone_a_callback_is_503_and_its_retry_is_kept_once() {
    let mut redis = crate::helpers::redis::RedisServer::start();
    let config = TestConfig::with_engine(Engine::RedisAt(redis.url()));
    let prefix = config.prefix.clone();
    let app = spawn_with(config).await;
    let params = &documented_callbacks()[2];
    redis.stop();
    let r = app.status_callback(params).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["type"], "urn:callrelay:problem:store-unavailable");
    redis.restart();
    let mut kept = None;
    for _ in 0..100 {
        let r = app.status_callback(params).await;
        if r.status == 200 {
            kept = Some(r.body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kept, Some(json!({"accepted": 1, "duplicates": 0})));
    let store_config = callrelay::config::from_toml_str(&format!(
        "[store]\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\n",
        redis.url()
    ))
    .unwrap();
    let store = callrelay::store::open(&store_config.store).await.unwrap();
    assert_eq!(logged(&store).await.len(), 1);
}

/// Twilio's published Event Streams example (a Voice Insights call summary, `data` a JSON
/// document in a string), with a second event in the same array.
fn event_streams_batch() -> String {
    let data = json!({
        "call_sid": "CA0123456789abcdef0123456789abcdef",
        "account_sid": ACCOUNT,
        "call_type": "client",
        "call_state": "canceled",
        "to": {"callee": "client:bob"},
        "properties": {"disconnected_by": "caller"}
    })
    .to_string();
    json!([
        {
            "specversion": "1.0",
            "type": "com.twilio.voice.insights.call-summary.complete",
            "source": "/v1/Voice/CA0123456789abcdef0123456789abcdef/Summary",
            "id": "EZ0123456789abcdef0123456789abcdef",
            "dataschema": "https://events-schemas.twilio.com/VoiceInsights.CallSummary/1",
            "datacontenttype": "application/json",
            "time": "2026-12-07T10:01:00.000Z",
            "data": data
        },
        {
            "specversion": "1.0",
            "type": "com.twilio.voice.insights.call-summary.partial",
            "source": "/v1/Voice/CA0123456789abcdef0123456789abcdef/Summary",
            "id": "EZfedcba9876543210fedcba9876543210",
            "time": "2026-12-07T10:00:30.000Z",
            "data": {"call_sid": "CA0123456789abcdef0123456789abcdef", "account_sid": ACCOUNT}
        }
    ])
    .to_string()
}

#[tokio::test]
async fn an_event_streams_batch_is_kept_event_by_event_exactly_as_sent() {
    let (app, store) = app_and_log().await;
    let body = event_streams_batch();
    let url = format!(
        "{}/v1/twilio/event-streams?bodySHA256={}",
        app.base,
        signature::body_sha256_hex(body.as_bytes())
    );
    let send = |url: String, body: String, sig: String| {
        let request = app
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-twilio-signature", sig)
            .body(body);
        async move { answer(request.send().await.unwrap()).await }
    };
    let r = send(url.clone(), body.clone(), sign(AUTH_TOKEN, &url)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"accepted": 2, "duplicates": 0}));
    // Twilio retrying the batch: nothing kept twice.
    let r = send(url.clone(), body.clone(), sign(AUTH_TOKEN, &url)).await;
    assert_eq!(r.body, json!({"accepted": 0, "duplicates": 2}));

    let kept = logged(&store).await;
    assert_eq!(kept.len(), 2);
    let sent: Vec<Value> = serde_json::from_str(&body).unwrap();
    for (envelope, event) in kept.iter().zip(&sent) {
        assert_eq!(envelope["source"], "event-streams");
        assert_eq!(envelope["id"], event["id"]);
        assert_eq!(envelope["type"], event["type"]);
        assert_eq!(envelope["timestamp"], event["time"]);
        assert_eq!(&envelope["cloudevent"], event, "the CloudEvent verbatim");
        assert_eq!(
            envelope["resources"]["CallSid"],
            "CA0123456789abcdef0123456789abcdef"
        );
    }
    assert!(
        kept[0]["cloudevent"]["data"].is_string(),
        "data stays a string"
    );

    // A body changed after signing, a signature for another URL, a missing bodySHA256.
    let changed = body.replace("canceled", "completed");
    assert_eq!(
        send(url.clone(), changed, sign(AUTH_TOKEN, &url))
            .await
            .status,
        403
    );
    let other_url = url.replace("event-streams", "call-notifications");
    assert_eq!(
        send(url.clone(), body.clone(), sign(AUTH_TOKEN, &other_url))
            .await
            .status,
        403
    );
    let bare = format!("{}/v1/twilio/event-streams", app.base);
    assert_eq!(
        send(bare.clone(), body.clone(), sign(AUTH_TOKEN, &bare))
            .await
            .status,
        403
    );
    // Not CloudEvents.
    let r = send(url.clone(), "{\"id\":1}".into(), sign(AUTH_TOKEN, &url)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["type"], "urn:callrelay:problem:invalid-event");
    assert_eq!(logged(&store).await.len(), 2);
}

#[tokio::test]
async fn a_sink_url_can_name_its_account_when_the_events_do_not() {
    let (app, store) = app_and_log().await;
    let body = json!([{"specversion": "1.0", "type": "com.example.other", "source": "/x", "id": "EZ1", "data": {}}])
        .to_string();
    let hash = signature::body_sha256_hex(body.as_bytes());
    let without = format!("{}/v1/twilio/event-streams?bodySHA256={hash}", app.base);
    let r = answer(
        app.http
            .post(&without)
            .header("x-twilio-signature", sign(AUTH_TOKEN, &without))
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.body["detail"].as_str().unwrap().contains("AccountSid"));

    let named = format!(
        "{}/v1/twilio/event-streams?AccountSid={ACCOUNT}&bodySHA256={hash}",
        app.base
    );
    let r = answer(
        app.http
            .post(&named)
            .header("x-twilio-signature", sign(AUTH_TOKEN, &named))
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(logged(&store).await[0]["type"], "com.example.other");

    // Events that name another account than the URL does are not this account's.
    let body = json!([{"specversion": "1.0", "type": "x", "source": "/x", "id": "EZ2",
                       "data": {"account_sid": OTHER_ACCOUNT}}])
    .to_string();
    let hash = signature::body_sha256_hex(body.as_bytes());
    let named = format!(
        "{}/v1/twilio/event-streams?AccountSid={ACCOUNT}&bodySHA256={hash}",
        app.base
    );
    let r = answer(
        app.http
            .post(&named)
            .header("x-twilio-signature", sign(AUTH_TOKEN, &named))
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(logged(&store).await.len(), 1);
}

mod feed {
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    use super::*;

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn open(app: &TestApp, query: &str, credential: &str) -> Result<Socket, u16> {
        let url = format!(
            "{}/v1/events/ws?{query}",
            app.base.replacen("http://", "ws://", 1)
        );
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {credential}").parse().unwrap(),
        );
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// The next feed frame, as (position, event), answering pings on the way.
    async fn next(socket: &mut Socket) -> (String, Value) {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
                .await
                .expect("a frame within 5 s")
                .expect("the feed is open")
                .unwrap();
            match message {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    return (
                        frame["position"].as_str().unwrap().to_owned(),
                        frame["event"].clone(),
                    );
                }
                Message::Ping(data) => socket.send(Message::Pong(data)).await.unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    async fn callback(app: &TestApp, params: &[(String, String)]) {
        let r = app.status_callback(params).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    #[tokio::test]
    async fn a_backend_follows_the_log_live_and_resumes_where_it_left_off() {
        let (app, _store) = app_and_log().await;
        let callbacks = documented_callbacks();
        // Kept before anyone listens: the feed starts with them.
        callback(&app, &callbacks[0]).await;
        callback(&app, &callbacks[1]).await;

        let query = format!("account_sid={ACCOUNT}&types=room-*,participant-*");
        let mut socket = open(&app, &query, ADMIN_KEY).await.unwrap();
        let (_, first) = next(&mut socket).await;
        let (_, second) = next(&mut socket).await;
        assert_eq!(first["type"], "room-created");
        assert_eq!(second["type"], "room-ended");
        // Kept while it listens: arrives live; a track event is filtered out.
        callback(&app, &callbacks[4]).await;
        callback(&app, &callbacks[2]).await;
        let (seen_up_to, live) = next(&mut socket).await;
        assert_eq!(live["type"], "participant-connected");
        socket.close(None).await.unwrap();

        // Away for a while; then back with the last position seen.
        callback(&app, &callbacks[3]).await;
        callback(&app, &callbacks[0]).await; // a repeat: kept once, so not sent again
        callback(&app, &callbacks[23]).await; // room-renamed, unknown to callrelay
        let mut socket = open(&app, &format!("{query}&after={seen_up_to}"), ADMIN_KEY)
            .await
            .unwrap();
        let (_, missed) = next(&mut socket).await;
        let (_, unknown) = next(&mut socket).await;
        assert_eq!(missed["type"], "participant-disconnected");
        assert_eq!(unknown["type"], "room-renamed");
        assert_eq!(unknown["params"]["NewField"], "kept");
        // Nothing else: the repeat was not kept twice.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    match socket.next().await {
                        Some(Ok(Message::Text(t))) => return t.to_string(),
                        Some(Ok(_)) => continue,
                        _ => return String::new(),
                    }
                }
            })
            .await
            .is_err(),
            "no more frames"
        );

        // A resource filter.
        let room = "RM0123456789abcdef0123456789abcdef";
        let mut by_room = open(
            &app,
            &format!("account_sid={ACCOUNT}&resource={room}&types=participant-disconnected"),
            ADMIN_KEY,
        )
        .await
        .unwrap();
        let (_, event) = next(&mut by_room).await;
        assert_eq!(event["resources"]["RoomSid"], room);
        assert_eq!(event["type"], "participant-disconnected");
    }

    #[tokio::test]
    async fn only_admin_keys_of_configured_accounts_open_a_feed() {
        let (app, _store) = app_and_log().await;
        let query = format!("account_sid={ACCOUNT}");
        assert_eq!(open(&app, &query, &token("bob")).await.err(), Some(403));
        assert_eq!(open(&app, &query, "not-a-key").await.err(), Some(401));
        assert_eq!(
            open(
                &app,
                &format!("account_sid={UNCONFIGURED_ACCOUNT}"),
                ADMIN_KEY
            )
            .await
            .err(),
            Some(400)
        );
        assert_eq!(open(&app, "", ADMIN_KEY).await.err(), Some(400));
        assert_eq!(
            open(&app, &format!("{query}&after=yesterday"), ADMIN_KEY)
                .await
                .err(),
            Some(400)
        );
        assert!(open(&app, &query, ADMIN_KEY).await.is_ok());
    }
}

mod forwarding {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// A target that records what reaches it and answers 503 while "down".
    #[derive(Clone, Default)]
    struct Target {
        up: Arc<AtomicBool>,
        /// The secret it verifies with (`SECRET` unless set).
        secret: Arc<Mutex<Option<String>>>,
        /// Every attempt: (webhook-id, verified, body), in arrival order.
        attempts: Arc<Mutex<Vec<(String, bool, Value)>>>,
    }

    /// Verifies as the Standard Webhooks libraries do: HMAC-SHA256 keyed with the secret's
    /// base64 part over `id.timestamp.body`, against each `v1,` signature given.
    fn verified(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        let key = STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.", header("webhook-id"), header("webhook-timestamp")).as_bytes());
        mac.update(body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        let fresh = header("webhook-timestamp").parse::<u64>().is_ok_and(|t| {
            t.abs_diff(time::OffsetDateTime::now_utc().unix_timestamp() as u64) < 300
        });
        fresh
            && header("webhook-signature")
                .split(' ')
                .any(|s| s == expected)
    }

    async fn receive(State(target): State<Target>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let secret = target
            .secret
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| SECRET.to_owned());
        let ok = verified(&secret, &headers, &body);
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        target.attempts.lock().unwrap().push((id, ok, value));
        if target.up.load(Ordering::SeqCst) {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }

    impl Target {
        async fn start() -> (Self, String) {
            let target = Target::default();
            let router = axum::Router::new()
                .route("/events", axum::routing::post(receive))
                .with_state(target.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/events", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, router).await });
            (target, url)
        }

        /// Events the target took (answered 2xx to), in order, by type.
        fn delivered_types(&self) -> Vec<String> {
            // Only the last attempt of an id can have been answered 2xx, and only while up;
            // attempts while down were refused. Distinct ids in order of their last attempt.
            let attempts = self.attempts.lock().unwrap();
            let mut seen: Vec<(String, String)> = Vec::new();
            for (id, _, body) in attempts.iter() {
                seen.retain(|(other, _)| other != id);
                seen.push((id.clone(), body["type"].as_str().unwrap_or("").to_owned()));
            }
            seen.into_iter().map(|(_, t)| t).collect()
        }
    }

    fn config_with_target(url: &str, prefix: Option<String>, retry_secs: u64) -> TestConfig {
        let mut config = TestConfig::redis();
        if let Some(prefix) = prefix {
            config.prefix = prefix;
        }
        config.extra =
            format!("[events]\nforward_retry_secs = {retry_secs}\nforward_timeout_ms = 2000\n");
        config.accounts = Some(format!(
            "[[accounts]]\nsid = \"{ACCOUNT}\"\nauth_token = \"{AUTH_TOKEN}\"\n\
             api_keys = [{{ sid = \"{API_KEY}\", secret = \"{API_SECRET}\" }}]\n\
             [[accounts.event_targets]]\nname = \"backend\"\nurl = \"{url}\"\n\
             types = [\"participant-*\", \"room-ended\"]\nsecret = \"{SECRET}\"\n"
        ));
        config
    }

    /// A request with the admin key, without a body.
    async fn as_admin(app: &TestApp, method: reqwest::Method, url: String) -> reqwest::Response {
        app.http
            .request(method, url)
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .send()
            .await
            .unwrap()
    }

    async fn callback(app: &TestApp, params: &[(String, String)]) {
        let r = app.status_callback(params).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    #[tokio::test]
    async fn a_target_that_was_down_gets_every_event_in_order_even_across_a_restart() {
        let (target, url) = Target::start().await;
        let config = config_with_target(&url, None, 600);
        let prefix = config.prefix.clone();
        let app = spawn_with(config).await;
        let callbacks = documented_callbacks();
        // participant-connected, room-created (not forwarded), participant-disconnected.
        for i in [2, 0, 3] {
            callback(&app, &callbacks[i]).await;
        }
        assert!(
            eventually(Duration::from_secs(5), || async {
                target.attempts.lock().unwrap().len() >= 2
            })
            .await,
            "attempts reach the target while it is down"
        );
        // Restarted mid-backlog: a new process on the same store takes over.
        app.stop().await;
        let app = spawn_with(config_with_target(&url, Some(prefix), 600)).await;
        callback(&app, &callbacks[1]).await; // room-ended
        target.up.store(true, Ordering::SeqCst);
        assert!(
            eventually(Duration::from_secs(15), || async {
                target.delivered_types().len() == 3
            })
            .await,
            "{:?}",
            target.delivered_types()
        );
        assert_eq!(
            target.delivered_types(),
            [
                "participant-connected",
                "participant-disconnected",
                "room-ended"
            ]
        );
        let attempts = target.attempts.lock().unwrap().clone();
        assert!(
            attempts.iter().all(|(_, ok, _)| *ok),
            "every attempt is signed"
        );
        // One id per event, the same on every attempt: the first event was tried while down
        // and taken later under the id it always had.
        let first_id = &attempts[0].0;
        assert!(first_id.starts_with("SC"));
        assert!(attempts.iter().filter(|(id, _, _)| id == first_id).count() >= 2);
        assert_eq!(attempts[0].2["type"], "participant-connected");
        let metrics = app.metrics().await;
        assert!(
            metrics.contains(&format!(
                "callrelay_event_forwards_total{{account=\"{ACCOUNT}\",target=\"backend\",outcome=\"delivered\"}}"
            )),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn an_event_past_its_retry_budget_is_set_aside_the_next_goes_through_and_a_replay_sends_it()
     {
        let (target, url) = Target::start().await;
        let app = spawn_with(config_with_target(&url, None, 1)).await;
        let callbacks = documented_callbacks();
        callback(&app, &callbacks[2]).await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                app.metrics().await.contains("outcome=\"failed\"} 1")
            })
            .await,
            "set aside after about a second of refusals"
        );
        target.up.store(true, Ordering::SeqCst);
        callback(&app, &callbacks[3]).await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                target
                    .delivered_types()
                    .last()
                    .is_some_and(|t| t == "participant-disconnected")
            })
            .await
        );

        // The admin lists what was set aside and has it sent again.
        let api = |path: &str| {
            format!(
                "{}/v1/events/targets/backend{path}?account_sid={ACCOUNT}",
                app.base
            )
        };
        let r = answer(as_admin(&app, reqwest::Method::GET, api("/failed")).await).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["failed"].as_array().unwrap().len(), 1, "{}", r.text);
        let r = answer(as_admin(&app, reqwest::Method::POST, api("/replay")).await).await;
        assert_eq!(r.body, json!({"replaying": 1}));
        assert!(
            eventually(Duration::from_secs(10), || async {
                target.delivered_types() == ["participant-disconnected", "participant-connected"]
            })
            .await,
            "{:?}",
            target.delivered_types()
        );
        let r = answer(as_admin(&app, reqwest::Method::GET, api("/failed")).await).await;
        assert_eq!(r.body, json!({"failed": []}));
        let r = as_admin(
            &app,
            reqwest::Method::POST,
            format!(
                "{}/v1/events/targets/nobody/replay?account_sid={ACCOUNT}",
                app.base
            ),
        )
        .await;
        assert_eq!(r.status(), 404);
    }

    /// Targets added and removed at run time through the admin API: listed beside the
    /// configuration's (secrets never shown but the generated one, once), forwarded to within
    /// a few seconds, and no longer once removed.
    #[tokio::test]
    async fn targets_added_through_the_admin_api_are_forwarded_to_until_removed() {
        let (target, url) = Target::start().await;
        target.up.store(true, Ordering::SeqCst);
        let (configured, configured_url) = Target::start().await;
        configured.up.store(true, Ordering::SeqCst);
        let app = spawn_with(config_with_target(&configured_url, None, 600)).await;
        let api =
            |path: &str| format!("{}/v1/events/targets{path}?account_sid={ACCOUNT}", app.base);
        let admin = format!("Bearer {ADMIN_KEY}");

        // Without a secret, one is made and shown once.
        let r = answer(
            app.http
                .put(api("/live"))
                .header("authorization", &admin)
                .json(&json!({"url": url, "types": ["room-*"]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let secret = r.body["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_"), "{secret}");
        *target.secret.lock().unwrap() = Some(secret);
        assert_eq!(r.body["source"], "api");

        let r = answer(as_admin(&app, reqwest::Method::GET, api("")).await).await;
        assert_eq!(r.status, 200);
        let names: Vec<(&str, &str)> = r.body["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["name"].as_str().unwrap(), t["source"].as_str().unwrap()))
            .collect();
        assert_eq!(names, [("backend", "configuration"), ("live", "api")]);
        assert!(
            !r.text.contains("whsec_"),
            "no secret in a listing: {}",
            r.text
        );

        // Forwarded to, signed with the secret it was given.
        let callbacks = documented_callbacks();
        callback(&app, &callbacks[0]).await; // room-created
        assert!(
            eventually(Duration::from_secs(10), || async {
                target.delivered_types() == ["room-created"]
            })
            .await,
            "{:?}",
            target.delivered_types()
        );
        let (_, signed, body) = target.attempts.lock().unwrap()[0].clone();
        assert_eq!(body["type"], "room-created");
        assert!(signed, "signed with the secret the API gave");

        // Refusals: the configuration's names, unknown names, other callers, bad settings.
        let put = |path: &str, body: Value| {
            app.http
                .put(api(path))
                .header("authorization", &admin)
                .json(&body)
                .send()
        };
        let r = answer(put("/backend", json!({"url": url})).await.unwrap()).await;
        assert_eq!(r.status, 409);
        assert_eq!(r.body["type"], "urn:callrelay:problem:target-configured");
        let r = answer(put("/x", json!({"url": "ftp://nope"})).await.unwrap()).await;
        assert_eq!(r.status, 400);
        let r = answer(
            put("/x", json!({"url": url, "secret": "not-a-secret"}))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 400);
        assert!(!r.text.contains("not-a-secret"), "{}", r.text);
        let r = app
            .http
            .get(api(""))
            .header("authorization", format!("Bearer {}", token("bob")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(app.http.get(api("")).send().await.unwrap().status(), 401);
        let r = as_admin(&app, reqwest::Method::DELETE, api("/backend")).await;
        assert_eq!(r.status(), 409);
        let r = as_admin(&app, reqwest::Method::DELETE, api("/nobody")).await;
        assert_eq!(r.status(), 404);

        // Removed: nothing more reaches it.
        let r = as_admin(&app, reqwest::Method::DELETE, api("/live")).await;
        assert_eq!(r.status(), 204);
        tokio::time::sleep(Duration::from_secs(3)).await;
        callback(&app, &callbacks[1]).await; // room-ended: the configured target takes it
        assert!(
            eventually(Duration::from_secs(10), || async {
                configured
                    .delivered_types()
                    .contains(&"room-ended".to_owned())
            })
            .await
        );
        assert_eq!(target.delivered_types(), ["room-created"]);
    }

    /// A replica killed (SIGKILL) while a target is down leaves its lease to lapse; another
    /// replica then forwards every event, in order, from where the first one was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_killed_mid_backlog_hands_its_target_over_when_the_lease_lapses() {
        let (target, url) = Target::start().await;
        let config = config_with_target(&url, None, 600);
        let mut first = ProcessApp::start(&config).await;
        let callbacks = documented_callbacks();
        let http = reqwest::Client::new();
        let send = |base: String, params: Vec<(String, String)>| {
            let http = http.clone();
            async move {
                let url = format!("{base}/v1/twilio/status-callbacks");
                let r = http
                    .post(&url)
                    .header("x-twilio-signature", sign_form(&url, &params))
                    .body(form(&params))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        };
        for i in [2, 3, 1] {
            send(first.base.clone(), callbacks[i].clone()).await;
        }
        assert!(
            eventually(Duration::from_secs(5), || async {
                !target.attempts.lock().unwrap().is_empty()
            })
            .await
        );
        first.kill();
        target.up.store(true, Ordering::SeqCst);
        let second = ProcessApp::start(&config).await;
        assert!(
            eventually(Duration::from_secs(30), || async {
                target.delivered_types().len() == 3
            })
            .await,
            "{:?}",
            target.delivered_types()
        );
        assert_eq!(
            target.delivered_types(),
            [
                "participant-connected",
                "participant-disconnected",
                "room-ended"
            ]
        );
        drop(second);
    }

    /// A target that answers with a redirect has not taken the event: forwarding follows no
    /// redirect (it would turn the POST into a GET without the event, and carry the
    /// signature elsewhere), and retries.
    #[tokio::test]
    async fn a_redirect_is_not_a_delivery() {
        let reached_elsewhere = Arc::new(AtomicBool::new(false));
        let flag = reached_elsewhere.clone();
        let router = axum::Router::new()
            .route(
                "/events",
                axum::routing::post(|| async { (StatusCode::FOUND, [("location", "/elsewhere")]) }),
            )
            .route(
                "/elsewhere",
                axum::routing::any(move || {
                    let flag = flag.clone();
                    async move {
                        flag.store(true, Ordering::SeqCst);
                        StatusCode::OK
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let app = spawn_with(config_with_target(&url, None, 600)).await;
        callback(&app, &documented_callbacks()[2]).await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                app.metrics().await.contains("outcome=\"retried\"}")
            })
            .await
        );
        let metrics = app.metrics().await;
        assert!(
            !metrics.contains("target=\"backend\",outcome=\"delivered\"}"),
            "{metrics}"
        );
        assert!(!reached_elsewhere.load(Ordering::SeqCst));
    }
}
