//! The store conformance suite: every engine must pass every case. The Redis engine runs in
//! every topology callrelay supports, each case under its own key prefix: one server, one
//! server over TLS, a master found through Sentinel, and a Redis Cluster (three masters with a
//! replica each), all started by the tests and shared by the cases of this process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use callrelay::domain::SocketPresence;
use callrelay::domain::{
    AccountSid, ApnsEnvironment, Binding, BindingId, CallSid, Identity, PushChannel, PushType,
    RoomSid,
};
use callrelay::store::memory::MemoryStore;
use callrelay::store::{
    Appended, Claim, ClaimOwner, ClaimRequest, EventRetention, MAX_TRACE_ENTRIES, RoomFactWrite,
    Settlement, Store, TraceWrite,
};
use time::OffsetDateTime;

use crate::helpers::{eventually, redis, topology};

fn account() -> AccountSid {
    AccountSid::parse(crate::helpers::ACCOUNT).unwrap()
}

fn ident(name: &str) -> Identity {
    Identity::parse(name).unwrap()
}

fn id(v: &str) -> BindingId {
    BindingId::parse(v).unwrap()
}

fn binding(identity: &str, binding_id: &str, address: &str, now: OffsetDateTime) -> Binding {
    Binding {
        id: id(binding_id),
        account_sid: account(),
        identity: ident(identity),
        channel: PushChannel::Apns,
        address: address.to_owned(),
        app: "ios".into(),
        apns_environment: Some(ApnsEnvironment::Production),
        push_type: Some(PushType::Voip),
        device_id: None,
        ttl_seconds: 3600,
        created_at: now,
        updated_at: now,
        expires_at: now + Duration::from_secs(3600),
    }
}

fn presence(identity: &str, conn: &str, node: &str, lease: Duration) -> SocketPresence {
    SocketPresence {
        conn_id: conn.into(),
        account_sid: account(),
        identity: ident(identity),
        node: node.into(),
        device_id: Some("d1".into()),
        // Read back as written, on every engine.
        takes_acks: true,
        connected_at: OffsetDateTime::now_utc(),
        lease,
    }
}

async fn sockets_at(
    store: &Arc<dyn Store>,
    identity: &str,
    at: OffsetDateTime,
) -> Vec<SocketPresence> {
    store
        .targets(&account(), &ident(identity), at)
        .await
        .unwrap()
        .sockets
}

/// Timestamps as stored: bindings keep whole milliseconds (what `Binding::refreshed` and a
/// registration make of `now`), so equality holds.
fn now() -> OffsetDateTime {
    callrelay::domain::whole_millis(OffsetDateTime::now_utc())
}

async fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

/// The Redis engine as `[store]` keys configure it, under a fresh key prefix.
pub async fn redis_store(store_keys: &str) -> Arc<dyn Store> {
    crate::helpers::init_logging();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let config = callrelay::config::from_toml_str(&format!(
        "[store]\nkey_prefix = \"{prefix}\"\ncommand_timeout_ms = 2000\n{store_keys}"
    ))
    .expect("store configuration is valid");
    callrelay::store::open(&config.store).await.unwrap()
}

async fn redis() -> Arc<dyn Store> {
    redis_store(&format!("redis_url = \"{}\"", redis::shared().url())).await
}

async fn redis_tls() -> Arc<dyn Store> {
    let (ca, server) = redis::shared_tls();
    redis_store(&format!(
        "redis_url = \"{}\"\ntls_ca_file = \"{}\"",
        server.url(),
        ca.ca_file.display()
    ))
    .await
}

async fn sentinel() -> Arc<dyn Store> {
    redis_store(&topology::shared_sentinels().store_toml()).await
}

async fn cluster() -> Arc<dyn Store> {
    redis_store(&topology::shared_cluster().store_toml()).await
}

/// Runs each case against every engine and topology.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory_engine {
            $(#[tokio::test] async fn $case() { super::$case(super::memory().await).await; })*
        }
        mod redis_engine {
            $(#[tokio::test] async fn $case() { super::$case(super::redis().await).await; })*
        }
        mod redis_tls_engine {
            $(#[tokio::test] async fn $case() { super::$case(super::redis_tls().await).await; })*
        }
        mod redis_sentinel_engine {
            $(#[tokio::test] async fn $case() { super::$case(super::sentinel().await).await; })*
        }
        mod redis_cluster_engine {
            $(#[tokio::test] async fn $case() { super::$case(super::cluster().await).await; })*
        }
    };
}

conformance!(
    put_get_list_delete,
    replacing_keeps_created_at,
    a_token_moves_between_identities,
    a_token_registered_again_under_a_new_id_replaces_the_old_binding,
    changing_a_bindings_token_releases_the_old_one,
    expired_bindings_are_never_returned,
    registering_over_an_expired_binding_starts_a_new_one,
    refresh_extends_unless_the_binding_changed,
    dead_binding_removal_respects_re_registration,
    delete_all_removes_every_binding_and_frees_the_tokens,
    two_identities_registering_one_token_concurrently_end_with_one_holder,
    presence_leases_expire_and_can_be_withdrawn,
    presence_is_judged_by_the_stores_clock_not_the_readers,
    message_claims,
    claims_belong_to_their_owner,
    lookups_claim_only_when_there_is_a_target,
    outcomes_recorded_in_the_background_are_written_by_flush,
    batches_for_many_identities,
    replica_messages,
    the_event_log_keeps_order_drops_repeats_and_trims,
    one_replica_at_a_time_forwards_to_a_target,
    call_traces_keep_their_entries_and_list_calls_per_identity,
    room_facts_are_kept_once_per_id_and_rooms_listed_by_their_earliest_fact,
);

async fn put_get_list_delete(store: Arc<dyn Store>) {
    let t = now();
    let b1 = binding("bob", "b1", "aa", t);
    let b2 = binding("bob", "b2", "bb", t);
    let out = store.put_binding(b1.clone()).await.unwrap();
    assert!(out.created);
    assert_eq!(out.binding, b1);
    assert!(out.displaced.is_empty());
    store.put_binding(b2.clone()).await.unwrap();
    assert_eq!(
        store
            .get_binding(&account(), &ident("bob"), &id("b1"), t)
            .await
            .unwrap(),
        Some(b1.clone())
    );
    assert_eq!(
        store
            .get_binding(&account(), &ident("alice"), &id("b1"), t)
            .await
            .unwrap(),
        None,
        "ids are scoped to their identity"
    );
    assert_eq!(
        store
            .list_bindings(&account(), &ident("bob"), t)
            .await
            .unwrap(),
        vec![b1.clone(), b2.clone()]
    );
    let targets = store.targets(&account(), &ident("bob"), t).await.unwrap();
    assert_eq!(targets.bindings, vec![b1, b2.clone()]);
    assert!(targets.sockets.is_empty());
    assert!(
        store
            .delete_binding(&account(), &ident("bob"), &id("b1"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_binding(&account(), &ident("bob"), &id("b1"))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .list_bindings(&account(), &ident("bob"), t)
            .await
            .unwrap(),
        vec![b2]
    );
}

async fn replacing_keeps_created_at(store: Arc<dyn Store>) {
    let t = now();
    store
        .put_binding(binding("bob", "b1", "aa", t))
        .await
        .unwrap();
    let later = t + Duration::from_secs(60);
    let mut replacement = binding("bob", "b1", "aa", later);
    replacement.push_type = Some(PushType::Alert);
    let out = store.put_binding(replacement).await.unwrap();
    assert!(!out.created);
    assert_eq!(out.binding.created_at, t);
    assert_eq!(out.binding.updated_at, later);
    let stored = store
        .get_binding(&account(), &ident("bob"), &id("b1"), later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.created_at, t);
    assert_eq!(stored.push_type, Some(PushType::Alert));
}

async fn a_token_moves_between_identities(store: Arc<dyn Store>) {
    let t = now();
    store
        .put_binding(binding("bob", "phone", "aa", t))
        .await
        .unwrap();
    let out = store
        .put_binding(binding("alice", "phone2", "aa", t))
        .await
        .unwrap();
    assert_eq!(out.displaced, vec![(ident("bob"), id("phone"))]);
    assert!(
        store
            .list_bindings(&account(), &ident("bob"), t)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .list_bindings(&account(), &ident("alice"), t)
            .await
            .unwrap()
            .len(),
        1
    );
    // And back again.
    let out = store
        .put_binding(binding("bob", "phone", "aa", t))
        .await
        .unwrap();
    assert_eq!(out.displaced, vec![(ident("alice"), id("phone2"))]);
    assert!(
        store
            .list_bindings(&account(), &ident("alice"), t)
            .await
            .unwrap()
            .is_empty()
    );
    // The same token on another channel is another address.
    let mut fcm = binding("carol", "c", "aa", t);
    fcm.channel = PushChannel::Fcm;
    fcm.apns_environment = None;
    fcm.push_type = None;
    assert!(store.put_binding(fcm).await.unwrap().displaced.is_empty());
    assert_eq!(
        store
            .list_bindings(&account(), &ident("bob"), t)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn a_token_registered_again_under_a_new_id_replaces_the_old_binding(store: Arc<dyn Store>) {
    let t = now();
    store
        .put_binding(binding("bob", "old", "aa", t))
        .await
        .unwrap();
    let out = store
        .put_binding(binding("bob", "new", "aa", t))
        .await
        .unwrap();
    assert_eq!(out.displaced, vec![(ident("bob"), id("old"))]);
    let list = store
        .list_bindings(&account(), &ident("bob"), t)
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id("new"));
}

async fn changing_a_bindings_token_releases_the_old_one(store: Arc<dyn Store>) {
    let t = now();
    store
        .put_binding(binding("bob", "b", "aa", t))
        .await
        .unwrap();
    store
        .put_binding(binding("bob", "b", "bb", t))
        .await
        .unwrap();
    // "aa" is free now: registering it elsewhere displaces nothing and leaves bob alone.
    let out = store
        .put_binding(binding("alice", "a", "aa", t))
        .await
        .unwrap();
    assert!(out.displaced.is_empty());
    let bob = store
        .list_bindings(&account(), &ident("bob"), t)
        .await
        .unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].address, "bb");
    // And "bb" still belongs to bob.
    let out = store
        .put_binding(binding("carol", "c", "bb", t))
        .await
        .unwrap();
    assert_eq!(out.displaced, vec![(ident("bob"), id("b"))]);
}

async fn expired_bindings_are_never_returned(store: Arc<dyn Store>) {
    let t = now();
    let mut short = binding("bob", "short", "aa", t);
    short.ttl_seconds = 60;
    short.expires_at = t + Duration::from_secs(60);
    store.put_binding(short.clone()).await.unwrap();
    store
        .put_binding(binding("bob", "long", "bb", t))
        .await
        .unwrap();
    // Still there just before it expires.
    let before = t + Duration::from_secs(59);
    assert_eq!(
        store
            .list_bindings(&account(), &ident("bob"), before)
            .await
            .unwrap()
            .len(),
        2
    );
    let after = t + Duration::from_secs(61);
    assert_eq!(
        store
            .get_binding(&account(), &ident("bob"), &id("short"), after)
            .await
            .unwrap(),
        None
    );
    let live = store
        .list_bindings(&account(), &ident("bob"), after)
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id, id("long"));
    let targets = store
        .targets(&account(), &ident("bob"), after)
        .await
        .unwrap();
    assert_eq!(targets.bindings.len(), 1);
}

async fn registering_over_an_expired_binding_starts_a_new_one(store: Arc<dyn Store>) {
    let t = now();
    let mut short = binding("bob", "b", "aa", t);
    short.ttl_seconds = 60;
    short.expires_at = t + Duration::from_secs(60);
    store.put_binding(short).await.unwrap();
    let later = t + Duration::from_secs(120);
    let out = store
        .put_binding(binding("bob", "b", "aa", later))
        .await
        .unwrap();
    assert!(
        out.created,
        "the expired binding does not count as replaced"
    );
    assert_eq!(out.binding.created_at, later);
}

async fn refresh_extends_unless_the_binding_changed(store: Arc<dyn Store>) {
    let t = now();
    let b = store
        .put_binding(binding("bob", "b", "aa", t))
        .await
        .unwrap()
        .binding;
    let later = t + Duration::from_secs(1800);
    store.refresh_binding(&b, later).await.unwrap();
    let refreshed = store
        .get_binding(&account(), &ident("bob"), &id("b"), later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refreshed.expires_at, later + Duration::from_secs(3600));
    assert_eq!(refreshed.updated_at, later);
    // A refresh based on an outdated copy (the binding was re-registered since) does nothing.
    store
        .put_binding(binding("bob", "b", "cc", t))
        .await
        .unwrap();
    store
        .refresh_binding(&b, later + Duration::from_secs(10))
        .await
        .unwrap();
    let current = store
        .get_binding(&account(), &ident("bob"), &id("b"), t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.address, "cc");
    assert_eq!(current.expires_at, t + Duration::from_secs(3600));
}

async fn dead_binding_removal_respects_re_registration(store: Arc<dyn Store>) {
    let t = now();
    let b = store
        .put_binding(binding("bob", "b", "aa", t))
        .await
        .unwrap()
        .binding;
    // Re-registered with a fresh token before the push service's verdict arrived.
    store
        .put_binding(binding("bob", "b", "bb", t))
        .await
        .unwrap();
    store.remove_dead_binding(&b).await.unwrap();
    assert_eq!(
        store
            .list_bindings(&account(), &ident("bob"), t)
            .await
            .unwrap()
            .len(),
        1
    );
    // The current token dies: gone, and its token is free.
    let current = binding("bob", "b", "bb", t);
    store.remove_dead_binding(&current).await.unwrap();
    assert!(
        store
            .list_bindings(&account(), &ident("bob"), t)
            .await
            .unwrap()
            .is_empty()
    );
    let out = store
        .put_binding(binding("alice", "a", "bb", t))
        .await
        .unwrap();
    assert!(out.displaced.is_empty());
}

async fn delete_all_removes_every_binding_and_frees_the_tokens(store: Arc<dyn Store>) {
    let t = now();
    for (i, addr) in ["aa", "bb", "cc"].iter().enumerate() {
        store
            .put_binding(binding("bob", &format!("b{i}"), addr, t))
            .await
            .unwrap();
    }
    store
        .put_binding(binding("alice", "a", "dd", t))
        .await
        .unwrap();
    assert_eq!(
        store
            .delete_bindings(&account(), &ident("bob"))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .delete_bindings(&account(), &ident("bob"))
            .await
            .unwrap(),
        0
    );
    assert!(
        store
            .list_bindings(&account(), &ident("bob"), t)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .list_bindings(&account(), &ident("alice"), t)
            .await
            .unwrap()
            .len(),
        1
    );
    let out = store
        .put_binding(binding("carol", "c", "aa", t))
        .await
        .unwrap();
    assert!(out.displaced.is_empty());
}

/// Every binding of these identities that holds `address`.
pub async fn holders(
    store: &Arc<dyn Store>,
    identities: &[&str],
    address: &str,
) -> Vec<(Identity, BindingId)> {
    let mut out = Vec::new();
    for name in identities {
        for b in store
            .list_bindings(&account(), &ident(name), now())
            .await
            .unwrap()
        {
            if b.address == address {
                out.push((b.identity, b.id));
            }
        }
    }
    out
}

/// Bob and alice both register one phone, 200 times, from ten tasks at once; some tasks
/// re-register one binding id, others a new id each time (as `POST` does). One binding holds
/// the token at the end, and the index knows it: the next identity to register the token
/// displaces exactly that binding.
async fn two_identities_registering_one_token_concurrently_end_with_one_holder(
    store: Arc<dyn Store>,
) {
    const TASKS: usize = 10;
    const ROUNDS: usize = 20;
    let token = "c0ffee00c0ffee00c0ffee00c0ffee00";
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let who = if task % 2 == 0 { "bob" } else { "alice" };
                for round in 0..ROUNDS {
                    let id = if task < 4 {
                        "phone".to_owned()
                    } else {
                        format!("t{task}r{round}")
                    };
                    store
                        .put_binding(binding(who, &id, token, now()))
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let held = holders(&store, &["bob", "alice"], token).await;
    assert_eq!(held.len(), 1, "{held:?}");
    let out = store
        .put_binding(binding("carol", "c", token, now()))
        .await
        .unwrap();
    assert_eq!(out.displaced, held, "the index knew the holder");
    assert!(holders(&store, &["bob", "alice"], token).await.is_empty());
}

async fn presence_leases_expire_and_can_be_withdrawn(store: Arc<dyn Store>) {
    let p1 = presence("bob", "c1", "node-a", Duration::from_secs(30));
    let p2 = presence("bob", "c2", "node-b", Duration::from_secs(30));
    let short = presence("bob", "c3", "node-c", Duration::from_millis(300));
    store
        .put_presences(&[p1.clone(), p2.clone(), short])
        .await
        .unwrap();
    assert_eq!(sockets_at(&store, "bob", now()).await.len(), 3);
    // The store's clock runs the lease out: a real wait, bounded.
    assert!(
        eventually(Duration::from_secs(3), || async {
            sockets_at(&store, "bob", now()).await == vec![p1.clone(), p2.clone()]
        })
        .await,
        "the 300 ms lease lapses"
    );
    store
        .remove_presence(&account(), &ident("bob"), "c1")
        .await
        .unwrap();
    assert_eq!(sockets_at(&store, "bob", now()).await, vec![p2.clone()]);
    // Renewal starts the lease again.
    let mut renewed = p2.clone();
    renewed.lease = Duration::from_secs(60);
    store.put_presences(&[renewed.clone()]).await.unwrap();
    assert_eq!(sockets_at(&store, "bob", now()).await, vec![renewed]);
    assert!(
        store
            .targets(&account(), &ident("alice"), now())
            .await
            .unwrap()
            .is_empty()
    );
}

const WINDOW: Duration = Duration::from_secs(600);

fn delivered(window: Duration) -> Settlement {
    Settlement::Delivered { window }
}

/// A reader whose clock is far off neither loses live sockets (nor sweeps them away for
/// everyone) nor keeps lapsed ones: the store's clock judges leases.
async fn presence_is_judged_by_the_stores_clock_not_the_readers(store: Arc<dyn Store>) {
    let live = presence("bob", "c1", "node-a", Duration::from_secs(30));
    let short = presence("bob", "c2", "node-b", Duration::from_millis(300));
    store
        .put_presences(&[live.clone(), short.clone()])
        .await
        .unwrap();
    let hour = Duration::from_secs(3600);
    let ahead = now() + hour;
    let behind = now() - hour;
    assert_eq!(
        sockets_at(&store, "bob", ahead).await,
        vec![live.clone(), short.clone()],
        "a reader an hour ahead"
    );
    assert_eq!(
        sockets_at(&store, "bob", behind).await.len(),
        2,
        "an hour behind"
    );
    // Whatever the readers' clocks said, nothing was swept: a reader on time sees both.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sockets_at(&store, "bob", now()).await.len(), 2);
    // The short lease runs out for a reader an hour behind too.
    assert!(
        eventually(Duration::from_secs(3), || async {
            sockets_at(&store, "bob", behind).await == vec![live.clone()]
        })
        .await,
        "a lapsed lease stays lapsed for a reader whose clock is behind"
    );
}

async fn message_claims(store: Arc<dyn Store>) {
    let a = account();
    let bob = ident("bob");
    let pending = Duration::from_secs(5);
    let (first, retry) = (ClaimOwner::new(), ClaimOwner::new());
    let claim = |id: &'static str, owner: &ClaimOwner, pending: Duration| {
        let (store, a, bob, owner) = (store.clone(), a.clone(), bob.clone(), owner.clone());
        async move {
            store
                .claim_message(&a, &bob, id, &owner, pending)
                .await
                .unwrap()
        }
    };
    assert_eq!(claim("RM1", &first, pending).await, Claim::Acquired);
    assert_eq!(claim("RM1", &retry, pending).await, Claim::Pending);
    // The holder asking again still holds it.
    assert_eq!(claim("RM1", &first, pending).await, Claim::Acquired);
    store
        .settle_message(&a, &bob, "RM1", &first, delivered(WINDOW))
        .await
        .unwrap();
    assert_eq!(claim("RM1", &retry, pending).await, Claim::Delivered);
    assert_eq!(claim("RM1", &first, pending).await, Claim::Delivered);
    // A failed delivery is forgotten, so the retry may deliver.
    assert_eq!(claim("RM2", &first, pending).await, Claim::Acquired);
    store
        .settle_message(&a, &bob, "RM2", &first, Settlement::Forgotten)
        .await
        .unwrap();
    assert_eq!(claim("RM2", &retry, pending).await, Claim::Acquired);
    // A claim whose holder vanished lapses.
    assert_eq!(
        claim("RM3", &first, Duration::from_millis(100)).await,
        Claim::Acquired
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(claim("RM3", &retry, pending).await, Claim::Acquired);
    // Delivered markers lapse after the window.
    assert_eq!(claim("RM4", &first, pending).await, Claim::Acquired);
    store
        .settle_message(
            &a,
            &bob,
            "RM4",
            &first,
            delivered(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(claim("RM4", &retry, pending).await, Claim::Acquired);
    // Ids are per account and callee.
    let other = AccountSid::parse(crate::helpers::OTHER_ACCOUNT).unwrap();
    assert_eq!(
        store
            .claim_message(&other, &bob, "RM1", &retry, pending)
            .await
            .unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        store
            .claim_message(&a, &ident("alice"), "RM1", &retry, pending)
            .await
            .unwrap(),
        Claim::Acquired
    );
}

/// Settling touches only the settling owner's claim: an attempt whose claim lapsed and was
/// taken by a retry can neither mark the retry's delivery done nor free it.
async fn claims_belong_to_their_owner(store: Arc<dyn Store>) {
    let (a, bob) = (account(), ident("bob"));
    let (crashed, retry, late) = (ClaimOwner::new(), ClaimOwner::new(), ClaimOwner::new());
    let pending = Duration::from_secs(5);
    let state = |owner: &ClaimOwner| {
        let (store, a, bob, owner) = (store.clone(), a.clone(), bob.clone(), owner.clone());
        async move {
            store
                .claim_message(&a, &bob, "RM30", &owner, pending)
                .await
                .unwrap()
        }
    };
    // The first attempt's claim lapses (its holder died); a retry takes it.
    assert_eq!(
        store
            .claim_message(&a, &bob, "RM30", &crashed, Duration::from_millis(100))
            .await
            .unwrap(),
        Claim::Acquired
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(state(&retry).await, Claim::Acquired);
    // Another owner's settle is a no-op, whichever way it goes.
    for settlement in [Settlement::Forgotten, delivered(WINDOW)] {
        store
            .settle_message(&a, &bob, "RM30", &crashed, settlement)
            .await
            .unwrap();
        assert_eq!(state(&late).await, Claim::Pending, "{settlement:?}");
    }
    assert!(store.settle_message_detached(&a, &bob, "RM30", &crashed, Settlement::Forgotten));
    store.flush().await;
    assert_eq!(state(&late).await, Claim::Pending);
    // The owner's settle: pending, then delivered.
    store
        .settle_message(&a, &bob, "RM30", &retry, delivered(WINDOW))
        .await
        .unwrap();
    assert_eq!(state(&late).await, Claim::Delivered);
    // Once delivered, nobody's "forget" undoes it, the owner's included.
    for owner in [&crashed, &retry] {
        store
            .settle_message(&a, &bob, "RM30", owner, Settlement::Forgotten)
            .await
            .unwrap();
        assert_eq!(state(&late).await, Claim::Delivered);
    }

    // Released on failure: a lookup whose outcome the caller never learned (a timeout) is
    // released by its owner, and the next attempt goes through at once.
    assert_eq!(
        store
            .claim_message(&a, &bob, "RM31", &crashed, pending)
            .await
            .unwrap(),
        Claim::Acquired
    );
    store
        .settle_message(&a, &bob, "RM31", &retry, Settlement::Forgotten)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_message(&a, &bob, "RM31", &late, pending)
            .await
            .unwrap(),
        Claim::Pending,
        "another owner cannot release it"
    );
    store
        .settle_message(&a, &bob, "RM31", &crashed, Settlement::Forgotten)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_message(&a, &bob, "RM31", &late, pending)
            .await
            .unwrap(),
        Claim::Acquired
    );

    // A holder whose claim lapsed with nobody taking it since still records its delivery:
    // it did happen.
    assert_eq!(
        store
            .claim_message(&a, &bob, "RM32", &crashed, Duration::from_millis(100))
            .await
            .unwrap(),
        Claim::Acquired
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    store
        .settle_message(&a, &bob, "RM32", &crashed, delivered(WINDOW))
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_message(&a, &bob, "RM32", &late, pending)
            .await
            .unwrap(),
        Claim::Delivered
    );
}

async fn lookups_claim_only_when_there_is_a_target(store: Arc<dyn Store>) {
    let (a, bob, t) = (account(), ident("bob"), now());
    let pending = Duration::from_secs(5);
    let owner = ClaimOwner::new();
    let request = |message_id| ClaimRequest {
        message_id,
        owner: &owner,
        pending_for: pending,
    };
    // Nothing stored: no claim is taken, so a retry after a registration is delivered.
    let l = store
        .lookup(&a, &bob, Some(request("RM10")), t)
        .await
        .unwrap();
    assert!(l.targets.is_empty());
    assert_eq!(l.claim, None);
    store
        .put_binding(binding("bob", "phone", &"ab".repeat(32), t))
        .await
        .unwrap();
    // An engine may have held the claim for a moment; it is free soon after, for anyone.
    let retry = ClaimOwner::new();
    let retried = |message_id| ClaimRequest {
        message_id,
        owner: &retry,
        pending_for: pending,
    };
    let mut l = store
        .lookup(&a, &bob, Some(retried("RM10")), t)
        .await
        .unwrap();
    for _ in 0..50 {
        if l.claim != Some(Claim::Pending) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        l = store
            .lookup(&a, &bob, Some(retried("RM10")), t)
            .await
            .unwrap();
    }
    assert_eq!(l.targets.bindings.len(), 1);
    assert_eq!(l.claim, Some(Claim::Acquired));
    let l = store
        .lookup(&a, &bob, Some(request("RM10")), t)
        .await
        .unwrap();
    assert_eq!(l.claim, Some(Claim::Pending));
    store
        .settle_message(&a, &bob, "RM10", &retry, delivered(WINDOW))
        .await
        .unwrap();
    let l = store
        .lookup(&a, &bob, Some(request("RM10")), t)
        .await
        .unwrap();
    assert_eq!(l.claim, Some(Claim::Delivered));
    // Without a message id, only the targets.
    let l = store.lookup(&a, &bob, None, t).await.unwrap();
    assert_eq!(l.targets.bindings.len(), 1);
    assert_eq!(l.claim, None);
    // Sockets count as targets too.
    let alice = ident("alice");
    store
        .put_presences(&[presence("alice", "c1", "n1", Duration::from_secs(30))])
        .await
        .unwrap();
    let l = store
        .lookup(&a, &alice, Some(request("RM11")), now())
        .await
        .unwrap();
    assert_eq!(l.targets.sockets.len(), 1);
    assert_eq!(l.claim, Some(Claim::Acquired));
}

async fn outcomes_recorded_in_the_background_are_written_by_flush(store: Arc<dyn Store>) {
    let (a, bob) = (account(), ident("bob"));
    let pending = Duration::from_secs(5);
    let owner = ClaimOwner::new();
    for id in ["RM20", "RM21", "RM22"] {
        assert_eq!(
            store
                .claim_message(&a, &bob, id, &owner, pending)
                .await
                .unwrap(),
            Claim::Acquired
        );
    }
    assert!(store.settle_message_detached(&a, &bob, "RM20", &owner, delivered(WINDOW)));
    assert!(store.settle_message_detached(&a, &bob, "RM21", &owner, delivered(WINDOW)));
    assert!(store.settle_message_detached(&a, &bob, "RM22", &owner, Settlement::Forgotten));
    // What shutdown does before the process exits.
    store.flush().await;
    let next = ClaimOwner::new();
    for (id, expected) in [
        ("RM20", Claim::Delivered),
        ("RM21", Claim::Delivered),
        ("RM22", Claim::Acquired),
    ] {
        assert_eq!(
            store
                .claim_message(&a, &bob, id, &next, pending)
                .await
                .unwrap(),
            expected,
            "{id}"
        );
    }
}

/// Presence renewals and dedupe outcomes are written in batches that span identities, so on
/// Redis Cluster they span hash slots (and nodes).
async fn batches_for_many_identities(store: Arc<dyn Store>) {
    let a = account();
    let names: Vec<String> = (0..24).map(|i| format!("user{i}")).collect();
    let presences: Vec<SocketPresence> = names
        .iter()
        .map(|n| presence(n, &format!("c-{n}"), "n1", Duration::from_secs(30)))
        .collect();
    store.put_presences(&presences).await.unwrap();
    for n in &names {
        let targets = store.targets(&a, &ident(n), now()).await.unwrap();
        assert_eq!(targets.sockets.len(), 1, "{n}");
        assert_eq!(targets.sockets[0].conn_id, format!("c-{n}"));
    }
    let pending = Duration::from_secs(5);
    let window = Duration::from_secs(600);
    let owners: Vec<ClaimOwner> = names.iter().map(|_| ClaimOwner::new()).collect();
    for (n, owner) in names.iter().zip(&owners) {
        assert_eq!(
            store
                .claim_message(&a, &ident(n), "RM30", owner, pending)
                .await
                .unwrap(),
            Claim::Acquired
        );
    }
    for (i, (n, owner)) in names.iter().zip(&owners).enumerate() {
        let settlement = if i % 2 == 0 {
            Settlement::Delivered { window }
        } else {
            Settlement::Forgotten
        };
        assert!(store.settle_message_detached(&a, &ident(n), "RM30", owner, settlement));
    }
    store.flush().await;
    for (i, n) in names.iter().enumerate() {
        let expected = if i % 2 == 0 {
            Claim::Delivered
        } else {
            Claim::Acquired
        };
        assert_eq!(
            store
                .claim_message(&a, &ident(n), "RM30", &ClaimOwner::new(), pending)
                .await
                .unwrap(),
            expected,
            "{n}"
        );
    }
}

async fn replica_messages(store: Arc<dyn Store>) {
    let node = format!("n{}", uuid::Uuid::new_v4().simple());
    assert_eq!(
        store
            .publish(&node, Bytes::from_static(b"x"))
            .await
            .unwrap(),
        0
    );
    let mut inbox = store.subscribe(&node).await.unwrap();
    // The subscription may take a moment to reach Redis.
    let mut received = None;
    for _ in 0..100 {
        if store
            .publish(&node, Bytes::from_static(b"hello\n\x00bytes"))
            .await
            .unwrap()
            == 1
        {
            received = tokio::time::timeout(Duration::from_secs(2), inbox.recv())
                .await
                .unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(received, Some(Bytes::from_static(b"hello\n\x00bytes")));
    assert_eq!(
        store
            .publish("someone-else", Bytes::from_static(b"x"))
            .await
            .unwrap(),
        0
    );
}

async fn the_event_log_keeps_order_drops_repeats_and_trims(store: Arc<dyn Store>) {
    let account = account();
    let other = AccountSid::parse("AC00000000000000000000000000000000").unwrap();
    let long = EventRetention {
        max_age: Duration::from_secs(600),
        max_events: 5,
    };
    let envelope = |n: usize| Bytes::from(format!("{{\"n\":{n}}}"));
    let mut positions = Vec::new();
    for n in 0..8 {
        let appended = store
            .append_event(&account, &format!("EZ{n}"), envelope(n), long)
            .await
            .unwrap();
        let Appended::New(position) = appended else {
            panic!("event {n} is new: {appended:?}");
        };
        positions.push(position);
    }
    // A repeat of a kept event is recognised, at the original's position, and not kept again.
    assert_eq!(
        store
            .append_event(&account, "EZ7", envelope(99), long)
            .await
            .unwrap(),
        Appended::Duplicate(positions[7].clone())
    );
    // The most recent five, in order; the account's log is its own.
    let kept = store.read_events(&account, None, 100).await.unwrap();
    let kept_envelopes: Vec<Bytes> = kept.iter().map(|e| e.envelope.clone()).collect();
    assert_eq!(kept_envelopes, (3..8).map(envelope).collect::<Vec<_>>());
    assert_eq!(
        kept.iter().map(|e| e.position.clone()).collect::<Vec<_>>(),
        positions[3..].to_vec()
    );
    assert!(
        store
            .read_events(&other, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Reading on from a position, a page at a time.
    let after = store
        .read_events(&account, Some(&positions[4]), 2)
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|e| e.envelope.clone()).collect::<Vec<_>>(),
        vec![envelope(5), envelope(6)]
    );

    // By age: an event past the retention goes, and so does the memory of its id.
    let short = EventRetention {
        max_age: Duration::from_millis(300),
        max_events: 100,
    };
    let fresh = AccountSid::parse("AC11111111111111111111111111111111").unwrap();
    assert!(matches!(
        store
            .append_event(&fresh, "EZold", envelope(1), short)
            .await
            .unwrap(),
        Appended::New(_)
    ));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(matches!(
        store
            .append_event(&fresh, "EZnew", envelope(2), short)
            .await
            .unwrap(),
        Appended::New(_)
    ));
    let kept = store.read_events(&fresh, None, 100).await.unwrap();
    assert_eq!(
        kept.iter().map(|e| e.envelope.clone()).collect::<Vec<_>>(),
        vec![envelope(2)]
    );
    assert!(matches!(
        store
            .append_event(&fresh, "EZold", envelope(3), short)
            .await
            .unwrap(),
        Appended::New(_)
    ));
}

async fn one_replica_at_a_time_forwards_to_a_target(store: Arc<dyn Store>) {
    let account = account();
    let lease = Duration::from_millis(400);
    assert!(
        store
            .hold_forwarder(&account, "billing", "a", lease)
            .await
            .unwrap()
    );
    assert!(
        !store
            .hold_forwarder(&account, "billing", "b", lease)
            .await
            .unwrap()
    );
    // Another target is another lease; the holder renews its own.
    assert!(
        store
            .hold_forwarder(&account, "audit", "b", lease)
            .await
            .unwrap()
    );
    assert!(
        store
            .hold_forwarder(&account, "billing", "a", lease)
            .await
            .unwrap()
    );
    // Released by its holder only.
    store
        .release_forwarder(&account, "billing", "b")
        .await
        .unwrap();
    assert!(
        !store
            .hold_forwarder(&account, "billing", "b", lease)
            .await
            .unwrap()
    );
    store
        .release_forwarder(&account, "billing", "a")
        .await
        .unwrap();
    assert!(
        store
            .hold_forwarder(&account, "billing", "b", lease)
            .await
            .unwrap()
    );
    // A holder that stops renewing loses it when the lease lapses.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        store
            .hold_forwarder(&account, "billing", "a", lease)
            .await
            .unwrap()
    );

    assert_eq!(
        store.forward_cursor(&account, "billing").await.unwrap(),
        None
    );
    // Only the lease's holder moves the cursor.
    assert!(
        !store
            .set_forward_cursor(&account, "billing", "b", "1765000000000-9")
            .await
            .unwrap()
    );
    assert!(
        store
            .set_forward_cursor(&account, "billing", "a", "1765000000000-3")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .forward_cursor(&account, "billing")
            .await
            .unwrap()
            .as_deref(),
        Some("1765000000000-3")
    );
    assert_eq!(store.forward_cursor(&account, "audit").await.unwrap(), None);
    assert_eq!(
        store
            .note_failed_forward(&account, "billing", "1-0")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .note_failed_forward(&account, "billing", "2-0")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .failed_forwards(&account, "billing", 10)
            .await
            .unwrap(),
        ["1-0", "2-0"]
    );
    // Replayed oldest first; taken off the queue one by one, only from its front.
    assert_eq!(store.replay_failed(&account, "billing").await.unwrap(), 2);
    assert!(
        store
            .failed_forwards(&account, "billing", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.replay_failed(&account, "billing").await.unwrap(), 0);
    store
        .finish_replay(&account, "billing", "2-0")
        .await
        .unwrap();
    assert_eq!(
        store
            .next_replay(&account, "billing")
            .await
            .unwrap()
            .as_deref(),
        Some("1-0")
    );
    store
        .finish_replay(&account, "billing", "1-0")
        .await
        .unwrap();
    assert_eq!(
        store
            .next_replay(&account, "billing")
            .await
            .unwrap()
            .as_deref(),
        Some("2-0")
    );
    store
        .finish_replay(&account, "billing", "2-0")
        .await
        .unwrap();
    assert_eq!(store.next_replay(&account, "billing").await.unwrap(), None);

    // An event by its position, while the log keeps it.
    let kept = EventRetention {
        max_age: Duration::from_secs(600),
        max_events: 10,
    };
    let Appended::New(position) = store
        .append_event(&account, "EZreplay", Bytes::from_static(b"{}"), kept)
        .await
        .unwrap()
    else {
        panic!("new");
    };
    let event = store.event_at(&account, &position).await.unwrap().unwrap();
    assert_eq!(event.position, position);
    assert_eq!(event.envelope, Bytes::from_static(b"{}"));
    assert_eq!(store.event_at(&account, "1-0").await.unwrap(), None);
}

fn trace_write(call: &str, identity: Option<&str>, at: OffsetDateTime, n: usize) -> TraceWrite {
    TraceWrite {
        account: account(),
        call_sid: CallSid::parse(call).unwrap(),
        identity: identity.map(ident),
        at,
        entry: Bytes::from(format!("{{\"n\":{n}}}")),
        retention: Duration::from_secs(3600),
        max_per_identity: 3,
    }
}

async fn call_traces_keep_their_entries_and_list_calls_per_identity(store: Arc<dyn Store>) {
    let t = now();
    let s = |secs: i64| t + time::Duration::seconds(secs);
    // One batch spanning calls, identities (and so, on a cluster, slots).
    store
        .record_calls(&[
            trace_write("CA1", Some("bob"), s(0), 1),
            trace_write("CA2", Some("bob"), s(1), 1),
            trace_write("CA1", Some("bob"), s(2), 2),
            trace_write("CA9", Some("carol"), s(3), 1),
        ])
        .await
        .unwrap();
    // A summary for CA1, naming no identity, joins its entries.
    store
        .record_calls(&[trace_write("CA1", None, s(4), 3)])
        .await
        .unwrap();
    let entries = store
        .call_entries(&account(), &CallSid::parse("CA1").unwrap())
        .await
        .unwrap();
    let texts: Vec<&[u8]> = entries.iter().map(|e| e.as_ref()).collect();
    assert_eq!(texts, vec![&b"{\"n\":1}"[..], b"{\"n\":2}", b"{\"n\":3}"]);
    assert!(
        store
            .call_entries(&account(), &CallSid::parse("CA404").unwrap())
            .await
            .unwrap()
            .is_empty()
    );

    // Newest first, listed at the first entry, from `since` on.
    let bob = |since| {
        let store = store.clone();
        async move {
            store
                .recent_calls(&account(), &ident("bob"), since, 10, 3)
                .await
                .unwrap()
        }
    };
    assert_eq!(bob(s(-60)).await, vec!["CA2", "CA1"]);
    assert_eq!(bob(s(1)).await, vec!["CA2"]);
    // The identity's list keeps the most recent `max_per_identity` (3).
    for (i, call) in ["CA3", "CA4", "CA5"].iter().enumerate() {
        store
            .record_calls(&[trace_write(call, Some("bob"), s(10 + i as i64), 1)])
            .await
            .unwrap();
    }
    assert_eq!(bob(s(-60)).await, vec!["CA5", "CA4", "CA3"]);
    assert_eq!(
        store
            .recent_calls(&account(), &ident("carol"), s(-60), 10, 3)
            .await
            .unwrap(),
        vec!["CA9"]
    );
    // One call SID under two accounts, in one batch: two traces, each with its own entry.
    let other = AccountSid::parse("AC11111111111111111111111111111111").unwrap();
    let theirs = TraceWrite {
        account: other.clone(),
        ..trace_write("CA8", None, s(30), 77)
    };
    store
        .record_calls(&[trace_write("CA8", None, s(30), 76), theirs])
        .await
        .unwrap();
    let ca8 = CallSid::parse("CA8").unwrap();
    let ours = store.call_entries(&account(), &ca8).await.unwrap();
    assert_eq!(ours, vec![Bytes::from_static(b"{\"n\":76}")]);
    let theirs = store.call_entries(&other, &ca8).await.unwrap();
    assert_eq!(theirs, vec![Bytes::from_static(b"{\"n\":77}")]);
    // A call's list keeps the most recent entries only.
    let many: Vec<TraceWrite> = (0..MAX_TRACE_ENTRIES + 5)
        .map(|n| trace_write("CA7", None, s(20), n))
        .collect();
    store.record_calls(&many).await.unwrap();
    let kept = store
        .call_entries(&account(), &CallSid::parse("CA7").unwrap())
        .await
        .unwrap();
    assert_eq!(kept.len(), MAX_TRACE_ENTRIES);
    assert_eq!(kept[0].as_ref(), b"{\"n\":5}");
    // And as later batches add to it.
    for n in 100..103 {
        store
            .record_calls(&[trace_write("CA7", None, s(21), n)])
            .await
            .unwrap();
    }
    let kept = store
        .call_entries(&account(), &CallSid::parse("CA7").unwrap())
        .await
        .unwrap();
    assert_eq!(kept.len(), MAX_TRACE_ENTRIES);
    assert_eq!(kept[0].as_ref(), b"{\"n\":8}");
    assert_eq!(kept[MAX_TRACE_ENTRIES - 1].as_ref(), b"{\"n\":102}");
}

async fn room_facts_are_kept_once_per_id_and_rooms_listed_by_their_earliest_fact(
    store: Arc<dyn Store>,
) {
    let t = now();
    let s = |secs: i64| t + time::Duration::seconds(secs);
    let fact = |room: &str, id: &str, at| RoomFactWrite {
        account: account(),
        room_sid: RoomSid::parse(room).unwrap(),
        fact_id: id.into(),
        fact: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
        at,
        retention: Duration::from_secs(3600),
    };
    // Out of order, and one fact twice.
    store
        .keep_room_fact(fact("RM1", "b", s(-10)))
        .await
        .unwrap();
    store
        .keep_room_fact(fact("RM1", "a", s(-30)))
        .await
        .unwrap();
    store
        .keep_room_fact(fact("RM1", "b", s(-10)))
        .await
        .unwrap();
    store
        .keep_room_fact(fact("RM2", "c", s(-20)))
        .await
        .unwrap();
    let mut facts: Vec<Bytes> = store
        .room_facts(&account(), &RoomSid::parse("RM1").unwrap())
        .await
        .unwrap();
    facts.sort();
    assert_eq!(
        facts,
        vec![
            Bytes::from_static(b"{\"id\":\"a\"}"),
            Bytes::from_static(b"{\"id\":\"b\"}")
        ]
    );
    // RM1 is listed at -30 (its earliest fact), newest first.
    let between = |from, to| {
        let store = store.clone();
        async move {
            store
                .rooms_between(&account(), from, to, 0, 10)
                .await
                .unwrap()
        }
    };
    assert_eq!(between(s(-60), s(0)).await, vec!["RM2", "RM1"]);
    assert_eq!(between(s(-25), s(0)).await, vec!["RM2"]);
    assert!(between(s(-5), s(0)).await.is_empty());
    // Pages: the second room alone after skipping the first.
    assert_eq!(
        store
            .rooms_between(&account(), s(-60), s(0), 1, 10)
            .await
            .unwrap(),
        vec!["RM1"]
    );
    assert!(
        store
            .room_facts(&account(), &RoomSid::parse("RM404").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}
