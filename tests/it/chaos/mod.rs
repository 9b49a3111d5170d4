//! The chaos suite: three callrelay processes on one Redis (append-only, fsync on every
//! write), WebSocket clients spread over them, an APNs or FCM binding for every identity on
//! the mocks, and a steady stream of call notifications sent as Twilio sends them (a failed
//! answer retried on another replica). Meanwhile, in turn: a rolling restart (SIGTERM one
//! replica at a time, a new one started in its place; clients reconnect elsewhere), a replica
//! killed with SIGKILL, Redis frozen (SIGSTOP) for 2 s, and Redis restarted.
//!
//! It counts the notifications sent, their answers by status, wrong `404`s (every identity
//! has a push binding, so a `404` is always wrong), duplicates said of what no device
//! received, notifications that never got a `200`, and notifications that reached one
//! device twice, by the fault they were sent during. Only a replica killed mid-delivery may
//! ring a device twice (README, "Delivery guarantees"): the retry cannot know what the dead
//! replica had already sent.
//!
//! Small by default (CI); `CALLRELAY_CHAOS=full` runs it at full size:
//! `CALLRELAY_CHAOS=full cargo test --test it chaos -- --nocapture` prints the figures.

mod devices;
mod twilio;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::{Clients, Ledger, Person};
use twilio::{Sent, Twilio};

use crate::apns::{KEY_ID, TEAM, TOPIC};
use crate::helpers::redis::{RedisServer, ServerOptions};
use crate::helpers::{Engine, ProcessApp, TestConfig};
use callrelay_testkit::apns::{MockApns, TeamKey};
use callrelay_testkit::fcm::MockFcm;

const DEADLINE_MS: u64 = 1000;
const REPLICAS: usize = 3;
/// What a notification was in flight during when it may ring a device twice.
const KILLED: &str = "in flight at the SIGKILL";

struct Size {
    people: usize,
    senders: usize,
    pace: Duration,
    /// Steady load before the first fault and between faults.
    calm: Duration,
}

impl Size {
    fn from_env() -> Self {
        match std::env::var("CALLRELAY_CHAOS").as_deref() {
            Ok("full") => Self {
                people: 400,
                senders: 16,
                pace: Duration::from_millis(5),
                calm: Duration::from_secs(5),
            },
            _ => Self {
                people: 24,
                senders: 4,
                pace: Duration::from_millis(20),
                calm: Duration::from_millis(1500),
            },
        }
    }
}

/// Where a load balancer would send requests now: the public addresses of the replicas in
/// service, and their admin addresses.
#[derive(Clone, Default)]
pub struct Fleet(Arc<Mutex<Vec<(String, String)>>>);

impl Fleet {
    /// The `n`th replica in service (modulo their number).
    pub fn pick(&self, n: usize) -> String {
        let all = self.0.lock().unwrap();
        all[n % all.len()].0.clone()
    }

    fn add(&self, app: &ProcessApp) {
        self.0
            .lock()
            .unwrap()
            .push((app.base.clone(), app.admin.clone()));
    }

    fn remove(&self, app: &ProcessApp) {
        self.0.lock().unwrap().retain(|(base, _)| *base != app.base);
    }

    /// Sockets open on the replicas in service, from their metrics.
    pub async fn open_sockets(&self) -> usize {
        let admins: Vec<String> = self.0.lock().unwrap().iter().map(|a| a.1.clone()).collect();
        let mut open = 0;
        for admin in admins {
            let Ok(r) = reqwest::get(format!("{admin}/metrics")).await else {
                continue;
            };
            let text = r.text().await.unwrap_or_default();
            open += text
                .lines()
                .find_map(|l| l.strip_prefix("callrelay_websocket_connections "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as usize;
        }
        open
    }
}

/// When each fault began, from the start of the load, and when the replica was killed.
#[derive(Default)]
struct Phases {
    begun: Vec<(Duration, &'static str)>,
    killed_at: Option<Duration>,
}

impl Phases {
    fn begin(&mut self, twilio: &Twilio, name: &'static str) {
        self.begun.push((twilio.now(), name));
    }

    /// The phase a notification belongs to: in flight at the kill if any of its attempts
    /// was, else the phase it was first sent in.
    fn of(&self, sent: &Sent) -> &'static str {
        let end = sent.last().at + sent.last().took;
        if self
            .killed_at
            .is_some_and(|k| sent.first_sent() <= k && k <= end)
        {
            return KILLED;
        }
        self.begun
            .iter()
            .rev()
            .find(|(start, _)| *start <= sent.first_sent())
            .map_or("steady", |(_, name)| name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_and_redis_failing_under_load_lose_no_call_and_ring_none_twice() {
    let size = Size::from_env();
    let mut redis = RedisServer::start_with(ServerOptions {
        durable: true,
        ..ServerOptions::default()
    });
    let key = TeamKey::generate(TEAM, KEY_ID);
    let apns = MockApns::token_auth(&[&key]).await;
    let fcm = MockFcm::start().await;
    let config = TestConfig {
        engine: Engine::RedisAt(redis.url()),
        deadline_ms: DEADLINE_MS,
        command_timeout_ms: 300,
        presence_ttl_ms: 3000,
        ping_interval_ms: 1000,
        queue_capacity: 64,
        extra: apns.token_app("ios", TOPIC, &key, "") + &fcm.app_toml("android", "chaos-project"),
        ..TestConfig::default()
    };
    let fleet = Fleet::default();
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        let app = ProcessApp::start(&config).await;
        fleet.add(&app);
        replicas.push(app);
    }
    let people = devices::people(size.people);
    devices::register(&replicas[0].base, &people).await;
    let ledger = Ledger::default();
    let clients = Clients::start(&fleet, &people, &ledger);
    let sockets = people.iter().filter(|p| p.has_socket).count();
    Clients::wait_connected(&fleet, sockets).await;

    let twilio = Twilio::start(&fleet, &people, size.senders, size.pace);
    let mut phases = Phases::default();
    tokio::time::sleep(size.calm).await;

    phases.begin(&twilio, "rolling restart (SIGTERM)");
    for replica in replicas.iter_mut() {
        // The load balancer stops sending to the replica as it is told to stop.
        fleet.remove(replica);
        // Off the runtime's threads: the mocks and clients run on them.
        let status = tokio::task::block_in_place(|| replica.terminate());
        assert!(
            status.success(),
            "a replica exits cleanly on SIGTERM: {status}"
        );
        let fresh = ProcessApp::start(&config).await;
        fleet.add(&fresh);
        let old = std::mem::replace(replica, fresh);
        tokio::task::block_in_place(|| drop(old));
        tokio::time::sleep(size.calm / 2).await;
    }
    phases.begin(&twilio, "steady, after the restart");
    tokio::time::sleep(size.calm).await;

    phases.begin(&twilio, "replica killed (SIGKILL)");
    // Killed while still in service: requests to it fail until it is taken out.
    phases.killed_at = Some(twilio.now());
    tokio::task::block_in_place(|| replicas[1].kill());
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.remove(&replicas[1]);
    let fresh = ProcessApp::start(&config).await;
    fleet.add(&fresh);
    let old = std::mem::replace(&mut replicas[1], fresh);
    tokio::task::block_in_place(|| drop(old));
    tokio::time::sleep(size.calm).await;

    phases.begin(&twilio, "Redis frozen 2 s (SIGSTOP)");
    redis.pause();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.resume();
    tokio::time::sleep(size.calm).await;

    phases.begin(&twilio, "Redis restarted (append-only file)");
    tokio::task::block_in_place(|| {
        redis.stop();
        redis.restart();
    });
    tokio::time::sleep(size.calm).await;
    phases.begin(&twilio, "steady, at the end");
    tokio::time::sleep(size.calm).await;

    let sent = twilio.stop().await;
    // The last frames and pushes land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connects = clients.stop().await;
    ledger.add_pushes(&apns, &fcm);

    let figures = Figures::of(&sent, &people, &ledger, &phases);
    eprintln!("chaos suite: {} client connections in all", connects);
    eprintln!("{figures}");
    assert!(figures.notifications >= size.people, "{figures}");
    assert_eq!(figures.wrong_404s, 0, "{figures}");
    assert_eq!(figures.lying_duplicates, 0, "{figures}");
    assert_eq!(figures.never_delivered, 0, "{figures}");
    assert_eq!(figures.answered_but_not_received, 0, "{figures}");
    let undocumented: Vec<_> = figures
        .twice
        .iter()
        .filter(|(phase, _)| *phase != KILLED)
        .collect();
    assert!(undocumented.is_empty(), "{figures}");
    // Every answer within the deadline, give or take a loaded machine's scheduling.
    assert!(
        figures.slowest <= Duration::from_millis(DEADLINE_MS + 1000),
        "{figures}"
    );
}

/// What the run measured.
struct Figures {
    notifications: usize,
    attempts: usize,
    by_status: BTreeMap<u16, usize>,
    wrong_404s: usize,
    lying_duplicates: usize,
    never_delivered: usize,
    answered_but_not_received: usize,
    /// Phase → (device, message id, times) of notifications that arrived more than once.
    twice: Vec<(&'static str, (String, String, u32))>,
    slowest: Duration,
}

impl Figures {
    fn of(sent: &[Sent], people: &[Person], ledger: &Ledger, phases: &Phases) -> Self {
        let mut f = Figures {
            notifications: sent.len(),
            attempts: 0,
            by_status: BTreeMap::new(),
            wrong_404s: 0,
            lying_duplicates: 0,
            never_delivered: 0,
            answered_but_not_received: 0,
            twice: Vec::new(),
            slowest: Duration::ZERO,
        };
        let mut phase_of = std::collections::HashMap::new();
        for s in sent {
            phase_of.insert(s.message_id.clone(), phases.of(s));
            let reached = ledger.reached(&people[s.person].devices, &s.message_id);
            for a in &s.answers {
                f.attempts += 1;
                *f.by_status.entry(a.status).or_default() += 1;
                f.slowest = f.slowest.max(a.took);
                if a.status == 404 {
                    f.wrong_404s += 1;
                }
                if a.status == 200 && a.duplicate && !reached {
                    f.lying_duplicates += 1;
                }
            }
            if !s.succeeded() {
                f.never_delivered += 1;
            } else if !reached {
                f.answered_but_not_received += 1;
            }
        }
        for repeat in ledger.repeats() {
            let phase = phase_of.get(&repeat.1).copied().unwrap_or("unknown");
            f.twice.push((phase, repeat));
        }
        f
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "notifications {}, attempts {}, answers by status (0: no answer) {:?}",
            self.notifications, self.attempts, self.by_status
        )?;
        writeln!(
            f,
            "wrong 404s {}, duplicates of what nobody received {}, never answered 200 {}, answered 200 but not received {}",
            self.wrong_404s,
            self.lying_duplicates,
            self.never_delivered,
            self.answered_but_not_received
        )?;
        writeln!(
            f,
            "slowest answer {:?} (deadline {DEADLINE_MS} ms)",
            self.slowest
        )?;
        writeln!(f, "reached a device twice: {}", self.twice.len())?;
        for (phase, (device, id, n)) in &self.twice {
            writeln!(f, "  {phase}: {device} got {id} {n} times")?;
        }
        Ok(())
    }
}
