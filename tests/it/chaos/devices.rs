//! The devices of the chaos suite: every identity has a push binding (APNs or FCM, on the
//! mocks) and every other one also a WebSocket client, which reconnects to another live
//! replica whenever its connection ends. What each device received is counted by
//! `twi_message_id`, so a notification that rang a device twice shows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::Fleet;
use crate::helpers::ws::WsClient;
use crate::helpers::{ACCOUNT, API_KEY, API_SECRET, mint};
use callrelay_testkit::apns::MockApns;
use callrelay_testkit::fcm::MockFcm;

/// Device → message id → how many times it arrived.
#[derive(Default, Clone)]
pub struct Ledger(Arc<Mutex<HashMap<String, HashMap<String, u32>>>>);

impl Ledger {
    pub fn record(&self, device: &str, message_id: &str) {
        let mut all = self.0.lock().unwrap();
        *all.entry(device.to_owned())
            .or_default()
            .entry(message_id.to_owned())
            .or_default() += 1;
    }

    /// Adds what the mocks received: each APNs request and each FCM message is one arrival
    /// at the device its token names.
    pub fn add_pushes(&self, apns: &MockApns, fcm: &MockFcm) {
        for r in apns.requests() {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            self.record(
                &format!("apns:{}", r.device_token),
                body["twi_message_id"].as_str().unwrap(),
            );
        }
        for s in fcm.sent() {
            let m = s.message();
            self.record(
                &format!("fcm:{}", m["token"].as_str().unwrap()),
                m["data"]["twi_message_id"].as_str().unwrap(),
            );
        }
    }

    /// Every (device, message id) that arrived more than once.
    pub fn repeats(&self) -> Vec<(String, String, u32)> {
        let all = self.0.lock().unwrap();
        let mut out: Vec<_> = all
            .iter()
            .flat_map(|(device, ids)| {
                ids.iter()
                    .filter(|(_, n)| **n > 1)
                    .map(|(id, n)| (device.clone(), id.clone(), *n))
            })
            .collect();
        out.sort();
        out
    }

    /// Whether any of `devices` received `message_id`.
    pub fn reached(&self, devices: &[String], message_id: &str) -> bool {
        let all = self.0.lock().unwrap();
        devices
            .iter()
            .any(|d| all.get(d).is_some_and(|ids| ids.contains_key(message_id)))
    }
}

/// One identity and the devices it rings.
#[derive(Clone)]
pub struct Person {
    pub identity: String,
    pub devices: Vec<String>,
    /// `(channel, address)` of its push binding.
    push: (&'static str, String),
    pub has_socket: bool,
}

pub fn people(count: usize) -> Vec<Person> {
    (0..count)
        .map(|i| {
            let identity = format!("chaos-{i}");
            let push = if i % 2 == 0 {
                ("apns", format!("{:064x}", i + 1))
            } else {
                ("fcm", format!("Y2hhb3M{i}:APA91bChaos-{i}"))
            };
            let has_socket = i % 4 < 2;
            let mut devices = vec![format!("{}:{}", push.0, push.1)];
            if has_socket {
                devices.push(format!("ws:{identity}"));
            }
            Person {
                identity,
                devices,
                push,
                has_socket,
            }
        })
        .collect()
}

fn access_token(identity: &str) -> String {
    mint(
        ACCOUNT,
        API_KEY,
        API_SECRET,
        identity,
        Duration::from_secs(3600),
    )
}

/// Registers each person's push binding through the bindings API of `base`.
pub async fn register(base: &str, people: &[Person]) {
    let client = reqwest::Client::new();
    for p in people {
        let r = client
            .post(format!("{base}/v1/bindings"))
            .bearer_auth(access_token(&p.identity))
            .json(&json!({"channel": p.push.0, "address": p.push.1}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(status, StatusCode::CREATED, "{}", r.text().await.unwrap());
    }
}

/// The WebSocket clients, running until `stop`.
pub struct Clients {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<u32>>,
}

impl Clients {
    pub fn start(fleet: &Fleet, people: &[Person], ledger: &Ledger) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = people
            .iter()
            .filter(|p| p.has_socket)
            .enumerate()
            .map(|(n, p)| {
                let (fleet, ledger, stop) = (fleet.clone(), ledger.clone(), stop.clone());
                let identity = p.identity.clone();
                tokio::spawn(async move { client(fleet, identity, ledger, stop, n).await })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the clients; how many times they connected in all.
    pub async fn stop(self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        let mut connects = 0;
        for t in self.tasks {
            connects += t.await.unwrap();
        }
        connects
    }

    /// Waits until every client is connected (before the load starts).
    pub async fn wait_connected(fleet: &Fleet, sockets: usize) {
        let started = std::time::Instant::now();
        while fleet.open_sockets().await < sockets {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the clients did not all connect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One device's client: connect to a live replica (starting with the `n`th), record every
/// frame, and reconnect to the next live one when the connection ends.
async fn client(
    fleet: Fleet,
    identity: String,
    ledger: Ledger,
    stop: Arc<AtomicBool>,
    n: usize,
) -> u32 {
    let token = access_token(&identity);
    let device = format!("ws:{identity}");
    let mut connects = 0;
    let mut next = n;
    while !stop.load(Ordering::Relaxed) {
        let base = fleet.pick(next);
        next += 1;
        let Ok(mut ws) = WsClient::connect(&base, &token, None).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        connects += 1;
        while !stop.load(Ordering::Relaxed) {
            match ws.next_text_or_end(Duration::from_millis(200)).await {
                Ok(Some(text)) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    ledger.record(&device, v["twi_message_id"].as_str().unwrap());
                }
                Ok(None) => {}
                Err(()) => break,
            }
        }
    }
    connects
}
