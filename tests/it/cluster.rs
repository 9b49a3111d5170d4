//! Redis Cluster: three masters with a replica each, started by the tests. Cross-replica
//! delivery goes over sharded pub/sub (a delivery request reaches the one shard that owns the
//! replica's channel); slots moving under load and a master dying under load give correct
//! answers or `503`s, never a `404` for a callee who has a binding, and callrelay recovers,
//! its replica-bus subscription following the channel to its new node, without a restart.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::load::Load;
use crate::helpers::topology::{Cluster, shared_cluster};
use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

fn cluster_config(cluster: &Cluster, prefix: &str) -> TestConfig {
    TestConfig {
        fake_apps: vec![("android", "fcm")],
        prefix: prefix.to_owned(),
        presence_ttl_ms: 5000,
        ..TestConfig::with_engine(Engine::Store(cluster.store_toml()))
    }
}

async fn register(app: &TestApp, identity: &str) {
    let r = app.put_fcm(identity, "phone").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_webhook_on_one_replica_reaches_a_socket_on_another_over_sharded_pubsub() {
    let cluster = tokio::task::spawn_blocking(shared_cluster).await.unwrap();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let a = spawn_with(cluster_config(cluster, &prefix)).await;
    let b = spawn_with(cluster_config(cluster, &prefix)).await;
    let mut bob = a.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let mut r = b.webhook(body.clone()).await;
    // The subscription reaches its shard a moment after the socket is announced.
    for _ in 0..50 {
        if r.status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = b.webhook(payload(ACCOUNT, "bob")).await;
    }
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"delivered": 1, "failed": 0, "removed": 0}));
    assert!(bob.next_text(WAIT).await.is_some());

    // A's channel is a shard channel on the master that owns its slot, and nowhere a classic
    // pub/sub channel.
    let channel = format!("{prefix}:node:{}", a.node());
    let owner = cluster.master_of(&channel);
    let owner = cluster.nodes.iter().find(|n| n.port == owner).unwrap();
    assert!(
        owner
            .cli(&["PUBSUB", "SHARDCHANNELS", &format!("{prefix}:*")])
            .contains(&channel),
        "{channel} is not a shard channel on its owner"
    );
    for node in &cluster.nodes {
        assert!(
            !node
                .cli(&["PUBSUB", "CHANNELS", &format!("{prefix}:*")])
                .contains(&channel)
        );
    }
}

/// One cluster, two stages under a steady webhook load on two replicas: first the slots of
/// replica A's bus channel and of some callees move to another master (MOVED and ASK
/// redirects while the keys migrate); then the master that now owns A's channel is killed
/// with SIGKILL and its replica promoted. Push callees must get `200` or `503` (never a
/// `404`); the socket on A may also get `502` while A's subscription moves (nobody
/// acknowledged, which is true). Both times callrelay recovers by itself, and a webhook on B
/// reaches the socket on A again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_moving_and_a_master_dying_under_load() {
    let mut cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let a = Arc::new(spawn_with(cluster_config(&cluster, &prefix)).await);
    let b = Arc::new(spawn_with(cluster_config(&cluster, &prefix)).await);
    let identities: Vec<String> = (0..24).map(|i| format!("user{i}")).collect();
    for identity in &identities {
        register(&a, identity).await;
    }
    let mut bob = a.connect_ws("bob").await;
    assert!(
        eventually(WAIT, || async {
            b.notify("bob").await.status == StatusCode::OK
        })
        .await,
        "bob reachable through B before the test"
    );
    tokio::task::block_in_place(|| cluster.wait_until_healthy(Duration::from_secs(10)));

    let channel = format!("{prefix}:node:{}", a.node());
    let mut callees = identities.clone();
    callees.push("bob".into());
    let load = Load::start(vec![a.clone(), b.clone()], callees, 4);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Stage 1: slots move.
    let moving_at = load.now();
    let channel_slot = cluster.slot_of(&channel);
    let from = cluster.master_of_slot(channel_slot);
    let to = *cluster.master_ports().iter().find(|p| **p != from).unwrap();
    let mut slots = vec![channel_slot];
    for identity in identities.iter().take(8) {
        let key = format!("{prefix}:{{{ACCOUNT}:{identity}}}:b");
        slots.push(cluster.slot_of(&key));
    }
    tokio::task::block_in_place(|| {
        for slot in &slots {
            cluster.move_slot(*slot, to);
        }
    });
    let moved_at = load.now();
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Stage 2: the master that owns A's channel now dies.
    let victim = cluster.master_of_slot(channel_slot);
    assert_eq!(victim, to);
    let killed_at = load.now();
    cluster.node(victim).kill();
    tokio::task::block_in_place(|| cluster.wait_until_healthy(Duration::from_secs(30)));
    let promoted_at = load.now();
    let new_owner = cluster.master_of_slot(channel_slot);
    assert_ne!(new_owner, victim);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = load.stop().await;

    let push_wrong: Vec<_> = report
        .unexpected(Duration::ZERO, &[200, 503])
        .into_iter()
        .filter(|s| s.identity != "bob")
        .collect();
    let socket_wrong: Vec<_> = report
        .unexpected(Duration::ZERO, &[200, 502, 503])
        .into_iter()
        .filter(|s| s.identity == "bob")
        .collect();
    let stage1: Vec<_> = report
        .samples
        .iter()
        .filter(|s| s.at >= moving_at && s.at < killed_at)
        .collect();
    let stage1_failed = stage1.iter().filter(|s| s.status != 200).count();
    eprintln!(
        "cluster: {} slots moved to :{to} in {:?} under load ({} webhooks meanwhile and after, \
         {stage1_failed} not 200); master :{victim} killed at {killed_at:?}, replica :{new_owner} \
         serving {:?} later; {} webhooks in all, answers by status {:?}, wrong 404s {}, \
         socket answers other than 200/502/503 {}, served again {:?} after the kill, slowest \
         answer {:?}",
        slots.len(),
        moved_at - moving_at,
        stage1.len(),
        promoted_at - killed_at,
        report.samples.len(),
        report.by_status(),
        report.count(404),
        socket_wrong.len(),
        report.recovered_after(killed_at),
        report.slowest(),
    );
    assert!(push_wrong.is_empty(), "{push_wrong:?}");
    assert!(socket_wrong.is_empty(), "{socket_wrong:?}");
    assert_eq!(report.count(404), 0);
    assert!(
        report.recovered_after(killed_at).is_some(),
        "callrelay must serve again without a restart: {:?}",
        report.by_status()
    );
    for identity in &identities {
        assert_eq!(
            b.notify(identity).await.status,
            StatusCode::OK,
            "{identity}"
        );
    }
    while bob.next_text(Duration::from_millis(100)).await.is_some() {}
    let r = b.notify("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(bob.next_text(WAIT).await.is_some());
}

/// `store.min_replica_acks` on a cluster: each master has one replica, so one acknowledgement
/// comes for every binding write (each write's `WAIT` goes to the master that took it, with a
/// marker in the write's own slot) and registrations succeed; two never come, and
/// registrations are refused with `503` rather than acknowledged.
#[tokio::test]
async fn replica_acknowledgements_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(shared_cluster).await.unwrap();
    let with_acks = |n: u32| TestConfig {
        fake_apps: vec![("android", "fcm")],
        // WAIT is bounded by the command timeout: room for a replica on a loaded machine.
        command_timeout_ms: 3000,
        ..TestConfig::with_engine(Engine::Store(format!(
            "{}min_replica_acks = {n}\n",
            cluster.store_toml()
        )))
    };
    let one = spawn_with(with_acks(1)).await;
    for i in 0..10 {
        register(&one, &format!("acked{i}")).await;
        let r = one
            .api(
                reqwest::Method::GET,
                "/v1/bindings/phone",
                &token(&format!("acked{i}")),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let two = spawn_with(with_acks(2)).await;
    let binding = json!({"channel": "fcm", "address": "token-refused"});
    let r = two
        .api(
            reqwest::Method::PUT,
            "/v1/bindings/phone",
            &token("refused"),
            Some(binding),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
}
