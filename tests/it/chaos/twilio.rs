//! Twilio, as the chaos suite needs it: a steady stream of signed call notifications, each
//! sent to one live replica (as a load balancer would) and, when the answer is a failure or
//! the connection fails, retried with the same `twi_message_id` on another, up to
//! `ATTEMPTS` times. Every answer is kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;

use super::Fleet;
use super::devices::Person;
use crate::helpers::{ACCOUNT, AUTH_TOKEN, payload, sign, webhook_path};

/// Attempts per notification: enough to outlast any one fault of the suite (a claim of a
/// killed replica lapses 1.3 s after it was taken; Redis is frozen for 2 s).
const ATTEMPTS: usize = 8;
/// Pause before a retry.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// One attempt's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// When it was sent, from the start of the load.
    pub at: Duration,
    /// `0`: no answer (connection refused or reset).
    pub status: u16,
    pub duplicate: bool,
    pub delivered: u64,
    pub took: Duration,
}

/// One notification and every answer it got.
#[derive(Debug, Clone)]
pub struct Sent {
    pub person: usize,
    pub message_id: String,
    pub answers: Vec<Answer>,
}

impl Sent {
    pub fn first_sent(&self) -> Duration {
        self.answers[0].at
    }

    pub fn last(&self) -> &Answer {
        self.answers.last().unwrap()
    }

    /// Answered `200`, in the end.
    pub fn succeeded(&self) -> bool {
        self.last().status == 200
    }
}

pub struct Twilio {
    started: Instant,
    stop: Arc<AtomicBool>,
    senders: Vec<JoinHandle<Vec<Sent>>>,
}

impl Twilio {
    /// `senders` concurrent senders, each going round `people`, pausing `pace` between
    /// notifications.
    pub fn start(fleet: &Fleet, people: &[Person], senders: usize, pace: Duration) -> Self {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let count = people.len();
        let identities: Arc<Vec<String>> =
            Arc::new(people.iter().map(|p| p.identity.clone()).collect());
        let senders = (0..senders)
            .map(|s| {
                let (fleet, stop, identities) = (fleet.clone(), stop.clone(), identities.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    let mut sent = Vec::new();
                    let mut n = s;
                    while !stop.load(Ordering::Relaxed) {
                        let person = n % count;
                        let body = payload(ACCOUNT, &identities[person]);
                        sent.push(send(&client, &fleet, person, body, n, started).await);
                        n += senders_step(s);
                        tokio::time::sleep(pace).await;
                    }
                    sent
                })
            })
            .collect();
        Self {
            started,
            stop,
            senders,
        }
    }

    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub async fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for s in self.senders {
            all.extend(s.await.unwrap());
        }
        all
    }
}

/// Senders step through the people by a prime, so that they do not march in lockstep.
fn senders_step(sender: usize) -> usize {
    [7, 11, 13, 17][sender % 4]
}

async fn send(
    client: &reqwest::Client,
    fleet: &Fleet,
    person: usize,
    body: Vec<u8>,
    n: usize,
    started: Instant,
) -> Sent {
    let message_id = serde_json::from_slice::<Value>(&body).unwrap()["twi_message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = webhook_path(&body);
    let mut answers = Vec::new();
    for attempt in 0..ATTEMPTS {
        let url = format!("{}{path}", fleet.pick(n + attempt));
        let at = started.elapsed();
        let sent_at = Instant::now();
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-twilio-signature", sign(AUTH_TOKEN, &url))
            .body(body.clone())
            .send()
            .await;
        let mut answer = Answer {
            at,
            status: 0,
            duplicate: false,
            delivered: 0,
            took: Duration::ZERO,
        };
        if let Ok(r) = response {
            answer.status = r.status().as_u16();
            let doc: Value = r.json().await.unwrap_or(Value::Null);
            answer.duplicate = doc["duplicate"] == true;
            answer.delivered = doc["delivered"].as_u64().unwrap_or(0);
        }
        answer.took = sent_at.elapsed();
        let done = matches!(answer.status, 200 | 404);
        answers.push(answer);
        if done {
            break;
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
    Sent {
        person,
        message_id,
        answers,
    }
}
