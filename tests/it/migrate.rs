//! Upgrading a store written by versions before 0.2 (bindings as a hash of JSON per identity,
//! the device-token index as an owner string and a claims hash per token): everything is read
//! at once, moved when first changed, moved all at once by `callrelay migrate`, and nothing is
//! lost on the way. `src/store/redis/legacy.rs` has the design.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use callrelay::domain::{
    AccountSid, ApnsEnvironment, Binding, BindingId, Identity, PushChannel, PushType, whole_millis,
};
use callrelay::store::Store;
use callrelay::store::redis::{Keys, TokenEntry, holder};
use redis::aio::ConnectionLike;
use time::OffsetDateTime;

use crate::helpers::redis::{RedisServer, raw_connection, shared};
use crate::helpers::topology::Cluster;

fn account() -> AccountSid {
    AccountSid::parse(crate::helpers::ACCOUNT).unwrap()
}

/// An FCM registration token of the usual length (152 characters).
fn fcm_token(i: usize) -> String {
    let head = format!("d{i:05}-Xq9:APA91b");
    format!("{head}{}", "x".repeat(152 - head.len()))
}

fn binding(identity: &str, id: &str, channel: PushChannel, address: &str) -> Binding {
    // Nanoseconds, as versions before 0.2 stored them.
    let now = OffsetDateTime::now_utc() - Duration::from_secs(3600);
    Binding {
        id: BindingId::parse(id).unwrap(),
        account_sid: account(),
        identity: Identity::parse(identity).unwrap(),
        channel,
        address: address.to_owned(),
        app: if channel == PushChannel::Apns {
            "ios"
        } else {
            "android"
        }
        .into(),
        apns_environment: (channel == PushChannel::Apns).then_some(ApnsEnvironment::Sandbox),
        push_type: (channel == PushChannel::Apns).then_some(PushType::Voip),
        device_id: Some(format!("{identity}'s device")),
        ttl_seconds: 86_400,
        created_at: now,
        updated_at: now,
        expires_at: now + Duration::from_secs(86_400),
    }
}

/// Writes `b` as versions before 0.2 did once a registration committed: the binding's JSON
/// with its claim number in the identity's hash, the token's owner and its claims hash, all
/// expiring with the binding.
async fn write_legacy(conn: &mut impl ConnectionLike, keys: &Keys, b: &Binding, claim: u64) {
    let json = serde_json::to_string(b).unwrap();
    let committed = format!("{},\"claim\":{claim}}}", &json[..json.len() - 1]);
    let owner = serde_json::to_string(&(b.identity.as_str(), b.id.as_str())).unwrap();
    let ttl_ms = b.ttl_seconds * 1000;
    let hash = keys.legacy_bindings(&b.account_sid, &b.identity);
    let address = keys.legacy_address(&b.account_sid, b.channel, &b.address);
    let claims = keys.legacy_claims(&b.account_sid, b.channel, &b.address);
    let claim = claim.to_string();
    for cmd in [
        redis::cmd("HSET")
            .arg(&hash)
            .arg(b.id.as_str())
            .arg(&committed)
            .clone(),
        redis::cmd("PEXPIRE").arg(&hash).arg(ttl_ms).clone(),
        redis::cmd("SET")
            .arg(&address)
            .arg(&owner)
            .arg("PX")
            .arg(ttl_ms)
            .clone(),
        redis::cmd("HSET")
            .arg(&claims)
            .arg(&owner)
            .arg(&claim)
            .arg("#seq")
            .arg(&claim)
            .clone(),
        redis::cmd("PEXPIRE").arg(&claims).arg(ttl_ms).clone(),
    ] {
        let _: redis::Value = cmd.query_async(conn).await.unwrap();
    }
}

/// The entry of `address` in the new index, if it has one.
async fn entry_of(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    channel: PushChannel,
    address: &str,
) -> Option<TokenEntry> {
    let (bucket, field) = keys.token(&account(), channel, address);
    let text: Option<String> = redis::cmd("HGET")
        .arg(&bucket)
        .arg(&field)
        .query_async(conn)
        .await
        .unwrap();
    text.map(|t| TokenEntry::parse(&t).expect("a readable entry"))
}

/// `b` as the current layout keeps it: whole milliseconds.
fn in_millis(mut b: Binding) -> Binding {
    b.created_at = whole_millis(b.created_at);
    b.updated_at = whole_millis(b.updated_at);
    b.expires_at = b.updated_at + b.ttl();
    b
}

async fn open(store_toml: &str, prefix: &str) -> Arc<dyn Store> {
    let config = callrelay::config::from_toml_str(&format!(
        "[store]\n{store_toml}key_prefix = \"{prefix}\"\n"
    ))
    .expect("store configuration is valid");
    callrelay::store::open(&config.store).await.unwrap()
}

fn new_prefix() -> String {
    format!("m{}", uuid::Uuid::new_v4().simple())
}

/// Bindings an earlier version wrote are read as they were, moved when their identity first
/// changes (a refresh after a push, a removal), and their tokens keep ringing for one identity.
#[tokio::test]
async fn a_store_written_by_an_earlier_version_is_read_and_moved_when_changed() {
    let url = shared().url();
    let prefix = new_prefix();
    let keys = Keys::new(&prefix);
    let mut raw = raw_connection(url.as_str()).await;
    // An APNs token as versions before lower-casing kept it: in upper case.
    let phone = binding("bob", "phone", PushChannel::Apns, &"AB".repeat(32));
    let tablet = binding("bob", "tablet", PushChannel::Fcm, &fcm_token(1));
    let laptop = binding("alice", "laptop", PushChannel::Fcm, &fcm_token(2));
    for (b, claim) in [(&phone, 11), (&tablet, 12), (&laptop, 13)] {
        write_legacy(&mut raw, &keys, b, claim).await;
    }
    let store = open(&format!("redis_url = \"{url}\"\n"), &prefix).await;
    let (bob, alice) = (phone.identity.clone(), laptop.identity.clone());
    let now = OffsetDateTime::now_utc();

    // Read as they were, to the nanosecond.
    let targets = store.targets(&account(), &bob, now).await.unwrap();
    assert_eq!(targets.bindings, vec![phone.clone(), tablet.clone()]);

    // A refresh moves bob: the hash is gone, his string holds both bindings (the APNs token
    // now in lower case), nothing but the refreshed times changed, and both tokens' entries
    // moved to the new index, where the refresh keeps them alive.
    store.refresh_binding(&phone, now).await.unwrap();
    let old_hash: bool = redis::cmd("EXISTS")
        .arg(keys.legacy_bindings(&account(), &bob))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!old_hash, "bob's hash of the earlier layout is gone");
    let mut phone_now = in_millis(phone.clone());
    phone_now.address = phone.address.to_ascii_lowercase();
    let listed = store.list_bindings(&account(), &bob, now).await.unwrap();
    assert_eq!(
        listed,
        vec![phone_now.refreshed(now), in_millis(tablet.clone())]
    );
    for (b, address) in [
        (&phone, phone_now.address.as_str()),
        (&tablet, tablet.address.as_str()),
    ] {
        let old: Option<String> = redis::cmd("GET")
            .arg(keys.legacy_address(&account(), b.channel, &b.address))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(old, None, "the old index entry of {} moved", b.id);
        let entry = entry_of(&mut raw, &keys, b.channel, address)
            .await
            .expect("an entry in the new index");
        assert_eq!(entry.owner(), Some(holder(&bob).as_str()));
    }

    // A removal moves alice first, and removes her binding.
    assert!(
        store
            .delete_binding(&account(), &alice, &laptop.id)
            .await
            .unwrap()
    );
    assert!(
        store
            .list_bindings(&account(), &alice, now)
            .await
            .unwrap()
            .is_empty()
    );

    // Carol registering the tablet's token, and the phone's in lower case as a registration
    // now spells it, displaces bob from both.
    for (id, b, address) in [
        ("c1", &tablet, tablet.address.clone()),
        ("c2", &phone, phone_now.address.clone()),
    ] {
        let mut carols = binding("carol", id, b.channel, &address);
        carols.updated_at = now;
        let out = store.put_binding(carols).await.unwrap();
        assert_eq!(out.displaced, vec![(bob.clone(), b.id.clone())]);
    }
    assert!(
        store
            .list_bindings(&account(), &bob, now)
            .await
            .unwrap()
            .is_empty()
    );

    // Alice's token, whose binding was removed, has no owner in the new index.
    let entry = entry_of(&mut raw, &keys, PushChannel::Fcm, &laptop.address).await;
    let owner = entry.and_then(|e| e.owner().map(str::to_owned));
    assert_eq!(owner, None);
}

/// Runs `callrelay migrate` against the store in `store_toml`; returns its standard output.
fn migrate(store_toml: &str, prefix: &str) -> String {
    let config = callrelay_testkit::tls::temp_file(
        "migrate.toml",
        format!("[store]\n{store_toml}key_prefix = \"{prefix}\"\n"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_callrelay"))
        .env_remove("CALLRELAY_CONFIG")
        .args(["migrate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "callrelay migrate failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes 41 identities (one with two bindings) in the earlier layout, runs `callrelay
/// migrate`, and checks that every binding reads back the same, every key of the earlier
/// layout is gone, every token's owner is in the new index, and a second run finds nothing.
async fn migrate_moves_everything(
    raw: &mut impl ConnectionLike,
    store_toml: &str,
    prefix: &str,
    old_keys_left: impl Fn() -> usize,
) {
    let keys = Keys::new(prefix);
    let mut written = Vec::new();
    for i in 0..40 {
        written.push(binding(
            &format!("user{i}"),
            "d1",
            PushChannel::Fcm,
            &fcm_token(i),
        ));
    }
    written.push(binding("user0", "d2", PushChannel::Apns, &"cd".repeat(32)));
    for (i, b) in written.iter().enumerate() {
        write_legacy(raw, &keys, b, 1_000 + i as u64).await;
    }
    assert!(old_keys_left() > 0);

    let out = migrate(store_toml, prefix);
    assert!(
        out.contains("40 identities (41 bindings) and 41 device tokens moved"),
        "{out}"
    );
    assert_eq!(old_keys_left(), 0, "nothing of the earlier layout is left");
    let marker: Option<String> = redis::cmd("GET")
        .arg(keys.layout())
        .query_async(raw)
        .await
        .unwrap();
    assert_eq!(marker.as_deref(), Some("2"));

    let store = open(store_toml, prefix).await;
    let now = OffsetDateTime::now_utc();
    for b in &written {
        let stored = store
            .get_binding(&account(), &b.identity, &b.id, now)
            .await
            .unwrap();
        assert_eq!(stored, Some(in_millis(b.clone())));
        let entry = entry_of(raw, &keys, b.channel, &b.address)
            .await
            .expect("the token is in the new index");
        assert_eq!(entry.owner(), Some(holder(&b.identity).as_str()));
    }

    // The index moved with the bindings: a token registered by someone else displaces its
    // holder (the store is marked as moved, so this reads the new index only).
    let mut taken = binding("newcomer", "n1", PushChannel::Fcm, &written[7].address);
    taken.updated_at = now;
    let out = store.put_binding(taken).await.unwrap();
    assert_eq!(
        out.displaced,
        vec![(written[7].identity.clone(), written[7].id.clone())]
    );

    let again = migrate(store_toml, prefix);
    assert!(
        again.contains("0 identities (0 bindings) and 0 device tokens moved"),
        "{again}"
    );
}

#[tokio::test]
async fn callrelay_migrate_moves_a_standalone_store() {
    let server = RedisServer::start();
    let url = server.url();
    let prefix = new_prefix();
    let mut raw = raw_connection(url.as_str()).await;
    let pattern = format!("{prefix}:*");
    let old_keys_left = || {
        server
            .cli(&["--scan", "--pattern", &pattern])
            .lines()
            .filter(|k| k.ends_with(":bindings") || k.contains(":addr:{"))
            .count()
    };
    migrate_moves_everything(
        &mut raw,
        &format!("redis_url = \"{url}\"\n"),
        &prefix,
        old_keys_left,
    )
    .await;
}

/// On a cluster, `migrate` scans every master (the earlier layout's keys are spread over all
/// three).
#[tokio::test(flavor = "multi_thread")]
async fn callrelay_migrate_moves_a_cluster_store() {
    let cluster = tokio::task::block_in_place(Cluster::start);
    let prefix = new_prefix();
    let urls: Vec<String> = cluster
        .master_ports()
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let mut raw = redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let pattern = format!("{prefix}:*");
    let ports = cluster.master_ports();
    let old_keys_left = || {
        let mut left = 0;
        for port in &ports {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "--scan", "--pattern", &pattern])
                .output()
                .unwrap();
            left += String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|k| k.ends_with(":bindings") || k.contains(":addr:{"))
                .count();
        }
        left
    };
    migrate_moves_everything(&mut raw, &cluster.store_toml(), &prefix, old_keys_left).await;
}
