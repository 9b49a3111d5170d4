//! The device-token index on Redis (`src/store/redis/index.rs`): no moment at which one token
//! rings for two identities, whatever the interleaving; registrations cut short by a frozen
//! Redis leave nothing that rings twice; the index's TTL is its owner's; data from earlier
//! versions is displaced like any other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use callrelay::domain::{
    AccountSid, ApnsEnvironment, Binding, BindingId, Identity, PushChannel, PushType,
};
use callrelay::store::Store;
use callrelay::store::redis::Keys;
use redis::AsyncCommands;
use time::OffsetDateTime;

use crate::helpers::redis::{RedisServer, shared};

const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const APNS_OTHER: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn account() -> AccountSid {
    AccountSid::parse(crate::helpers::ACCOUNT).unwrap()
}

fn binding(identity: &str, id: &str, address: &str, ttl_seconds: u64) -> Binding {
    let now = OffsetDateTime::now_utc();
    Binding {
        id: BindingId::parse(id).unwrap(),
        account_sid: account(),
        identity: Identity::parse(identity).unwrap(),
        channel: PushChannel::Apns,
        address: address.to_owned(),
        app: "ios".into(),
        apns_environment: Some(ApnsEnvironment::Production),
        push_type: Some(PushType::Voip),
        device_id: None,
        ttl_seconds,
        created_at: now,
        updated_at: now,
        expires_at: now + Duration::from_secs(ttl_seconds),
    }
}

struct Fixture {
    store: Arc<dyn Store>,
    keys: Keys,
    raw: redis::aio::MultiplexedConnection,
}

async fn fixture(url: &str, command_timeout: Duration) -> Fixture {
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let config = callrelay::config::from_toml_str(&format!(
        "[store]\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\ncommand_timeout_ms = {}\n",
        command_timeout.as_millis()
    ))
    .expect("store configuration is valid");
    let store = callrelay::store::open(&config.store).await.unwrap();
    let raw = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    Fixture {
        store,
        keys: Keys::new(&prefix),
        raw,
    }
}

impl Fixture {
    /// Which of these identities hold `address` in a committed (ringing) binding, read in one
    /// transaction: a true snapshot across both identities' hashes.
    async fn ringing(&self, identities: &[&str], address: &str) -> Vec<String> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for name in identities {
            pipe.hgetall(
                self.keys
                    .bindings(&account(), &Identity::parse(name).unwrap()),
            );
        }
        let mut raw = self.raw.clone();
        // Redis may be frozen by the test: a read that times out is asked again.
        let mut attempts = 0;
        let hashes: Vec<Vec<(String, String)>> = loop {
            match pipe.query_async(&mut raw).await {
                Ok(hashes) => break hashes,
                Err(e) => {
                    attempts += 1;
                    assert!(attempts < 100, "Redis never answered: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let mut out = Vec::new();
        for (name, fields) in identities.iter().zip(hashes) {
            for (field, text) in fields {
                if field.starts_with('?') {
                    continue;
                }
                let b: Binding = serde_json::from_str(&text).unwrap();
                if b.address == address {
                    out.push(format!("{name}/{field}"));
                }
            }
        }
        out
    }

    /// The token's owner as the index records it, and everyone its claims hash lists.
    async fn index(&self, address: &str) -> (Option<String>, Vec<String>) {
        let mut raw = self.raw.clone();
        let owner: Option<String> = raw
            .get(self.keys.address(&account(), PushChannel::Apns, address))
            .await
            .unwrap();
        let claims: Vec<String> = raw
            .hkeys(self.keys.claims(&account(), PushChannel::Apns, address))
            .await
            .unwrap();
        let listed = claims.into_iter().filter(|f| f != "#seq").collect();
        (owner, listed)
    }
}

/// Samples who holds the token, in transactions, until told to stop; fails the test if two
/// identities ever held it at once. Returns how many samples it took.
fn watch_for_two_holders(
    fixture: Arc<Fixture>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut samples = 0;
        while !stop.load(Ordering::Relaxed) {
            let ringing = fixture.ringing(&["bob", "alice"], TOKEN).await;
            let bob = ringing.iter().any(|h| h.starts_with("bob/"));
            let alice = ringing.iter().any(|h| h.starts_with("alice/"));
            assert!(
                !(bob && alice),
                "one device rang for two identities: {ringing:?}"
            );
            samples += 1;
        }
        samples
    })
}

fn owner(identity: &str, id: &str) -> String {
    serde_json::to_string(&(identity, id)).unwrap()
}

#[tokio::test]
async fn no_moment_has_one_token_ringing_for_two_identities() {
    let f = Arc::new(fixture(&shared().url(), Duration::from_secs(2)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_for_two_holders(f.clone(), stop.clone());
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = f.store.clone();
            tokio::spawn(async move {
                let who = if task % 2 == 0 { "bob" } else { "alice" };
                for round in 0..25 {
                    let id = if task < 4 {
                        "phone".to_owned()
                    } else {
                        format!("t{task}r{round}")
                    };
                    store
                        .put_binding(binding(who, &id, TOKEN, 3600))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let samples = watcher.await.unwrap();
    assert!(samples > 0);

    let ringing = f.ringing(&["bob", "alice"], TOKEN).await;
    assert_eq!(ringing.len(), 1, "{ringing:?}");
    let (who, id) = ringing[0].split_once('/').unwrap();
    let (index_owner, listed) = f.index(TOKEN).await;
    assert_eq!(
        index_owner,
        Some(owner(who, id)),
        "the index names the holder"
    );
    assert_eq!(listed, vec![owner(who, id)], "nobody else is listed");
}

/// Registrations of one token by two identities while Redis freezes (SIGSTOP) again and again
/// for longer than the store's command timeout, so that registrations time out at every step
/// (and Redis runs the queued commands when it thaws). At no moment do two identities hold
/// the token; once Redis is back, the next registration leaves one holder, which the index
/// names, and reads never return a half-registered binding.
#[tokio::test]
async fn registrations_cut_short_by_a_frozen_redis_never_ring_twice() {
    let redis = RedisServer::start();
    let f = Arc::new(fixture(&redis.url(), Duration::from_millis(40)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_for_two_holders(f.clone(), stop.clone());
    let failed = Arc::new(AtomicUsize::new(0));
    let succeeded = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..6)
        .map(|task| {
            let (store, stop) = (f.store.clone(), stop.clone());
            let (failed, succeeded) = (failed.clone(), succeeded.clone());
            tokio::spawn(async move {
                let who = if task % 2 == 0 { "bob" } else { "alice" };
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let id = if task < 2 {
                        "phone".to_owned()
                    } else {
                        format!("t{task}r{round}")
                    };
                    match store.put_binding(binding(who, &id, TOKEN, 3600)).await {
                        Ok(_) => succeeded.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    // Freezes at staggered moments, so that they land between different steps.
    for cycle in 0..20u64 {
        tokio::time::sleep(Duration::from_millis(5 + (cycle * 7) % 31)).await;
        redis.pause();
        tokio::time::sleep(Duration::from_millis(90)).await;
        redis.resume();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let samples = watcher.await.unwrap();
    let (failed, succeeded) = (
        failed.load(Ordering::Relaxed),
        succeeded.load(Ordering::Relaxed),
    );
    println!(
        "registrations: {succeeded} succeeded, {failed} timed out; {samples} snapshots, never two identities"
    );
    assert!(failed > 0, "the freezes cut registrations short");
    assert!(succeeded > 0);

    // Reads skip what a cut-short registration left: nothing they return is provisional.
    for name in ["bob", "alice"] {
        let identity = Identity::parse(name).unwrap();
        for b in f
            .store
            .list_bindings(&account(), &identity, OffsetDateTime::now_utc())
            .await
            .unwrap()
        {
            assert!(!b.id.as_str().starts_with('?'));
        }
    }
    // The next registration settles it: one holder, which the index names, and nobody else
    // listed as a possible holder.
    f.store
        .put_binding(binding("alice", "after", TOKEN, 3600))
        .await
        .unwrap();
    assert_eq!(
        f.ringing(&["bob", "alice"], TOKEN).await,
        vec!["alice/after"]
    );
    assert_eq!(
        f.index(TOKEN).await,
        (Some(owner("alice", "after")), vec![owner("alice", "after")])
    );
}

/// A successful push refreshes its binding's index entry only if the binding still owns the
/// token. Here bob's binding still rings, but alice's registration has claimed the token (and
/// went no further, as one cut short would): bob's push must not stretch alice's entry to
/// bob's year, nor cut it short.
#[tokio::test]
async fn only_the_owner_refreshes_the_index() {
    let f = fixture(&shared().url(), Duration::from_secs(2)).await;
    let bobs = f
        .store
        .put_binding(binding("bob", "phone", TOKEN, 31_536_000))
        .await
        .unwrap()
        .binding;
    let address_key = f.keys.address(&account(), PushChannel::Apns, TOKEN);
    let mut raw = f.raw.clone();
    let _: () = raw
        .pset_ex(&address_key, owner("alice", "phone"), 3_600_000)
        .await
        .unwrap();
    let before: i64 = raw.pttl(&address_key).await.unwrap();
    f.store
        .refresh_binding(&bobs, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let after: i64 = raw.pttl(&address_key).await.unwrap();
    assert!(
        (1..=before).contains(&after),
        "bob's refresh moved alice's entry: {before} then {after}"
    );
    let (index_owner, _) = f.index(TOKEN).await;
    assert_eq!(index_owner, Some(owner("alice", "phone")));

    // An owner's refresh does extend its entry.
    let carols = f
        .store
        .put_binding(binding("carol", "phone", APNS_OTHER, 3600))
        .await
        .unwrap()
        .binding;
    let carol_key = f.keys.address(&account(), PushChannel::Apns, APNS_OTHER);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before: i64 = raw.pttl(&carol_key).await.unwrap();
    f.store
        .refresh_binding(&carols, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let after: i64 = raw.pttl(&carol_key).await.unwrap();
    assert!(after > before, "{before} then {after}");
}

/// What an earlier version stored (bindings without claim numbers, an owner without a claims
/// hash, APNs tokens as sent, in upper case) is displaced like anything else.
#[tokio::test]
async fn bindings_stored_by_earlier_versions_are_displaced() {
    let f = fixture(&shared().url(), Duration::from_secs(2)).await;
    let mut raw = f.raw.clone();
    let upper = TOKEN.to_ascii_uppercase();
    for (identity, id, address) in [("bob", "old", TOKEN), ("carol", "older", upper.as_str())] {
        let b = binding(identity, id, address, 3600);
        let _: () = raw
            .hset(
                f.keys.bindings(&account(), &b.identity),
                id,
                serde_json::to_string(&b).unwrap(),
            )
            .await
            .unwrap();
        let _: () = raw
            .set(
                f.keys.address(&account(), PushChannel::Apns, address),
                owner(identity, id),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        f.ringing(&["bob", "carol"], TOKEN).await.len()
            + f.ringing(&["bob", "carol"], &upper).await.len(),
        2
    );
    let out = f
        .store
        .put_binding(binding("alice", "new", TOKEN, 3600))
        .await
        .unwrap();
    let mut displaced: Vec<String> = out
        .displaced
        .iter()
        .map(|(i, id)| format!("{i}/{id}"))
        .collect();
    displaced.sort();
    assert_eq!(displaced, vec!["bob/old", "carol/older"]);
    assert!(f.ringing(&["bob", "carol"], TOKEN).await.is_empty());
    assert!(f.ringing(&["bob", "carol"], &upper).await.is_empty());
    let upper_owner: Option<String> = raw
        .get(f.keys.address(&account(), PushChannel::Apns, &upper))
        .await
        .unwrap();
    assert_eq!(upper_owner, None);
    assert_eq!(
        f.index(TOKEN).await,
        (Some(owner("alice", "new")), vec![owner("alice", "new")])
    );
}

/// A binding being registered sits in a field readers skip: it never rings, and is not listed.
#[tokio::test]
async fn a_provisional_binding_never_rings() {
    let f = fixture(&shared().url(), Duration::from_secs(2)).await;
    let b = binding("bob", "phone", TOKEN, 3600);
    let mut raw = f.raw.clone();
    let _: () = raw
        .hset(
            f.keys.bindings(&account(), &b.identity),
            "?phone",
            format!("?{}", serde_json::to_string(&b).unwrap()),
        )
        .await
        .unwrap();
    let targets = f
        .store
        .lookup(&account(), &b.identity, None, OffsetDateTime::now_utc())
        .await
        .unwrap()
        .targets;
    assert!(targets.is_empty(), "{targets:?}");
    assert!(
        f.store
            .get_binding(&account(), &b.identity, &b.id, OffsetDateTime::now_utc())
            .await
            .unwrap()
            .is_none()
    );
    // Registering it for real replaces the leftover.
    f.store.put_binding(b.clone()).await.unwrap();
    let fields: Vec<String> = raw
        .hkeys(f.keys.bindings(&account(), &b.identity))
        .await
        .unwrap();
    assert_eq!(fields, vec!["phone"]);
}
