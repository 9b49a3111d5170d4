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
use callrelay::store::redis::{Keys, TokenEntry, lines};
use redis::AsyncCommands;
use time::OffsetDateTime;

use crate::helpers::redis::{RedisServer, raw_connection, shared};

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
    fixture_with_prefix(url, &prefix, command_timeout).await
}

async fn fixture_with_prefix(url: &str, prefix: &str, command_timeout: Duration) -> Fixture {
    let config = callrelay::config::from_toml_str(&format!(
        "[store]\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\ncommand_timeout_ms = {}\n",
        command_timeout.as_millis()
    ))
    .expect("store configuration is valid");
    let store = callrelay::store::open(&config.store).await.unwrap();
    let raw = raw_connection(url).await;
    Fixture {
        store,
        keys: Keys::new(prefix),
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
            let identity = Identity::parse(name).unwrap();
            pipe.get(self.keys.bindings(&account(), &identity))
                .hgetall(self.keys.legacy_bindings(&account(), &identity));
        }
        let mut raw = self.raw.clone();
        // Redis may be frozen by the test: a read that times out is asked again.
        let mut attempts = 0;
        type Stored = (Option<String>, Vec<(String, String)>);
        let replies: Vec<Stored> = loop {
            match pipe.query_async::<Vec<redis::Value>>(&mut raw).await {
                Ok(values) => {
                    break values
                        .chunks(2)
                        .map(|pair| {
                            (
                                redis::from_redis_value(pair[0].clone()).unwrap(),
                                redis::from_redis_value(pair[1].clone()).unwrap(),
                            )
                        })
                        .collect();
                }
                Err(e) => {
                    attempts += 1;
                    assert!(attempts < 100, "Redis never answered: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let mut out = Vec::new();
        for (name, (text, old)) in identities.iter().zip(replies) {
            let identity = Identity::parse(name).unwrap();
            for line in lines::split(text.as_deref().unwrap_or("")) {
                if lines::is_provisional(line) {
                    continue;
                }
                let b = lines::parse(&account(), &identity, line).unwrap();
                if b.address == address {
                    out.push(format!("{name}/{}", b.id));
                }
            }
            // Bindings an earlier version wrote.
            for (field, text) in old {
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

    /// The token's entry in the index.
    async fn entry(&self, address: &str) -> Option<TokenEntry> {
        let (bucket, field) = self.keys.token(&account(), PushChannel::Apns, address);
        let mut raw = self.raw.clone();
        let text: Option<String> = raw.hget(bucket, field).await.unwrap();
        text.map(|t| TokenEntry::parse(&t).expect("a readable entry"))
    }

    /// The token's owner as the index records it, and everyone its entry lists.
    async fn index(&self, address: &str) -> (Option<String>, Vec<String>) {
        let Some(entry) = self.entry(address).await else {
            return (None, Vec::new());
        };
        let owner = entry.owner().map(str::to_owned);
        (
            owner,
            entry.holders.into_iter().map(|(who, _)| who).collect(),
        )
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

/// How the index names a holder: its identity.
fn owner(identity: &str) -> String {
    identity.to_owned()
}

/// An owner in the index of versions before 0.2.
fn legacy_owner(identity: &str, id: &str) -> String {
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
    let (who, _) = ringing[0].split_once('/').unwrap();
    let (index_owner, listed) = f.index(TOKEN).await;
    assert_eq!(index_owner, Some(owner(who)), "the index names the holder");
    assert_eq!(listed, vec![owner(who)], "nobody else is listed");
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
        (Some(owner("alice")), vec![owner("alice")])
    );
}

/// A successful push refreshes its binding's index entry only if the binding still owns the
/// token. Here bob's binding still rings, but alice's registration has claimed the token (and
/// went no further, as one cut short would): bob's push must not stretch alice's entry to
/// bob's year.
#[tokio::test]
async fn only_the_owner_refreshes_the_index() {
    let f = fixture(&shared().url(), Duration::from_secs(2)).await;
    let bobs = f
        .store
        .put_binding(binding("bob", "phone", TOKEN, 31_536_000))
        .await
        .unwrap()
        .binding;
    // Alice's claim, as the claim script would have written it: a later number, an hour.
    let (bucket, field) = f.keys.token(&account(), PushChannel::Apns, TOKEN);
    let bob_entry = f.entry(TOKEN).await.unwrap();
    let alice_claim = bob_entry.seq + 1;
    let expires = OffsetDateTime::now_utc().unix_timestamp() as u64 + 3600;
    let mut raw = f.raw.clone();
    let _: () = raw
        .hset(
            &bucket,
            &field,
            format!(
                "{alice_claim}\t{expires}\n{}\t{}\n{}\t",
                owner("bob"),
                bob_entry.seq,
                owner("alice")
            ),
        )
        .await
        .unwrap();
    f.store
        .refresh_binding(&bobs, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let after = f.entry(TOKEN).await.unwrap();
    assert_eq!(after.expires, expires, "bob's refresh moved alice's entry");
    assert_eq!(after.owner(), Some(owner("alice").as_str()));

    // An owner's refresh does extend its entry.
    let carols = f
        .store
        .put_binding(binding("carol", "phone", APNS_OTHER, 3600))
        .await
        .unwrap()
        .binding;
    let before = f.entry(APNS_OTHER).await.unwrap().expires;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.store
        .refresh_binding(&carols, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let after = f.entry(APNS_OTHER).await.unwrap().expires;
    assert!(after > before, "{before} then {after}");
}

/// What an earlier version stored (a hash of JSON bindings, some without claim numbers, an
/// owner without a claims hash, APNs tokens as sent, in upper case) is displaced like
/// anything else, and its old index entries are deleted.
#[tokio::test]
async fn bindings_stored_by_earlier_versions_are_displaced() {
    let url = shared().url();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let keys = Keys::new(&prefix);
    let mut raw = raw_connection(url.as_str()).await;
    // Written before this version opens the store, as an upgrade finds it.
    let upper = TOKEN.to_ascii_uppercase();
    for (identity, id, address) in [("bob", "old", TOKEN), ("carol", "older", upper.as_str())] {
        let b = binding(identity, id, address, 3600);
        let _: () = raw
            .hset(
                keys.legacy_bindings(&account(), &b.identity),
                id,
                serde_json::to_string(&b).unwrap(),
            )
            .await
            .unwrap();
        let _: () = raw
            .set(
                keys.legacy_address(&account(), PushChannel::Apns, address),
                legacy_owner(identity, id),
            )
            .await
            .unwrap();
    }
    let f = fixture_with_prefix(&url, &prefix, Duration::from_secs(2)).await;
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
    for address in [TOKEN, upper.as_str()] {
        let old_owner: Option<String> = raw
            .get(keys.legacy_address(&account(), PushChannel::Apns, address))
            .await
            .unwrap();
        assert_eq!(old_owner, None);
    }
    assert_eq!(
        f.index(TOKEN).await,
        (Some(owner("alice")), vec![owner("alice")])
    );
}

/// A binding being registered sits in a line readers skip: it never rings, and is not listed.
#[tokio::test]
async fn a_provisional_binding_never_rings() {
    let f = fixture(&shared().url(), Duration::from_secs(2)).await;
    let b = binding("bob", "phone", TOKEN, 3600);
    let mut raw = f.raw.clone();
    let _: () = raw
        .set(
            f.keys.bindings(&account(), &b.identity),
            lines::provisional(&lines::line(&b, 1)),
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
    let text: String = raw
        .get(f.keys.bindings(&account(), &b.identity))
        .await
        .unwrap();
    let fields: Vec<&str> = lines::split(&text).map(lines::field).collect();
    assert_eq!(fields, vec!["phone"]);
}

/// Two bindings of one identity holding one token (as a registration cut short between its
/// commit and the removal of the older binding could once leave): removing one keeps the
/// identity's claim, so the next identity to register the token still finds and displaces
/// the other.
#[tokio::test]
async fn removing_one_of_two_bindings_holding_a_token_keeps_the_claim() {
    let f = fixture(&shared().url(), Duration::from_secs(2)).await;
    let first = f
        .store
        .put_binding(binding("bob", "a", TOKEN, 3600))
        .await
        .unwrap()
        .binding;
    let claim = f.entry(TOKEN).await.unwrap().seq;
    let mut second = first.clone();
    second.id = BindingId::parse("b").unwrap();
    let mut raw = f.raw.clone();
    let key = f.keys.bindings(&account(), &first.identity);
    let text: String = raw.get(&key).await.unwrap();
    let both = format!("{text}\n{}", lines::line(&second, claim));
    let _: () = raw.set(&key, both).await.unwrap();
    assert_eq!(f.ringing(&["bob"], TOKEN).await, vec!["bob/a", "bob/b"]);

    assert!(
        f.store
            .delete_binding(&account(), &first.identity, &first.id)
            .await
            .unwrap()
    );
    assert_eq!(
        f.index(TOKEN).await,
        (Some(owner("bob")), vec![owner("bob")])
    );
    let out = f
        .store
        .put_binding(binding("alice", "new", TOKEN, 3600))
        .await
        .unwrap();
    assert_eq!(
        out.displaced,
        vec![(
            Identity::parse("bob").unwrap(),
            BindingId::parse("b").unwrap()
        )]
    );
    assert_eq!(f.ringing(&["bob", "alice"], TOKEN).await, vec!["alice/new"]);
}
