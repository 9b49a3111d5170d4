//! The channel's retry and token-renewal loop against a scripted APNs: no server, paused time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::EncodingKey;

use super::*;
use crate::domain::PushChannel;

const NOTIFICATION: &[u8] =
    br#"{"twi_account_sid":"AC0123456789abcdef0123456789abcdef","twi_to":"client:bob","twi_message_type":"twilio.voice.call"}"#;

const T0: u64 = 1_700_000_000;
const MINUTE: u64 = 60;

/// Answers what the test scripts (then `Accepted`) and records each request's provider token.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<Answer>>,
    tokens: Mutex<Vec<Option<String>>>,
}

#[async_trait]
impl ApnsClient for Arc<Scripted> {
    async fn send(&self, _: &Push<'_>, provider_token: Option<&str>, _: Instant) -> Answer {
        self.tokens
            .lock()
            .unwrap()
            .push(provider_token.map(str::to_owned));
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Accepted {
                id: Some("apns-1".into()),
            })
    }
}

impl Scripted {
    fn answer(&self, answers: impl IntoIterator<Item = Answer>) {
        self.answers.lock().unwrap().extend(answers);
    }

    fn tokens(&self) -> Vec<Option<String>> {
        self.tokens.lock().unwrap().clone()
    }
}

fn refused(status: u16, reason: &str) -> Answer {
    Answer::Refused {
        status: StatusCode::from_u16(status).unwrap(),
        reason: reason.into(),
        retry_after: None,
    }
}

struct Fixture {
    channel: ApnsChannel,
    apns: Arc<Scripted>,
    clock: Arc<AtomicU64>,
}

impl Fixture {
    fn new(token_auth: bool) -> Self {
        let apns = Arc::new(Scripted::default());
        let clock = Arc::new(AtomicU64::new(T0));
        let auth = if token_auth {
            let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
            let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
            Auth::Token {
                signer: Box::new(Signer::new("TEAM123456", "KEY1234567", key)),
                cache: TokenCache::default(),
            }
        } else {
            Auth::Certificate
        };
        let now = clock.clone();
        let channel = ApnsChannel {
            app: "ios".into(),
            topic: "com.example.app".into(),
            auth,
            client: Box::new(apns.clone()),
            ringing_window: Duration::from_secs(30),
            alert_template: "Incoming call from {from}".into(),
            non_call_push: crate::config::apps::apns::NonCallPush::Skip,
            non_call_alert_template: "Missed call from {from}".into(),
            metrics: Arc::new(Metrics::new()),
            now: Arc::new(move || now.load(Ordering::Relaxed)),
        };
        Self {
            channel,
            apns,
            clock,
        }
    }

    async fn push(&self, within: Duration) -> Outcome {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let binding = Binding::example(PushChannel::Apns, "ios", "a0b1c2d3", now);
        let notification = CallNotification::parse(Bytes::from_static(NOTIFICATION)).unwrap();
        self.channel
            .push(&binding, &notification, Instant::now() + within)
            .await
            .outcome
    }
}

#[tokio::test(start_paused = true)]
async fn a_busy_or_unreachable_apns_is_retried_until_it_accepts() {
    let f = Fixture::new(true);
    f.apns.answer([
        refused(503, "ServiceUnavailable"),
        Answer::Connection("connection reset".into()),
        refused(429, "TooManyRequests"),
    ]);
    assert_eq!(f.push(Duration::from_secs(5)).await, Outcome::Delivered);
    let tokens = f.apns.tokens();
    assert_eq!(tokens.len(), 4);
    assert!(tokens.iter().all(|t| t.is_some() && *t == tokens[0]));
}

#[tokio::test(start_paused = true)]
async fn retries_stop_before_the_deadline() {
    let f = Fixture::new(true);
    f.apns
        .answer((0..100).map(|_| refused(500, "InternalServerError")));
    let outcome = f.push(Duration::from_millis(300)).await;
    assert_eq!(
        outcome,
        Outcome::Failed("APNs answered 500 InternalServerError".into())
    );
    // Pauses of 25, 50, 100, 200 ms, each jittered to between half and all of that: a fourth
    // pause fits before the deadline only after short ones, a fifth never does.
    let attempts = f.apns.tokens().len();
    assert!((4..=5).contains(&attempts), "{attempts} attempts");
}

#[tokio::test(start_paused = true)]
async fn a_dead_device_token_or_a_bad_request_is_not_retried() {
    let f = Fixture::new(true);
    f.apns.answer([refused(410, "Unregistered")]);
    assert!(matches!(
        f.push(Duration::from_secs(5)).await,
        Outcome::Dead(_)
    ));
    f.apns.answer([refused(400, "BadTopic")]);
    assert!(matches!(
        f.push(Duration::from_secs(5)).await,
        Outcome::Failed(_)
    ));
    assert_eq!(f.apns.tokens().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_refused_provider_token_old_enough_is_renewed_once_and_the_push_retried() {
    let f = Fixture::new(true);
    assert_eq!(f.push(Duration::from_secs(5)).await, Outcome::Delivered);
    f.clock.store(T0 + 25 * MINUTE, Ordering::Relaxed);
    f.apns.answer([refused(403, "ExpiredProviderToken")]);
    assert_eq!(f.push(Duration::from_secs(5)).await, Outcome::Delivered);
    let tokens = f.apns.tokens();
    assert_eq!(tokens.len(), 3);
    assert_eq!(tokens[1], tokens[0], "the cached token was sent first");
    assert_ne!(tokens[2], tokens[1], "the retry carries a new token");

    // A new token refused too is a configuration problem: no second renewal.
    f.clock.store(T0 + 50 * MINUTE, Ordering::Relaxed);
    f.apns.answer([
        refused(403, "InvalidProviderToken"),
        refused(403, "InvalidProviderToken"),
    ]);
    assert!(matches!(
        f.push(Duration::from_secs(5)).await,
        Outcome::Failed(_)
    ));
    assert_eq!(f.apns.tokens().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_provider_token_younger_than_twenty_minutes_is_not_renewed() {
    let f = Fixture::new(true);
    f.apns.answer([refused(403, "ExpiredProviderToken")]);
    let Outcome::Failed(why) = f.push(Duration::from_secs(5)).await else {
        panic!("expected a failure");
    };
    assert!(why.contains("less than 20 minutes old"), "{why}");
    assert_eq!(f.apns.tokens().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn certificate_authentication_sends_no_token_and_renews_none() {
    let f = Fixture::new(false);
    f.apns.answer([refused(403, "InvalidProviderToken")]);
    assert!(matches!(
        f.push(Duration::from_secs(5)).await,
        Outcome::Failed(_)
    ));
    assert_eq!(f.apns.tokens(), vec![None]);
}
