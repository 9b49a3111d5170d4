//! Redis Sentinel: callrelay finds the master through three real sentinels and follows a
//! failover. Each test here starts its own master, replica and sentinels, since it kills one.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::load::Load;
use crate::helpers::topology::{MASTER_NAME, SentinelSet};
use crate::helpers::*;

async fn register(app: &TestApp, identity: &str) -> StatusCode {
    app.put_fcm(identity, "phone").await.status
}

async fn binding_status(app: &TestApp, identity: &str) -> StatusCode {
    app.get_binding(identity, "phone").await.status
}

/// Waits (off the async threads) until the replica holds as many keys as the master.
async fn replica_caught_up(set: &SentinelSet) {
    let (master, replica) = (set.nodes[0].port, set.nodes[1].port);
    let dbsize = |port: u16| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "DBSIZE"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            dbsize(master) == dbsize(replica)
        })
        .await,
        "the replica did not catch up"
    );
}

/// Two failovers under a steady webhook load: first a graceful one (`SENTINEL FAILOVER`: the
/// master is demoted to a replica, its clients disconnected, writes to it refused with
/// `READONLY`), then the new master killed with SIGKILL. Answers are correct `200`s or `503`s
/// while the sentinels promote a replica, never a `404` for an identity that has a binding,
/// and the same callrelay process serves again each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failovers_under_load_give_no_wrong_answer() {
    let mut set = tokio::task::spawn_blocking(SentinelSet::start)
        .await
        .unwrap();
    let app = Arc::new(
        spawn_with(TestConfig {
            fake_apps: vec![("android", "fcm")],
            ..TestConfig::with_engine(Engine::Store(set.store_toml()))
        })
        .await,
    );
    let identities: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    for identity in &identities {
        assert_eq!(register(&app, identity).await, StatusCode::CREATED);
    }
    // Replication is asynchronous: what is lost when the master dies before sending it is
    // the durability test's business; this one is about serving.
    replica_caught_up(&set).await;

    let load = Load::start(vec![app.clone()], identities.clone(), 4);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A graceful failover.
    let first = set.master_port();
    let switched_at = load.now();
    let out = set.sentinels[0].cli(&["SENTINEL", "FAILOVER", MASTER_NAME]);
    assert_eq!(out.trim(), "OK", "{out}");
    let second =
        tokio::task::block_in_place(|| set.wait_for_promotion(first, Duration::from_secs(30)));
    let switched_in = load.now() - switched_at;
    // The demoted master must follow the new one before it can be promoted back. Sentinel
    // reconfigures it on its own within about ten seconds; the test does it at once. And the
    // sentinels refuse a second failover within twice failover-timeout of the first.
    let out = set
        .node(first)
        .cli(&["REPLICAOF", "127.0.0.1", &second.to_string()]);
    assert_eq!(out.trim(), "OK", "{out}");
    tokio::task::block_in_place(|| {
        set.wait_until_ready_to_fail_over(Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(4).saturating_sub(switched_in));
    });

    // The new master dies.
    let killed_at = load.now();
    set.node(second).kill();
    let third =
        tokio::task::block_in_place(|| set.wait_for_promotion(second, Duration::from_secs(30)));
    assert_eq!(third, first);
    let promoted_in = load.now() - killed_at;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.stop().await;

    let wrong = report.unexpected(Duration::ZERO, &[200, 503]);
    let during_switch: Vec<_> = report
        .samples
        .iter()
        .filter(|s| s.at >= switched_at && s.at < killed_at)
        .collect();
    eprintln!(
        "sentinel: graceful failover :{first} -> :{second} in {switched_in:?} ({} webhooks until \
         the kill, {} not 200); master :{second} killed at {killed_at:?}, :{third} promoted \
         {promoted_in:?} later; {} webhooks in all, answers by status {:?}, wrong 404s {}, \
         other wrong answers {}, served again {:?} after the kill, slowest answer {:?}",
        during_switch.len(),
        during_switch.iter().filter(|s| s.status != 200).count(),
        report.samples.len(),
        report.by_status(),
        report.count(404),
        wrong.len(),
        report.recovered_after(killed_at),
        report.slowest(),
    );
    assert!(wrong.is_empty(), "answers other than 200 or 503: {wrong:?}");
    assert!(report.count(503) > 0, "the outage must be visible");
    assert!(
        report.recovered_after(killed_at).is_some(),
        "callrelay must serve again after the promotion: {:?}",
        report.by_status()
    );
    for identity in &identities {
        assert_eq!(app.notify(identity).await.status, StatusCode::OK);
        assert_eq!(binding_status(&app, identity).await, StatusCode::OK);
    }
    // And writes go to the new master.
    assert_eq!(register(&app, "after-failover").await, StatusCode::CREATED);
}

/// With `store.min_replica_acks = 1` a binding is acknowledged only once the replica has it,
/// so every acknowledged binding survives the master's death; without it, a binding written
/// while the replica lags is acknowledged and then lost with the master. The replica is made
/// to lag by freezing it (SIGSTOP) and cutting its replication link (what the kernel had
/// already buffered for it still arrives); the master is killed while it lags, and the
/// replica promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_acks_an_acknowledged_binding_survives_the_masters_death() {
    let mut set = tokio::task::spawn_blocking(SentinelSet::start)
        .await
        .unwrap();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let durable = spawn_with(TestConfig {
        fake_apps: vec![("android", "fcm")],
        prefix: prefix.clone(),
        ..TestConfig::with_engine(Engine::Store(format!(
            "{}min_replica_acks = 1\n",
            set.store_toml()
        )))
    })
    .await;
    let fast = spawn_with(TestConfig {
        fake_apps: vec![("android", "fcm")],
        prefix,
        ..TestConfig::with_engine(Engine::Store(set.store_toml()))
    })
    .await;

    let acknowledged: Vec<String> = (0..5).map(|i| format!("acked{i}")).collect();
    for identity in &acknowledged {
        assert_eq!(register(&durable, identity).await, StatusCode::CREATED);
    }

    let (master, replica) = (set.master_port(), set.nodes[1].port);
    assert_ne!(master, replica);
    set.node(replica).pause();
    let killed = set.node(master).cli(&["CLIENT", "KILL", "TYPE", "replica"]);
    assert_eq!(killed.trim(), "1", "the replication link is cut");
    // The replica cannot acknowledge: refused (not acknowledged) with acks required...
    for i in 0..3 {
        let status = register(&durable, &format!("refused{i}")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // ...acknowledged at once without.
    let at_risk: Vec<String> = (0..3).map(|i| format!("at-risk{i}")).collect();
    for identity in &at_risk {
        assert_eq!(register(&fast, identity).await, StatusCode::CREATED);
    }
    set.node(master).kill();
    set.node(replica).resume();
    let promoted =
        tokio::task::block_in_place(|| set.wait_for_promotion(master, Duration::from_secs(30)));
    assert_eq!(promoted, replica);

    for app in [&durable, &fast] {
        assert!(
            eventually(Duration::from_secs(15), || async {
                binding_status(app, &acknowledged[0]).await == StatusCode::OK
            })
            .await,
            "callrelay follows the promotion"
        );
    }
    for identity in &acknowledged {
        assert_eq!(
            binding_status(&durable, identity).await,
            StatusCode::OK,
            "{identity} was acknowledged with min_replica_acks and must survive"
        );
    }
    let lost = {
        let mut lost = 0;
        for identity in &at_risk {
            if binding_status(&fast, identity).await == StatusCode::NOT_FOUND {
                lost += 1;
            }
        }
        lost
    };
    eprintln!(
        "sentinel failover with a lagging replica: {} of {} bindings acknowledged with \
         min_replica_acks = 1 survived; {lost} of {} acknowledged without it were lost",
        acknowledged.len(),
        acknowledged.len(),
        at_risk.len()
    );
    assert_eq!(
        lost,
        at_risk.len(),
        "without acknowledgements, what only the dead master had is gone (the trade-off the \
         setting exists for)"
    );
}
