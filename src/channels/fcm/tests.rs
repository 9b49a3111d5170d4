//! The channel's retry and token-renewal loop against a scripted FCM: no server, paused time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;

use super::oauth::AccessToken;
use super::*;
use crate::domain::PushChannel;

const NOTIFICATION: &[u8] =
    br#"{"twi_account_sid":"AC0123456789abcdef0123456789abcdef","twi_to":"client:bob"}"#;

/// Hands out tokens `t1`, `t2`… (a new one after each refusal), answers sends as scripted
/// (then `200`), and records the token of each send.
#[derive(Default)]
struct Scripted {
    token_error: Mutex<Option<String>>,
    issued: Mutex<usize>,
    current: Mutex<Option<Arc<AccessToken>>>,
    answers: Mutex<VecDeque<Attempt>>,
    sent_with: Mutex<Vec<String>>,
}

#[async_trait]
impl FcmClient for Arc<Scripted> {
    async fn token(&self, _: Instant) -> Result<Arc<AccessToken>, String> {
        if let Some(e) = self.token_error.lock().unwrap().clone() {
            return Err(e);
        }
        let mut current = self.current.lock().unwrap();
        let token = current.get_or_insert_with(|| {
            let mut issued = self.issued.lock().unwrap();
            *issued += 1;
            AccessToken::fake(&format!("t{issued}"))
        });
        Ok(token.clone())
    }

    fn invalidate(&self, token: &Arc<AccessToken>) {
        let mut current = self.current.lock().unwrap();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, token)) {
            *current = None;
        }
    }

    async fn send(&self, _: &Bytes, token: &AccessToken, _: Instant) -> Attempt {
        self.sent_with
            .lock()
            .unwrap()
            .push(token.bearer().to_owned());
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| answer(200, b"{}", None))
    }
}

impl Scripted {
    fn answer(&self, answers: impl IntoIterator<Item = Attempt>) {
        self.answers.lock().unwrap().extend(answers);
    }

    fn sent_with(&self) -> Vec<String> {
        self.sent_with.lock().unwrap().clone()
    }
}

fn answer(status: u16, body: &[u8], retry_after: Option<Duration>) -> Attempt {
    Attempt::Answer {
        status: StatusCode::from_u16(status).unwrap(),
        retry_after,
        body: Bytes::copy_from_slice(body),
    }
}

fn fixture() -> (FcmChannel, Arc<Scripted>) {
    let fcm = Arc::new(Scripted::default());
    let channel = FcmChannel {
        app: "android".into(),
        ttl: "30s".into(),
        client: Box::new(fcm.clone()),
        metrics: Arc::new(Metrics::new()),
    };
    (channel, fcm)
}

async fn push(channel: &FcmChannel, within: Duration) -> Outcome {
    let now = time::OffsetDateTime::UNIX_EPOCH;
    let binding = Binding::example(PushChannel::Fcm, "android", "fcm-token", now);
    let notification = CallNotification::parse(Bytes::from_static(NOTIFICATION)).unwrap();
    channel
        .push(&binding, &notification, Instant::now() + within)
        .await
        .outcome
}

#[tokio::test(start_paused = true)]
async fn a_refused_access_token_is_replaced_once_and_the_send_retried() {
    let (channel, fcm) = fixture();
    fcm.answer([answer(401, b"", None)]);
    assert_eq!(
        push(&channel, Duration::from_secs(5)).await,
        Outcome::Delivered
    );
    assert_eq!(fcm.sent_with(), ["t1", "t2"]);

    fcm.answer([answer(401, b"", None), answer(401, b"", None)]);
    let Outcome::Failed(why) = push(&channel, Duration::from_secs(5)).await else {
        panic!("expected a failure");
    };
    assert!(why.ends_with("(even with a new access token)"), "{why}");
    assert_eq!(fcm.sent_with(), ["t1", "t2", "t2", "t3"]);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_within_the_deadline() {
    let (channel, fcm) = fixture();
    fcm.answer([
        answer(503, b"", None),
        Attempt::Connection("connection reset".into()),
    ]);
    assert_eq!(
        push(&channel, Duration::from_secs(5)).await,
        Outcome::Delivered
    );
    assert_eq!(fcm.sent_with().len(), 3);

    // Google's Retry-After wins over the schedule, and past the deadline it ends the retries.
    fcm.answer([answer(429, b"", Some(Duration::from_secs(30)))]);
    let Outcome::Failed(why) = push(&channel, Duration::from_secs(5)).await else {
        panic!("expected a failure");
    };
    assert!(why.contains("past the webhook deadline"), "{why}");
    assert_eq!(fcm.sent_with().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn an_unregistered_token_is_dead_and_not_retried() {
    let (channel, fcm) = fixture();
    let body = serde_json::json!({"error": {
        "code": 404,
        "status": "NOT_FOUND",
        "details": [{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": "UNREGISTERED"
        }]
    }});
    fcm.answer([answer(404, body.to_string().as_bytes(), None)]);
    assert!(matches!(
        push(&channel, Duration::from_secs(5)).await,
        Outcome::Dead(_)
    ));
    assert_eq!(fcm.sent_with().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_access_token_means_no_send() {
    let (channel, fcm) = fixture();
    *fcm.token_error.lock().unwrap() = Some("the token endpoint answered 400".into());
    let Outcome::Failed(why) = push(&channel, Duration::from_secs(5)).await else {
        panic!("expected a failure");
    };
    assert!(why.starts_with("cannot obtain an access token"), "{why}");
    assert!(fcm.sent_with().is_empty());
}
