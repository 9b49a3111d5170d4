//! The Redis engine: bindings, presence and dedupe markers in Redis, replica messages over
//! Redis pub/sub. Every call is bounded by the configured command timeout, so a Redis outage
//! turns into quick `503`s rather than hung webhooks; the connections heal by themselves
//! (`link.rs`). One server, a Sentinel-managed master or a Redis Cluster (`connect.rs`): the
//! operations below are the same on all three.

mod bus;
mod connect;
mod events;
mod index;
mod keys;
mod link;
mod outbox;
mod presence;
mod probe;
mod records;
mod scripts;
mod settle;
mod slots;
mod switches;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::{
    Claim, ClaimOwner, ClaimRequest, Lookup, PresenceKey, PutOutcome, Settlement, SocketPresence,
    Store, StoreError, Targets,
};
use crate::config::RedisConfig;
use crate::domain::{AccountSid, Binding, BindingId, CallSid, Identity, RoomSid};
pub use keys::Keys;
use link::Link;
pub use probe::{ServerReport, probe};
use scripts::{HDEL_IF_EQUAL, HTAKE, HTAKE_ALL, REFRESH_BINDING, STAMP_PRESENCES};

pub struct RedisStore {
    conn: Link,
    keys: Keys,
    timeout: Duration,
    bus: bus::Bus,
    outbox: outbox::Outbox,
    settler: settle::Settler,
    durability: Option<Durability>,
}

/// `store.min_replica_acks`: binding writes wait until replicas have them.
struct Durability {
    /// A connection of its own: `WAIT` blocks the connection it is sent on, and webhooks must
    /// never queue behind it.
    link: Link,
    replicas: u32,
    /// How long `WAIT` waits: three quarters of the command timeout, so that its answer
    /// arrives before the call is given up.
    wait: Duration,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Bounds a call on `link` by `timeout`, and tells the link whether it was answered: calls
/// that time out one after another make it replace its connection.
async fn bounded<T>(
    link: &Link,
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => {
            link.answered();
            result.map_err(unavailable)
        }
        Err(_) => {
            link.timed_out();
            Err(StoreError::Unavailable(format!(
                "no answer within {} ms",
                timeout.as_millis()
            )))
        }
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// The marker value of `owner`'s claim.
fn claim_value(owner: &ClaimOwner) -> String {
    format!("pending:{}", owner.as_str())
}

/// What a marker found in Redis means to `owner`. (A bare `pending` is a claim taken by a
/// version without owners: someone else's, lapsing by itself.)
fn parse_claim(state: &str, owner: &ClaimOwner) -> Result<Claim, StoreError> {
    match state {
        "delivered" => Ok(Claim::Delivered),
        "pending" => Ok(Claim::Pending),
        _ => match state.strip_prefix("pending:") {
            Some(holder) if holder == owner.as_str() => Ok(Claim::Acquired),
            Some(_) => Ok(Claim::Pending),
            None => Err(corrupt("message marker", state)),
        },
    }
}

/// The JSON kept in the address index: who owns a device token.
fn owner_json(identity: &Identity, id: &BindingId) -> String {
    serde_json::to_string(&(identity.as_str(), id.as_str())).expect("strings serialise")
}

fn parse_owner(text: &str) -> Option<(Identity, BindingId)> {
    let (identity, id): (String, String) = serde_json::from_str(text).ok()?;
    Some((
        Identity::parse(&identity).ok()?,
        BindingId::parse(&id).ok()?,
    ))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("bindings serialise")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Opens the connections lazily: callrelay starts even while Redis is down, reports not
    /// ready, and connects as soon as Redis answers.
    pub async fn connect(
        config: &RedisConfig,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let dialer = Arc::new(connect::Dialer::new(config, timeout)?);
        let conn = Link::open(dialer.clone(), "store", timeout).await;
        let durability = match config.min_replica_acks {
            0 => None,
            replicas => Some(Durability {
                link: Link::open(dialer.clone(), "replica acknowledgements", timeout).await,
                replicas,
                wait: timeout * 3 / 4,
            }),
        };
        if let Some(master) = dialer.master_name() {
            let mut links = vec![conn.downgrade()];
            links.extend(durability.as_ref().map(|d| d.link.downgrade()));
            tokio::spawn(switches::watch(
                dialer.clone(),
                master.to_owned(),
                links,
                timeout,
            ));
        }
        let bus = bus::Bus::new(dialer.clone(), conn.clone(), timeout);
        Ok(Self {
            settler: settle::Settler::start(conn.clone(), timeout),
            outbox: outbox::Outbox::start(conn.clone(), timeout, bus.publish_command()),
            bus,
            conn,
            keys: Keys::new(prefix),
            timeout,
            durability,
        })
    }

    async fn run<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        bounded(&self.conn, self.timeout, fut).await
    }

    /// With `store.min_replica_acks` set, returns once that many replicas have every write
    /// made so far to the nodes holding `keys`; otherwise fails, and the caller answers `503`
    /// (the write stays on the master; the client's retry writes it again).
    ///
    /// `WAIT` covers the writes of the connection it is sent on, and it must not block the
    /// store's shared connection; so a marker is written on the acknowledgement connection
    /// after the caller's writes were answered, and `WAIT` follows it there: replication is
    /// one ordered stream per master, so once the marker is on a replica, so is everything
    /// written before it. (Each key's hash tag keeps its marker on the key's own node.)
    async fn replicated(&self, keys: &[&str]) -> Result<(), StoreError> {
        let Some(d) = &self.durability else {
            return Ok(());
        };
        let markers: BTreeSet<String> = if d.link.is_cluster() {
            keys.iter()
                .map(|k| self.keys.replication_marker(k))
                .collect()
        } else {
            keys.iter()
                .take(1)
                .map(|k| self.keys.replication_marker(k))
                .collect()
        };
        for marker in markers {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&marker)
                .arg(1)
                .arg("PX")
                .arg(60_000)
                .ignore()
                .cmd("WAIT")
                .arg(d.replicas)
                .arg(millis(d.wait));
            let mut c = d.link.clone();
            let (acked,): (i64,) = bounded(&d.link, self.timeout, pipe.query_async(&mut c)).await?;
            if acked < i64::from(d.replicas) {
                return Err(StoreError::Unavailable(format!(
                    "{acked} of {} replicas acknowledged the write within {} ms",
                    d.replicas,
                    d.wait.as_millis()
                )));
            }
        }
        Ok(())
    }

    /// A pipeline of calls to `script`: a Redis that does not know the script yet (it
    /// restarted, or failed over) is given it and asked again. Only for pipelines whose
    /// commands may run twice.
    async fn query_loading<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        script: &redis::Script,
    ) -> redis::RedisResult<T> {
        let mut c = self.conn.clone();
        match pipe.query_async(&mut c).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                script.prepare_invoke().load_async(&mut c).await?;
                pipe.query_async(&mut c).await
            }
            result => result,
        }
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn.clone();
        self.run(c.hget(key, field)).await
    }

    async fn hdel_if_equal(&self, key: &str, field: &str, value: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = self
            .run(
                HDEL_IF_EQUAL
                    .key(key)
                    .arg(field)
                    .arg(value)
                    .invoke_async(&mut c),
            )
            .await?;
        Ok(n == 1)
    }

    /// Removes `like`'s binding if it still holds `like`'s token; returns what was removed.
    async fn remove_if_same_token(&self, like: &Binding) -> Result<Option<String>, StoreError> {
        let key = self.keys.bindings(&like.account_sid, &like.identity);
        let Some(text) = self.hget(&key, like.id.as_str()).await? else {
            return Ok(None);
        };
        let Ok(current) = serde_json::from_str::<Binding>(&text) else {
            return Ok(None);
        };
        if current.channel != like.channel || current.address != like.address {
            return Ok(None);
        }
        Ok(self
            .hdel_if_equal(&key, like.id.as_str(), &text)
            .await?
            .then_some(text))
    }

    fn parse_bindings(
        &self,
        key: &str,
        entries: Vec<(String, String)>,
        now: OffsetDateTime,
    ) -> Vec<Binding> {
        let mut live = Vec::with_capacity(entries.len());
        let mut expired = Vec::new();
        for (field, text) in entries {
            // Being registered (or left by a registration that failed): never rings.
            if index::is_provisional(&field) {
                continue;
            }
            match serde_json::from_str::<Binding>(&text) {
                Ok(b) if b.is_expired(now) => expired.push((field, text)),
                Ok(b) => live.push(b),
                Err(e) => tracing::warn!(key, field, error = %e, "skipping unreadable binding"),
            }
        }
        self.sweep(key, expired);
        live.sort_by(|a, b| a.id.cmp(&b.id));
        live
    }

    /// `sockets_pttl` is the sockets hash's `PTTL`, read in the same round trip: with the hash's
    /// own expiry it gives Redis's clock, which judges the leases (`presence.rs`).
    fn parse_targets(
        &self,
        bindings_key: &str,
        bindings: Vec<(String, String)>,
        sockets_key: &str,
        sockets: Vec<(String, String)>,
        sockets_pttl: i64,
        now: OffsetDateTime,
    ) -> Targets {
        let bindings = self.parse_bindings(bindings_key, bindings, now);
        let read = presence::read(sockets, sockets_pttl, now);
        self.sweep(sockets_key, read.lapsed);
        Targets {
            bindings,
            sockets: read.live,
        }
    }

    /// Deletes expired entries in the background; each only if it did not change meanwhile.
    fn sweep(&self, key: &str, entries: Vec<(String, String)>) {
        if entries.is_empty() {
            return;
        }
        let mut c = self.conn.clone();
        let key = key.to_owned();
        let timeout = self.timeout;
        tokio::spawn(async move {
            for (field, value) in entries {
                let mut invocation = HDEL_IF_EQUAL.key(&key);
                invocation.arg(&field).arg(&value);
                let call = invocation.invoke_async::<i64>(&mut c);
                if tokio::time::timeout(timeout, call).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[async_trait]
impl Store for RedisStore {
    fn engine(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: String = self.run(redis::cmd("PING").query_async(&mut c)).await?;
        Ok(())
    }

    async fn put_binding(&self, binding: Binding) -> Result<PutOutcome, StoreError> {
        // The device-token index protocol: `index.rs`.
        self.register(binding).await
    }

    async fn get_binding(
        &self,
        account: &AccountSid,
        identity: &Identity,
        id: &BindingId,
        now: OffsetDateTime,
    ) -> Result<Option<Binding>, StoreError> {
        let key = self.keys.bindings(account, identity);
        let Some(text) = self.hget(&key, id.as_str()).await? else {
            return Ok(None);
        };
        let binding: Binding = serde_json::from_str(&text).map_err(|e| corrupt(&key, e))?;
        Ok((!binding.is_expired(now)).then_some(binding))
    }

    async fn list_bindings(
        &self,
        account: &AccountSid,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<Vec<Binding>, StoreError> {
        let key = self.keys.bindings(account, identity);
        let mut c = self.conn.clone();
        let entries: Vec<(String, String)> = self.run(c.hgetall(&key)).await?;
        Ok(self.parse_bindings(&key, entries, now))
    }

    async fn delete_binding(
        &self,
        account: &AccountSid,
        identity: &Identity,
        id: &BindingId,
    ) -> Result<bool, StoreError> {
        let key = self.keys.bindings(account, identity);
        let mut c = self.conn.clone();
        let old: Option<String> = self
            .run(HTAKE.key(&key).arg(id.as_str()).invoke_async(&mut c))
            .await?;
        let Some(old) = old else {
            return Ok(false);
        };
        self.replicated(&[&key]).await?;
        match serde_json::from_str::<Binding>(&old) {
            Ok(binding) => {
                self.release_token(&binding, index::claim_of(&old)).await?;
                // Gone either way; an expired one was already gone as far as callers could see.
                Ok(!binding.is_expired(OffsetDateTime::now_utc()))
            }
            Err(_) => Ok(true),
        }
    }

    async fn delete_bindings(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<usize, StoreError> {
        let key = self.keys.bindings(account, identity);
        let mut c = self.conn.clone();
        let flat: Vec<String> = self.run(HTAKE_ALL.key(&key).invoke_async(&mut c)).await?;
        self.replicated(&[&key]).await?;
        let bindings: Vec<&String> = flat
            .chunks(2)
            .filter(|pair| !index::is_provisional(&pair[0]))
            .filter_map(|pair| pair.get(1))
            .collect();
        for text in &bindings {
            if let Ok(binding) = serde_json::from_str::<Binding>(text) {
                self.release_token(&binding, index::claim_of(text)).await?;
            }
        }
        Ok(bindings.len())
    }

    async fn refresh_binding(
        &self,
        binding: &Binding,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let key = self.keys.bindings(&binding.account_sid, &binding.identity);
        let refreshed = binding.refreshed(now);
        let ttl_ms = millis(binding.ttl());
        let mut c = self.conn.clone();
        let written: i64 = self
            .run(
                REFRESH_BINDING
                    .key(&key)
                    .arg(binding.id.as_str())
                    .arg(to_json(binding))
                    .arg(to_json(&refreshed))
                    .arg(ttl_ms)
                    .invoke_async(&mut c),
            )
            .await?;
        if written == 1 {
            // Only if the binding still owns its token: one that lost it meanwhile must not
            // keep the new owner's index entry alive, nor cut it short.
            self.refresh_token(binding, ttl_ms).await?;
        }
        Ok(())
    }

    async fn remove_dead_binding(&self, binding: &Binding) -> Result<(), StoreError> {
        if let Some(removed) = self.remove_if_same_token(binding).await? {
            self.release_token(binding, index::claim_of(&removed))
                .await?;
        }
        Ok(())
    }

    async fn targets(
        &self,
        account: &AccountSid,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<Targets, StoreError> {
        let bindings_key = self.keys.bindings(account, identity);
        let sockets_key = self.keys.sockets(account, identity);
        let mut c = self.conn.clone();
        type Reply = (Vec<(String, String)>, Vec<(String, String)>, i64);
        let (bindings, sockets, sockets_pttl): Reply = self
            .run(
                redis::pipe()
                    .hgetall(&bindings_key)
                    .hgetall(&sockets_key)
                    .pttl(&sockets_key)
                    .query_async(&mut c),
            )
            .await?;
        Ok(self.parse_targets(
            &bindings_key,
            bindings,
            &sockets_key,
            sockets,
            sockets_pttl,
            now,
        ))
    }

    async fn lookup(
        &self,
        account: &AccountSid,
        identity: &Identity,
        claim: Option<ClaimRequest<'_>>,
        now: OffsetDateTime,
    ) -> Result<Lookup, StoreError> {
        let Some(request) = claim else {
            let targets = self.targets(account, identity, now).await?;
            return Ok(Lookup {
                targets,
                claim: None,
            });
        };
        let bindings_key = self.keys.bindings(account, identity);
        let sockets_key = self.keys.sockets(account, identity);
        let marker = self.keys.message(account, identity, request.message_id);
        let value = claim_value(request.owner);
        // One round trip: the reads and the claim together, plain commands (no script, which
        // would cost Redis more than the three of them). The claim is taken before knowing
        // whether there is anyone to deliver to; when there is not, it is released with the
        // next batch of outcomes. A retry that comes in before that finds it pending and
        // waits, as for any claim, until it is free.
        let mut pipe = redis::pipe();
        pipe.hgetall(&bindings_key)
            .hgetall(&sockets_key)
            .pttl(&sockets_key)
            .cmd("SET")
            .arg(&marker)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(millis(request.pending_for));
        let mut c = self.conn.clone();
        type Reply = (
            Vec<(String, String)>,
            Vec<(String, String)>,
            i64,
            Option<String>,
        );
        let (bindings, sockets, sockets_pttl, set): Reply =
            self.run(pipe.query_async(&mut c)).await?;
        let targets = self.parse_targets(
            &bindings_key,
            bindings,
            &sockets_key,
            sockets,
            sockets_pttl,
            now,
        );
        let acquired = set.is_some();
        if targets.is_empty() {
            if acquired
                && !self
                    .settler
                    .settle_detached(marker, value, Settlement::Forgotten)
            {
                tracing::debug!("dedupe-outcome queue full: an unneeded claim lapses by itself");
            }
            return Ok(Lookup {
                targets,
                claim: None,
            });
        }
        let claim = if acquired {
            Claim::Acquired
        } else {
            // Rare: Twilio retrying. Which state the marker is in takes a second look.
            self.claim_message(
                account,
                identity,
                request.message_id,
                request.owner,
                request.pending_for,
            )
            .await?
        };
        Ok(Lookup {
            targets,
            claim: Some(claim),
        })
    }

    async fn put_presences(&self, presences: &[SocketPresence]) -> Result<(), StoreError> {
        if presences.is_empty() {
            return Ok(());
        }
        // One script call per sockets hash, each touching that hash only (one slot), all in one
        // pipeline; Redis's clock stamps the leases.
        let batches = presence::stamp_batches(
            presences,
            |p| self.keys.sockets(&p.account_sid, &p.identity),
            OffsetDateTime::now_utc(),
        );
        let mut pipe = redis::pipe();
        for (key, batch) in &batches {
            let mut invocation = STAMP_PRESENCES.key(key);
            for (conn_id, json, lease_ms) in batch {
                invocation.arg(*conn_id).arg(json).arg(*lease_ms);
            }
            pipe.invoke_script(&invocation).ignore();
        }
        self.run(self.query_loading(&pipe, &STAMP_PRESENCES)).await
    }

    async fn remove_presence(
        &self,
        account: &AccountSid,
        identity: &Identity,
        conn_id: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(c.hdel(self.keys.sockets(account, identity), conn_id))
            .await?;
        Ok(())
    }

    async fn remove_presences(&self, sockets: &[PresenceKey]) -> Result<(), StoreError> {
        if sockets.is_empty() {
            return Ok(());
        }
        // One HDEL per socket, each on its identity's sockets hash, in one pipeline (split per
        // slot on a cluster, as every pipeline is).
        let mut pipe = redis::pipe();
        for s in sockets {
            pipe.hdel(self.keys.sockets(&s.account_sid, &s.identity), &s.conn_id)
                .ignore();
        }
        let mut c = self.conn.clone();
        self.run(pipe.query_async::<()>(&mut c)).await
    }

    async fn claim_message(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        pending_for: Duration,
    ) -> Result<Claim, StoreError> {
        let key = self.keys.message(account, identity, message_id);
        let value = claim_value(owner);
        // A plain `SET NX` rather than a script: the common case is one cheap command. Only
        // a marker that exists needs a second look, and one that lapsed between the two is
        // claimed again.
        for _ in 0..3 {
            let mut c = self.conn.clone();
            let set: Option<String> = self
                .run(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .arg("NX")
                        .arg("PX")
                        .arg(millis(pending_for))
                        .query_async(&mut c),
                )
                .await?;
            if set.is_some() {
                return Ok(Claim::Acquired);
            }
            let state: Option<String> = self.run(c.get(&key)).await?;
            if let Some(state) = state {
                return parse_claim(&state, owner);
            }
        }
        Err(StoreError::Unavailable(
            "the message marker kept changing while being claimed".into(),
        ))
    }

    async fn settle_message(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        settlement: Settlement,
    ) -> Result<(), StoreError> {
        let key = self.keys.message(account, identity, message_id);
        self.settler
            .settle(key, claim_value(owner), settlement)
            .await
    }

    async fn flush(&self) {
        self.settler.flush().await;
    }

    fn settle_message_detached(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        settlement: Settlement,
    ) -> bool {
        let key = self.keys.message(account, identity, message_id);
        self.settler
            .settle_detached(key, claim_value(owner), settlement)
    }

    async fn publish(&self, node: &str, message: Bytes) -> Result<usize, StoreError> {
        self.outbox
            .publish(self.keys.node_channel(node), message)
            .await
    }

    async fn subscribe(&self, node: &str) -> Result<mpsc::Receiver<Bytes>, StoreError> {
        self.bus.subscribe(self.keys.node_channel(node)).await
    }

    async fn append_event(
        &self,
        account: &AccountSid,
        event_id: &str,
        envelope: Bytes,
        retention: crate::store::EventRetention,
    ) -> Result<crate::store::Appended, StoreError> {
        self.append_event_to_log(account, event_id, envelope, retention)
            .await
    }

    async fn read_events(
        &self,
        account: &AccountSid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<crate::store::LoggedEvent>, StoreError> {
        self.read_event_log(account, after, limit).await
    }

    async fn hold_forwarder(
        &self,
        account: &AccountSid,
        target: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.hold_forwarder_lease(account, target, node, ttl).await
    }

    async fn release_forwarder(
        &self,
        account: &AccountSid,
        target: &str,
        node: &str,
    ) -> Result<(), StoreError> {
        self.release_forwarder_lease(account, target, node).await
    }

    async fn forward_cursor(
        &self,
        account: &AccountSid,
        target: &str,
    ) -> Result<Option<String>, StoreError> {
        self.get_forward_cursor(account, target).await
    }

    async fn set_forward_cursor(
        &self,
        account: &AccountSid,
        target: &str,
        holder: &str,
        position: &str,
    ) -> Result<bool, StoreError> {
        self.put_forward_cursor(account, target, holder, position)
            .await
    }

    async fn event_at(
        &self,
        account: &AccountSid,
        position: &str,
    ) -> Result<Option<crate::store::LoggedEvent>, StoreError> {
        self.event_at_position(account, position).await
    }

    async fn failed_forwards(
        &self,
        account: &AccountSid,
        target: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.failed_positions(account, target, limit).await
    }

    async fn replay_failed(&self, account: &AccountSid, target: &str) -> Result<u64, StoreError> {
        self.move_failed_to_replay(account, target).await
    }

    async fn next_replay(
        &self,
        account: &AccountSid,
        target: &str,
    ) -> Result<Option<String>, StoreError> {
        self.first_replay(account, target).await
    }

    async fn finish_replay(
        &self,
        account: &AccountSid,
        target: &str,
        position: &str,
    ) -> Result<(), StoreError> {
        self.pop_replay(account, target, position).await
    }

    async fn put_event_target(
        &self,
        account: &AccountSid,
        target: &crate::store::StoredTarget,
    ) -> Result<(), StoreError> {
        self.put_target(account, target).await
    }

    async fn remove_event_target(
        &self,
        account: &AccountSid,
        name: &str,
    ) -> Result<bool, StoreError> {
        self.remove_target(account, name).await
    }

    async fn event_targets(
        &self,
        account: &AccountSid,
    ) -> Result<Vec<crate::store::StoredTarget>, StoreError> {
        self.targets_of(account).await
    }

    async fn note_failed_forward(
        &self,
        account: &AccountSid,
        target: &str,
        position: &str,
    ) -> Result<u64, StoreError> {
        self.push_failed_forward(account, target, position).await
    }

    async fn record_calls(&self, writes: &[crate::store::TraceWrite]) -> Result<(), StoreError> {
        self.write_call_records(writes).await
    }

    async fn keep_ringing(&self, writes: &[crate::store::RingingWrite]) -> Result<(), StoreError> {
        self.write_ringing(writes).await
    }

    async fn ringing(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.read_ringing(account, identity).await
    }

    async fn call_entries(
        &self,
        account: &AccountSid,
        call_sid: &CallSid,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.read_call_entries(account, call_sid).await
    }

    async fn recent_calls(
        &self,
        account: &AccountSid,
        identity: &Identity,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<CallSid>, StoreError> {
        self.read_recent_calls(account, identity, since, limit)
            .await
    }

    async fn keep_room_fact(&self, fact: crate::store::RoomFactWrite) -> Result<(), StoreError> {
        self.write_room_fact(fact).await
    }

    async fn room_facts(
        &self,
        account: &AccountSid,
        room_sid: &RoomSid,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.read_room_facts(account, room_sid).await
    }

    async fn rooms_between(
        &self,
        account: &AccountSid,
        from: OffsetDateTime,
        to: OffsetDateTime,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<RoomSid>, StoreError> {
        self.read_rooms_between(account, from, to, offset, limit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_means_acquired_only_to_its_owner() {
        let me = ClaimOwner::new();
        let other = ClaimOwner::new();
        assert_ne!(me, other);
        let mine = claim_value(&me);
        assert_eq!(parse_claim(&mine, &me).unwrap(), Claim::Acquired);
        assert_eq!(parse_claim(&mine, &other).unwrap(), Claim::Pending);
        assert_eq!(parse_claim("delivered", &me).unwrap(), Claim::Delivered);
        // A claim from a version without owners is someone else's.
        assert_eq!(parse_claim("pending", &me).unwrap(), Claim::Pending);
        assert!(parse_claim("acquired", &me).is_err());
    }
}
