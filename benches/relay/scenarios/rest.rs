//! Scenario 4, sockets at rest: how much resident memory one idle, authenticated WebSocket
//! costs a replica. A fresh replica per run; its RSS before the sockets connect and after they
//! have sat idle past a presence renewal.

use std::time::Duration;

use super::{CpuMeter, check_quiet, webhooks_for};
use crate::Bench;
use crate::fleet::Fleet;
use crate::load;
use crate::procs::{Callrelay, Error, Redis, rss_bytes};
use crate::report::{Better, Samples};

/// Loopback source addresses the clients spread over (each has its own port range).
const SOURCES: u8 = 8;

pub async fn run(b: &mut Bench) -> Result<(), Error> {
    for count in b.socket_counts.clone() {
        let mut samples = Samples::default();
        for _ in 0..b.runs {
            let prefix = b.prefix();
            // A Redis of its own: its memory growth is what the sockets' presences cost.
            let redis = Redis::start()?;
            let relay = Callrelay::start(&redis, &prefix, "")?;
            // A few webhooks first, so that lazily built state is not counted per socket.
            let run = b.run_id();
            let warm = webhooks_for(relay.addr, run, 200.0, 1.0, |i| format!("idle{i}"));
            load::closed_loop(relay.addr, warm, 8, Duration::from_secs(5))
                .await
                .expect_all(404, "sockets at rest warm-up")?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = rss_bytes(relay.pid())?;
            let redis_before = redis.used_memory()?;

            let identities: Vec<String> = (0..count).map(|i| format!("idle{i}")).collect();
            let mut fleet = Fleet::connect(relay.addr, &identities, SOURCES, 128).await?;
            // What idle sockets cost Redis: their presence renewals (a third of the lease
            // apart), measured while they sit.
            let redis_cpu = CpuMeter::start(&[redis.pid()]);
            let replica_cpu = CpuMeter::start(&[relay.pid()]);
            tokio::time::sleep(b.settle).await;
            let seconds = b.settle.as_secs_f64();
            let per_socket_second = |cpu: &CpuMeter| cpu.micros_per(count as u64) / seconds;
            samples.add("redis cpu", per_socket_second(&redis_cpu));
            samples.add("replica cpu", per_socket_second(&replica_cpu));
            let after = rss_bytes(relay.pid())?;
            for (sockets, rss) in [(0, before), (count, after)] {
                b.curves.point(
                    "rss-sockets",
                    &[
                        ("sockets", sockets as f64),
                        ("rss_mib", rss as f64 / (1024.0 * 1024.0)),
                    ],
                );
            }
            let redis_after = redis.used_memory()?;

            // The sockets are live bindings: a webhook to one of them is delivered.
            let run = b.run_id();
            let probe = webhooks_for(relay.addr, run, 10.0, 1.0, |i| {
                format!("idle{}", i * 97 % count)
            });
            let t = load::closed_loop(relay.addr, probe, 2, Duration::from_secs(5)).await;
            t.expect_all(200, "a webhook to an idle socket")?;
            if fleet
                .collect(run, t.count(200) as usize, Duration::from_secs(5))
                .await
                .len() as u64
                != t.count(200)
            {
                return Err("an idle socket did not receive its notification".into());
            }
            fleet.check()?;
            samples.add(
                "per socket",
                after.saturating_sub(before) as f64 / count as f64,
            );
            samples.add("total", after as f64 / (1024.0 * 1024.0));
            samples.add(
                "redis per socket",
                redis_after.saturating_sub(redis_before) as f64 / count as f64,
            );
            fleet.close().await;
            check_quiet(&relay)?;
        }
        let scenario = "4. sockets at rest";
        b.row(
            scenario,
            &format!("RSS per idle socket, {count} sockets"),
            &samples,
            ("per socket", None),
            Better::Less,
            "bytes",
        );
        b.row(
            scenario,
            &format!("replica RSS with {count} sockets"),
            &samples,
            ("total", None),
            Better::Less,
            "MiB",
        );
        b.row(
            scenario,
            &format!("Redis memory per socket presence, {count} sockets"),
            &samples,
            ("redis per socket", None),
            Better::Less,
            "bytes",
        );
        for (who, name) in [("replica", "replica cpu"), ("Redis", "redis cpu")] {
            b.row(
                scenario,
                &format!("{who} CPU per idle socket per second, {count} sockets"),
                &samples,
                (name, None),
                Better::Less,
                "µs",
            );
        }
    }
    Ok(())
}
