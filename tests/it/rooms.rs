//! The room ledger through real status callbacks: a consult billed from its callbacks whatever
//! their order and repeats, a disconnect that never arrives closed by `room-ended`, a restart
//! in between on Redis, listings by time and status, CSV for the spreadsheet, admin keys only.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

pub(crate) const ROOM: &str = "RM0123456789abcdef0123456789abcdef";
const ROOM_2: &str = "RMfedcba9876543210fedcba9876543210";

/// An instant `secs` after a base two hours ago, as Twilio writes it.
fn at(base: OffsetDateTime, secs: i64) -> String {
    (base + time::Duration::seconds(secs))
        .format(&Rfc3339)
        .unwrap()
}

pub(crate) fn base() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc() - time::Duration::hours(2);
    now.replace_nanosecond(0).unwrap()
}

/// A Rooms status callback's parameters, as Twilio sends them.
fn callback(
    room: &str,
    event: &str,
    when: String,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut params = vec![
        ("AccountSid", ACCOUNT),
        ("RoomName", "consult-42"),
        ("RoomSid", room),
        (
            "RoomStatus",
            if event == "room-ended" {
                "completed"
            } else {
                "in-progress"
            },
        ),
        ("RoomType", "group"),
        ("StatusCallbackEvent", event),
        ("SequenceNumber", "7"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect::<Vec<_>>();
    params.push(("Timestamp".into(), when));
    params.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    params
}

fn participant(
    room: &str,
    event: &str,
    when: String,
    sid: &str,
    who: &str,
    duration: Option<&str>,
) -> Vec<(String, String)> {
    let status = if event == "participant-connected" {
        "connected"
    } else {
        "disconnected"
    };
    let mut extra = vec![
        ("ParticipantSid", sid),
        ("ParticipantIdentity", who),
        ("ParticipantStatus", status),
    ];
    if let Some(d) = duration {
        extra.push(("ParticipantDuration", d));
    }
    callback(room, event, when, &extra)
}

/// A 5-minute consult: Alice waits 10 s for Bob, both stay 5 minutes, the room ends 5 minutes
/// after they leave (Twilio's empty-room timeout).
pub(crate) fn consult(room: &str, t: OffsetDateTime) -> Vec<Vec<(String, String)>> {
    vec![
        callback(room, "room-created", at(t, 0), &[]),
        participant(
            room,
            "participant-connected",
            at(t, 10),
            "PA01",
            "alice",
            None,
        ),
        participant(
            room,
            "participant-connected",
            at(t, 20),
            "PA02",
            "bob",
            None,
        ),
        participant(
            room,
            "participant-disconnected",
            at(t, 320),
            "PA01",
            "alice",
            Some("310"),
        ),
        participant(
            room,
            "participant-disconnected",
            at(t, 330),
            "PA02",
            "bob",
            Some("310"),
        ),
        callback(room, "room-ended", at(t, 630), &[("RoomDuration", "630")]),
    ]
}

pub(crate) async fn post_all(app: &TestApp, callbacks: &[Vec<(String, String)>]) {
    for params in callbacks {
        let r = app.status_callback(params).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

async fn ledger(app: &TestApp, room: &str) -> Value {
    let r = app
        .admin_get(&format!("/v1/rooms/{room}?account_sid={ACCOUNT}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

#[tokio::test]
async fn a_consult_is_billed_from_its_callbacks_whatever_their_order_and_repeats() {
    let app = spawn_app().await;
    let t = base();
    let mut callbacks = consult(ROOM, t);
    // Twilio's order is not the events' order, and it repeats itself.
    callbacks.reverse();
    callbacks.push(callbacks[2].clone());
    callbacks.push(callbacks[0].clone());
    post_all(&app, &callbacks).await;

    let l = ledger(&app, ROOM).await;
    assert_eq!(l["account_sid"], ACCOUNT);
    assert_eq!(l["room_sid"], ROOM);
    assert_eq!(l["room_name"], "consult-42");
    assert_eq!(l["status"], "ended");
    assert_eq!(l["created_at"], at(t, 0).as_str());
    assert_eq!(l["ended_at"], at(t, 630).as_str());
    assert_eq!(l["room_duration"], 630);
    // The consult is while both were there, not until room-ended.
    assert_eq!(
        l["session"],
        json!({"started_at": at(t, 20), "ended_at": at(t, 320), "seconds": 300})
    );
    let people = l["participants"].as_array().unwrap();
    assert_eq!(people.len(), 2);
    assert_eq!(people[0]["participant_sid"], "PA01");
    assert_eq!(people[0]["identity"], "alice");
    assert_eq!(people[0]["closed_by"], "participant-disconnected");
    assert_eq!(people[0]["participant_duration"], 310);
    assert_eq!(people[0]["connected_seconds"], 310);
    // 310 s is 6 started minutes.
    assert_eq!(people[0]["billable_seconds"], 360);
    assert_eq!(
        l["billing"],
        json!({"rule": "per_started_minute", "billable_seconds": 720, "billable_minutes": 12.0})
    );
    assert_eq!(l["events"], 6);

    // The same ledger as CSV, one row per participant.
    let csv = app
        .http
        .get(format!(
            "{}/v1/rooms/{ROOM}?account_sid={ACCOUNT}",
            app.admin
        ))
        .bearer_auth(ADMIN_KEY)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("account_sid,room_sid,"));
    assert!(
        lines[1].contains("PA01") && lines[1].contains(",alice,") && lines[1].contains(",360,")
    );
}

#[tokio::test]
async fn a_disconnect_that_never_arrives_is_closed_by_room_ended_even_across_a_restart() {
    let config = TestConfig::redis();
    let prefix = config.prefix.clone();
    let app = spawn_with(config).await;
    let t = base();
    let mut callbacks = consult(ROOM, t);
    // Bob's disconnect is lost; half the callbacks reach one replica, the rest the next one.
    callbacks.remove(4);
    post_all(&app, &callbacks[..3]).await;
    let open = ledger(&app, ROOM).await;
    assert_eq!(open["status"], "in-progress");
    assert_eq!(open["participants"][1]["closed_by"], Value::Null);
    app.stop().await;

    let again = spawn_with(TestConfig {
        prefix,
        ..TestConfig::redis()
    })
    .await;
    post_all(&again, &callbacks[3..]).await;
    let l = ledger(&again, ROOM).await;
    assert_eq!(l["status"], "ended");
    let bob = &l["participants"][1];
    assert_eq!(bob["identity"], "bob");
    assert_eq!(bob["closed_by"], "room-ended");
    assert_eq!(bob["disconnected_at"], at(t, 630).as_str());
    assert_eq!(bob["connected_seconds"], 610);
    assert_eq!(l["session"]["ended_at"], at(t, 320).as_str());
}

#[tokio::test]
async fn rooms_are_listed_by_time_and_status_for_admins_only_and_billed_per_second_when_asked() {
    let app = spawn_with(TestConfig {
        extra: "[rooms]\nbilling = \"per_second\"\n".into(),
        ..TestConfig::default()
    })
    .await;
    let t = base();
    post_all(&app, &consult(ROOM, t)).await;
    // A second room, later, still going.
    let later = t + time::Duration::minutes(30);
    post_all(&app, &consult(ROOM_2, later)[..3]).await;

    let list = |query: String| {
        let app = &app;
        async move {
            app.admin_get(&format!("/v1/rooms?account_sid={ACCOUNT}{query}"))
                .await
        }
    };
    let all = list(String::new()).await;
    assert_eq!(all.status, 200, "{}", all.text);
    let sids: Vec<&str> = all.body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_sid"].as_str().unwrap())
        .collect();
    assert_eq!(sids, vec![ROOM_2, ROOM]);
    let ended = list("&status=ended".into()).await;
    assert_eq!(ended.body["rooms"].as_array().unwrap().len(), 1);
    assert_eq!(ended.body["rooms"][0]["room_sid"], ROOM);
    assert_eq!(
        ended.body["rooms"][0]["billing"],
        json!({"rule": "per_second", "billable_seconds": 620, "billable_minutes": 620.0 / 60.0})
    );
    // A page at a time: the first page says where the next starts, the last says nothing.
    let first = list("&limit=1".into()).await;
    assert_eq!(first.body["rooms"][0]["room_sid"], ROOM_2);
    assert_eq!(first.body["next_offset"], 1);
    let link = first.headers["link"].to_str().unwrap();
    assert!(
        link.contains("offset=1") && link.contains("limit=1"),
        "{link}"
    );
    let second = list("&limit=1&offset=1".into()).await;
    assert_eq!(second.body["rooms"][0]["room_sid"], ROOM);
    let last = list("&limit=1&offset=2".into()).await;
    assert_eq!(last.body, json!({"rooms": [], "next_offset": null}));
    assert!(last.headers.get("link").is_none());
    let window = list(format!("&from={}&to={}", at(t, -60), at(t, 60))).await;
    assert_eq!(window.body["rooms"].as_array().unwrap().len(), 1);
    assert_eq!(list("&status=open".into()).await.status, 400);
    assert_eq!(list("&from=last-week".into()).await.status, 400);

    let csv = app
        .http
        .get(format!("{}/v1/rooms?account_sid={ACCOUNT}", app.admin))
        .bearer_auth(ADMIN_KEY)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // A header, two participants each.
    assert_eq!(
        csv.split("\r\n").filter(|l| !l.is_empty()).count(),
        5,
        "{csv}"
    );

    // Billing data is the account's: access tokens are refused, unknown rooms are 404.
    let as_bob = app
        .api(
            reqwest::Method::GET,
            &format!("/v1/rooms/{ROOM}"),
            &token("bob"),
            None,
        )
        .await;
    assert_eq!(as_bob.status, 403, "{}", as_bob.text);
    let unknown = app
        .admin_get(&format!(
            "/v1/rooms/RM99999999999999999999999999999999?account_sid={ACCOUNT}"
        ))
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn a_callback_refused_while_redis_is_gone_is_in_the_ledger_once_twilio_retries_it() {
    let mut redis = crate::helpers::redis::RedisServer::start();
    let app = spawn_with(TestConfig::with_engine(Engine::RedisAt(redis.url()))).await;
    let t = base();
    let callbacks = consult(ROOM, t);
    post_all(&app, &callbacks[..5]).await;
    redis.stop();
    let refused = app.status_callback(&callbacks[5]).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    redis.restart();
    // Twilio retries the callback it was refused.
    let kept = eventually(Duration::from_secs(10), || {
        let app = &app;
        let params = callbacks[5].clone();
        async move { app.status_callback(&params).await.status == 200 }
    })
    .await;
    assert!(kept);
    let l = ledger(&app, ROOM).await;
    assert_eq!(l["status"], "ended");
    assert_eq!(l["events"], 6);
    assert_eq!(l["billing"]["billable_seconds"], 720);
}
