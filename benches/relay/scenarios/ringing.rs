//! Scenario 8, ringing: what `delivery = "prefer_websocket"` costs a call (README, "Ringing
//! right"). Every identity is one phone: an APNs VoIP binding registered through the bindings
//! API and a WebSocket opened with `ack=1`, both naming the device `<identity>-phone`. Three
//! deployments, one replica each on the shared Redis, one mock APNs between them, identical
//! but for how a call rings:
//!
//! - socket acknowledges: `prefer_websocket`, and each client acknowledges every frame as soon
//!   as it reads it. The answer waits for the acknowledgement and the push is not sent
//!   (`{"delivered":1,…,"skipped":1}`).
//! - socket silent: `prefer_websocket` with `[websocket] ack_timeout_ms = 50`, and the clients
//!   say nothing. The push goes out once the timeout passed (`{"delivered":2,…}`): every answer
//!   takes the timeout and a push.
//! - all (the default): the socket and the push at once, the clients acknowledging as in the
//!   first, so that only the setting differs.
//!
//! A run is a closed loop at c=32 on each deployment, the order turning from run to run so
//! that the machine's drift falls on all three alike: requests/s, the replica's CPU per
//! webhook, and the answers' latency, which with `prefer_websocket` is the call's way to the
//! client and the acknowledgement's way back. Checks: every answer is `200` with the counts
//! above, every `200` produced one frame, the mock saw no push (socket acknowledges) or one per
//! webhook (the others), and `callrelay_socket_first_deliveries_total` counted every call as
//! acknowledged, pushed, or (with `all`) neither.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::deliver::frames_for;
use super::{CpuMeter, check_quiet, public_url};
use crate::Bench;
use crate::fleet::{Acks, Fleet, Manner};
use crate::load::{self, Tally};
use crate::procs::{Callrelay, Error};
use crate::report::{Better, Latency, Samples};
use crate::webhooks;
use callrelay_testkit::apns::{MockApns, TeamKey};

const SCENARIO: &str = "8. ringing";
/// A socket and a push binding ending so name the same device.
const DEVICE: &str = "-phone";
/// The silent deployment's `websocket.ack_timeout_ms`: far inside the webhook's deadline (5 s),
/// and short enough that a run answers hundreds of calls.
const SILENT_ACK_TIMEOUT_MS: u64 = 50;
/// The most calls per second a closed-loop run is prepared for when nothing waits out a
/// timeout.
const CEILING: f64 = 20_000.0;
/// Calls sent to each deployment before the runs: TLS and HTTP/2 to the mock, the provider
/// token, the replica's first allocations.
const WARM_UP: usize = 2000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Acknowledged,
    Silent,
    All,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Acknowledged, Mode::Silent, Mode::All];

    /// The samples' names.
    fn name(self) -> &'static str {
        match self {
            Mode::Acknowledged => "acknowledged",
            Mode::Silent => "silent",
            Mode::All => "all",
        }
    }

    /// How the table names the deployment.
    fn label(self) -> String {
        match self {
            Mode::Acknowledged => "prefer_websocket, socket acknowledges".into(),
            Mode::Silent => {
                format!("prefer_websocket, socket silent (push after {SILENT_ACK_TIMEOUT_MS} ms)")
            }
            Mode::All => "delivery = all (socket and push at once)".into(),
        }
    }

    /// Appended to the replica's configuration: the push app, and the acknowledgement
    /// timeout where it is not the default.
    fn config(self, apns: &MockApns, key: &TeamKey) -> String {
        let (delivery, websocket) = match self {
            Mode::Acknowledged => ("prefer_websocket", String::new()),
            Mode::Silent => (
                "prefer_websocket",
                format!("[websocket]\nack_timeout_ms = {SILENT_ACK_TIMEOUT_MS}\n"),
            ),
            Mode::All => ("all", String::new()),
        };
        let app = apns.token_app(
            "ios",
            "com.example.bench",
            key,
            &format!("delivery = \"{delivery}\""),
        );
        websocket + &app
    }

    fn acks(self) -> Acks {
        match self {
            Mode::Acknowledged | Mode::All => Acks::Every,
            Mode::Silent => Acks::Silent,
        }
    }

    /// The answer every call gets.
    fn answer(self) -> Value {
        match self {
            Mode::Acknowledged => json!({"delivered": 1, "failed": 0, "removed": 0, "skipped": 1}),
            Mode::Silent | Mode::All => json!({"delivered": 2, "failed": 0, "removed": 0}),
        }
    }

    /// Prepared calls per second: a silent deployment answers at most `concurrency` calls
    /// per acknowledgement timeout.
    fn ceiling(self, concurrency: usize) -> f64 {
        match self {
            Mode::Silent => 2.0 * concurrency as f64 * 1000.0 / SILENT_ACK_TIMEOUT_MS as f64,
            Mode::Acknowledged | Mode::All => CEILING,
        }
    }

    /// `callrelay_socket_first_deliveries_total` after `calls` calls: (acknowledged, pushed).
    fn socket_first(self, calls: u64) -> (u64, u64) {
        match self {
            Mode::Acknowledged => (calls, 0),
            Mode::Silent => (0, calls),
            Mode::All => (0, 0),
        }
    }
}

/// `callrelay_socket_first_deliveries_total{outcome}` so far.
fn socket_first(relay: &Callrelay, outcome: &str) -> u64 {
    let label = format!("outcome=\"{outcome}\"");
    relay
        .metrics("callrelay_socket_first_deliveries_total")
        .iter()
        .filter(|l| l.contains(&label))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// One deployment: its replica, its phones' sockets, and the calls it answered so far.
struct Deployment {
    mode: Mode,
    relay: Callrelay,
    fleet: Fleet,
    answered: u64,
}

impl Deployment {
    async fn start(
        b: &mut Bench,
        mode: Mode,
        apns: &MockApns,
        key: &TeamKey,
        identities: &[String],
    ) -> Result<Self, Error> {
        let prefix = b.prefix();
        let relay = Callrelay::start(&b.redis, &prefix, &mode.config(apns, key))?;
        super::push::register(relay.addr, identities, |i| {
            format!(
                r#"{{"channel":"apns","address":"{:064x}","app":"ios","device_id":"{}{DEVICE}"}}"#,
                i + 1,
                identities[i]
            )
        })
        .await?;
        let manner = Manner {
            device_suffix: Some(DEVICE),
            acks: mode.acks(),
        };
        let fleet = Fleet::connect_as(relay.addr, identities, 4, 64, manner).await?;
        Ok(Self {
            mode,
            relay,
            fleet,
            answered: 0,
        })
    }

    /// Up to `count` calls at concurrency `b.concurrency` for at most `within`, checked;
    /// their figures go to `samples` when given.
    async fn calls(
        &mut self,
        b: &mut Bench,
        apns: &MockApns,
        (count, within): (usize, Duration),
        user: impl Fn(usize) -> String,
        samples: Option<&mut Samples>,
    ) -> Result<(), Error> {
        let run = b.run_id();
        let target = self.relay.addr;
        let hooks = Arc::new(webhooks::batch(&public_url(target), run, count, user));
        let pushed = apns.request_count() as u64;
        let cpu = CpuMeter::start(&[self.relay.pid()]);
        let mut t = load::closed_loop_counting_bodies(target, hooks, b.concurrency, within).await;
        let cpu = cpu.micros_per(t.answered());
        let what = format!("ringing, {}", self.mode.label());
        self.check(&t, apns.request_count() as u64 - pushed, &what)?;
        frames_for(&mut self.fleet, run, &t, &what).await?;
        self.answered += t.answered();
        if let Some(samples) = samples {
            let name = self.mode.name();
            samples.add(name, t.per_second());
            samples.add(&format!("{name} cpu"), cpu);
            samples.add_latency(name, Latency::of(std::mem::take(&mut t.latencies_ns)));
        }
        Ok(())
    }

    /// Every answer `200` with the mode's counts, and the pushes the mock saw meanwhile.
    fn check(&self, t: &Tally, pushes: u64, what: &str) -> Result<(), Error> {
        t.expect_all(200, what)?;
        let expected = self.mode.answer();
        for (body, n) in &t.bodies {
            if serde_json::from_slice::<Value>(body).ok().as_ref() != Some(&expected) {
                return Err(format!(
                    "{what}: {n} answers were {}, expected {expected}",
                    String::from_utf8_lossy(body)
                )
                .into());
            }
        }
        let calls = t.answered();
        if self.mode == Mode::Acknowledged {
            if pushes > 0 {
                return Err(format!(
                    "{what}: every socket acknowledged, yet the mock received {pushes} pushes for {calls} calls"
                )
                .into());
            }
            return Ok(());
        }
        // One push per call; a push retried after a connection error reaches the mock twice
        // (as in the push scenario), so more is allowed and shown.
        if pushes < calls {
            return Err(
                format!("{what}: {calls} calls but the mock received {pushes} pushes").into(),
            );
        }
        if pushes > calls {
            println!("    {what}: {} pushes retried", pushes - calls);
        }
        Ok(())
    }

    /// Checks that the replica counted every call as the mode says, that no socket closed
    /// early and that nothing was logged as a warning; closes the sockets.
    async fn finish(self) -> Result<(), Error> {
        let counted = (
            socket_first(&self.relay, "acknowledged"),
            socket_first(&self.relay, "pushed"),
        );
        let expected = self.mode.socket_first(self.answered);
        if counted != expected {
            return Err(format!(
                "{}: after {} calls callrelay_socket_first_deliveries_total said {counted:?} \
                 (acknowledged, pushed), expected {expected:?}",
                self.mode.label(),
                self.answered
            )
            .into());
        }
        self.fleet.check()?;
        self.fleet.close().await;
        check_quiet(&self.relay)
    }
}

pub async fn run(b: &mut Bench) -> Result<(), Error> {
    let n = b.identities;
    let identities: Vec<String> = (0..n).map(|i| format!("user{i}")).collect();
    let user = move |i: usize| format!("user{}", i % n);
    let key = TeamKey::generate("TEAM123456", "KEY1234567");
    let apns = MockApns::token_auth(&[&key]).await;
    // Indexed by `Mode::ALL`'s order.
    let mut deployments = Vec::with_capacity(Mode::ALL.len());
    for mode in Mode::ALL {
        deployments.push(Deployment::start(b, mode, &apns, &key, &identities).await?);
    }
    let warm = (WARM_UP, b.duration.min(Duration::from_secs(1)));
    for d in &mut deployments {
        d.calls(b, &apns, warm, user, None).await?;
    }

    let mut samples = Samples::default();
    let seconds = b.duration.as_secs_f64();
    for run in 0..b.runs {
        let mut order: Vec<usize> = (0..deployments.len()).collect();
        order.rotate_left(run % deployments.len());
        for i in order {
            let d = &mut deployments[i];
            let count = (d.mode.ceiling(b.concurrency) * seconds).ceil() as usize;
            d.calls(
                b,
                &apns,
                (count.max(1), b.duration),
                user,
                Some(&mut samples),
            )
            .await?;
        }
    }
    rows(b, &samples);
    for d in deployments {
        d.finish().await?;
    }
    Ok(())
}

fn rows(b: &mut Bench, samples: &Samples) {
    let c = b.concurrency;
    for mode in Mode::ALL {
        let (name, label) = (mode.name(), mode.label());
        let figures: [(String, String, Better, &'static str); 4] = [
            (
                format!("requests/s, c={c}"),
                name.into(),
                Better::More,
                "req/s",
            ),
            (
                "server CPU per webhook".into(),
                format!("{name} cpu"),
                Better::Less,
                "µs",
            ),
            (
                format!("answer p50, c={c}"),
                format!("{name} p50"),
                Better::Less,
                "ms",
            ),
            (
                format!("answer p99, c={c}"),
                format!("{name} p99"),
                Better::Less,
                "ms",
            ),
        ];
        for (measure, sample, better, unit) in figures {
            b.row(
                SCENARIO,
                &format!("{measure}, {label}"),
                samples,
                (&sample, None),
                better,
                unit,
            );
        }
    }
}
