//! The Redis engine: bindings, presence and dedupe markers in Redis, replica messages over
//! Redis pub/sub. Every call is bounded by the configured command timeout, so a Redis outage
//! turns into quick `503`s rather than hung webhooks; the connections heal by themselves
//! (`link.rs`). One server, a Sentinel-managed master or a Redis Cluster (`connect.rs`): the
//! operations below are the same on all three.

mod appends;
mod binding_scripts;
mod bus;
mod connect;
mod events;
mod index;
mod keys;
mod legacy;
pub mod lines;
mod link;
mod outbox;
mod presence;
mod probe;
mod records;
mod scan;
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
use binding_scripts::{DEL_LINE_IF_EQUAL, REFRESH_LINE, TAKE_ALL_LINES, TAKE_LINE};
pub use index::{TokenEntry, holder};
pub use keys::{Keys, LegacyKey};
pub use legacy::MigrationReport;
use link::Link;
pub use probe::{ServerReport, probe};
use scripts::{HDEL_IF_EQUAL, STAMP_PRESENCES};

pub struct RedisStore {
    conn: Link,
    /// The call-record writer's connection: its batches (tens of writes each) would otherwise
    /// sit in one ordered stream in front of the webhooks' lookups.
    records: Link,
    keys: Keys,
    timeout: Duration,
    bus: bus::Bus,
    outbox: outbox::Outbox,
    settler: settle::Settler,
    durability: Option<Durability>,
    /// Whether data of the earlier layout may be left (`legacy.rs`).
    layout: Arc<legacy::Layout>,
    /// Which lists' expiries this replica set lately (`appends.rs`).
    refreshes: std::sync::Mutex<appends::Refreshes>,
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
    bounded_raw(link, timeout, fut).await?.map_err(unavailable)
}

/// `bounded`, with Redis's own error kept for the caller to look at.
async fn bounded_raw<T>(
    link: &Link,
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<redis::RedisResult<T>, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => {
            link.answered();
            Ok(result)
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

/// What `RedisStore::read_bindings` added to a pipeline.
struct ReadBindings {
    legacy: bool,
}

impl ReadBindings {
    /// The answers to those commands, taken from `replies`: the identity's string and the old
    /// hash's entries.
    #[allow(clippy::type_complexity)]
    fn take(
        &self,
        replies: &mut impl Iterator<Item = redis::Value>,
    ) -> Result<(Option<String>, Vec<(String, String)>), StoreError> {
        let mut next = || {
            replies
                .next()
                .ok_or_else(|| StoreError::Corrupt("a reply is missing".into()))
        };
        let old = if self.legacy {
            redis::from_redis_value(next()?).map_err(|e| corrupt("bindings", e))?
        } else {
            Vec::new()
        };
        let text: Option<String> =
            redis::from_redis_value(next()?).map_err(|e| corrupt("bindings", e))?;
        Ok((text, old))
    }
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
        let records = Link::open(dialer.clone(), "call records", timeout).await;
        let durability = match config.min_replica_acks {
            0 => None,
            replicas => Some(Durability {
                link: Link::open(dialer.clone(), "replica acknowledgements", timeout).await,
                replicas,
                wait: timeout * 3 / 4,
            }),
        };
        if let Some(master) = dialer.master_name() {
            let mut links = vec![conn.downgrade(), records.downgrade()];
            links.extend(durability.as_ref().map(|d| d.link.downgrade()));
            tokio::spawn(switches::watch(
                dialer.clone(),
                master.to_owned(),
                links,
                timeout,
            ));
        }
        let bus = bus::Bus::new(dialer.clone(), conn.clone(), timeout);
        let store = Self {
            settler: settle::Settler::start(conn.clone(), timeout),
            outbox: outbox::Outbox::start(conn.clone(), timeout, bus.publish_command()),
            bus,
            conn,
            records,
            keys: Keys::new(prefix),
            timeout,
            durability,
            layout: Arc::default(),
            refreshes: std::sync::Mutex::default(),
        };
        store.watch_layout();
        Ok(store)
    }

    async fn run<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        bounded(&self.conn, self.timeout, fut).await
    }

    async fn run_raw<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>, StoreError> {
        bounded_raw(&self.conn, self.timeout, fut).await
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

    /// Adds to `pipe` the reads of an identity's bindings: its string and, while the earlier
    /// layout may be left, its old hash. `take_bindings` reads their answers.
    fn read_bindings(
        &self,
        pipe: &mut redis::Pipeline,
        account: &AccountSid,
        identity: &Identity,
    ) -> ReadBindings {
        // The old hash first: an identity moved between the two reads (one script, all at
        // once) is then in one or the other, never in neither.
        let legacy = self.layout.may_hold_legacy();
        if legacy {
            pipe.hgetall(self.keys.legacy_bindings(account, identity));
        }
        pipe.get(self.keys.bindings(account, identity));
        ReadBindings { legacy }
    }

    /// Binding `id` as stored, with the claim number it was committed under.
    async fn stored_binding(
        &self,
        account: &AccountSid,
        identity: &Identity,
        id: &BindingId,
    ) -> Result<Option<(Binding, u64)>, StoreError> {
        Ok(self
            .stored_bindings(account, identity)
            .await?
            .into_iter()
            .find(|(b, _, _)| b.id == *id)
            .map(|(b, claim, _)| (b, claim)))
    }

    /// Every committed binding of an identity, expired ones included, with its claim number and
    /// its line (`None` for one still in the old hash).
    async fn stored_bindings(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<Vec<(Binding, u64, Option<String>)>, StoreError> {
        let mut pipe = redis::pipe();
        let read = self.read_bindings(&mut pipe, account, identity);
        let mut c = self.conn.clone();
        let replies: Vec<redis::Value> = self.run(pipe.query_async(&mut c)).await?;
        let (text, old) = read.take(&mut replies.into_iter())?;
        Ok(self.parse_stored(account, identity, text.as_deref(), &old))
    }

    fn parse_stored(
        &self,
        account: &AccountSid,
        identity: &Identity,
        text: Option<&str>,
        old: &[(String, String)],
    ) -> Vec<(Binding, u64, Option<String>)> {
        let mut out: Vec<(Binding, u64, Option<String>)> = Vec::new();
        for line in text.map(lines::split).into_iter().flatten() {
            // Being registered (or left by a registration that failed): never rings.
            if lines::is_provisional(line) {
                continue;
            }
            match lines::parse(account, identity, line) {
                Ok(b) => out.push((b, lines::claim_of(line), Some(line.to_owned()))),
                Err(e) => {
                    tracing::warn!(%identity, field = lines::field(line), error = %e, "skipping unreadable binding");
                }
            }
        }
        // Bindings still in the earlier layout; the string's, written later, win.
        for (b, claim) in legacy::read_hash(old) {
            if !out.iter().any(|(o, _, _)| o.id == b.id) {
                out.push((b, claim, None));
            }
        }
        out
    }

    /// The live bindings among those stored; expired ones are swept in the background.
    fn live_bindings(
        &self,
        account: &AccountSid,
        identity: &Identity,
        text: Option<&str>,
        old: &[(String, String)],
        now: OffsetDateTime,
    ) -> Vec<Binding> {
        let mut live = Vec::new();
        let mut expired = Vec::new();
        for (b, _, line) in self.parse_stored(account, identity, text, old) {
            if !b.is_expired(now) {
                live.push(b);
            } else if let Some(line) = line {
                expired.push(line);
            }
        }
        self.sweep_lines(account, identity, expired);
        live.sort_by(|a, b| a.id.cmp(&b.id));
        live
    }

    /// Removes `like`'s binding if it still holds `like`'s token; returns its claim number when
    /// the token is to be given up.
    async fn remove_if_same_token(&self, like: &Binding) -> Result<Option<u64>, StoreError> {
        let (account, identity) = (&like.account_sid, &like.identity);
        let Some((current, claim)) = self.stored_binding(account, identity, &like.id).await? else {
            return Ok(None);
        };
        // Either may have been read from the earlier layout: compared, and the line written,
        // in the new layout's form (the script moves the identity first if need be).
        let (current, like) = (
            legacy::normalised(current),
            legacy::normalised(like.clone()),
        );
        if current.channel != like.channel || current.address != like.address {
            return Ok(None);
        }
        let line = lines::line(&current, claim);
        // 1: removed; 2: removed, but another binding of the identity holds the token and
        // keeps its claim; 0: changed meanwhile.
        let removed: i64 = self
            .on_lines(account, identity, &DEL_LINE_IF_EQUAL, &[&line])
            .await?;
        Ok((removed == 1).then_some(claim))
    }

    /// Deletes expired lines in the background; each only if it did not change meanwhile.
    fn sweep_lines(&self, account: &AccountSid, identity: &Identity, expired: Vec<String>) {
        if expired.is_empty() {
            return;
        }
        let mut c = self.conn.clone();
        let key = self.keys.bindings(account, identity);
        let old = self.keys.legacy_bindings(account, identity);
        let timeout = self.timeout;
        tokio::spawn(async move {
            for line in expired {
                let mut invocation = DEL_LINE_IF_EQUAL.key(&key);
                invocation.key(&old).arg(&line);
                let call = invocation.invoke_async::<i64>(&mut c);
                if tokio::time::timeout(timeout, call).await.is_err() {
                    return;
                }
            }
        });
    }

    /// The targets in the answers to `read_bindings`' commands followed by `HGETALL` and
    /// `PTTL` of the sockets hash, taken from `replies`. `PTTL` with the hash's own expiry
    /// gives Redis's clock, which judges the leases (`presence.rs`).
    fn take_targets(
        &self,
        account: &AccountSid,
        identity: &Identity,
        read: &ReadBindings,
        replies: &mut impl Iterator<Item = redis::Value>,
        now: OffsetDateTime,
    ) -> Result<Targets, StoreError> {
        let (text, old) = read.take(replies)?;
        let mut next = || {
            replies
                .next()
                .ok_or_else(|| StoreError::Corrupt("a reply is missing".into()))
        };
        let sockets: Vec<(String, String)> =
            redis::from_redis_value(next()?).map_err(|e| corrupt("sockets", e))?;
        let sockets_pttl: i64 =
            redis::from_redis_value(next()?).map_err(|e| corrupt("sockets", e))?;
        let bindings = self.live_bindings(account, identity, text.as_deref(), &old, now);
        let read = presence::read(sockets, sockets_pttl, now);
        self.sweep(&self.keys.sockets(account, identity), read.lapsed);
        Ok(Targets {
            bindings,
            sockets: read.live,
        })
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
        Ok(self
            .stored_binding(account, identity, id)
            .await?
            .map(|(b, _)| b)
            .filter(|b| !b.is_expired(now)))
    }

    async fn list_bindings(
        &self,
        account: &AccountSid,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<Vec<Binding>, StoreError> {
        let mut pipe = redis::pipe();
        let read = self.read_bindings(&mut pipe, account, identity);
        let mut c = self.conn.clone();
        let replies: Vec<redis::Value> = self.run(pipe.query_async(&mut c)).await?;
        let (text, old) = read.take(&mut replies.into_iter())?;
        Ok(self.live_bindings(account, identity, text.as_deref(), &old, now))
    }

    async fn delete_binding(
        &self,
        account: &AccountSid,
        identity: &Identity,
        id: &BindingId,
    ) -> Result<bool, StoreError> {
        let taken: Vec<String> = self
            .on_lines(account, identity, &TAKE_LINE, &[id.as_str()])
            .await?;
        let [line, held] = &taken[..] else {
            return Ok(false);
        };
        self.replicated(&[&self.keys.bindings(account, identity)])
            .await?;
        match lines::parse(account, identity, line) {
            Ok(binding) => {
                // Another binding of the identity holding the token keeps its claim.
                if held != "1" {
                    self.release_token(&binding, lines::claim_of(line)).await?;
                }
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
        let taken: Option<String> = self
            .on_lines(account, identity, &TAKE_ALL_LINES, &[])
            .await?;
        self.replicated(&[&self.keys.bindings(account, identity)])
            .await?;
        let text = taken.unwrap_or_default();
        let committed: Vec<&str> = lines::split(&text)
            .filter(|l| !lines::is_provisional(l))
            .collect();
        for line in &committed {
            if let Ok(binding) = lines::parse(account, identity, line) {
                self.release_token(&binding, lines::claim_of(line)).await?;
            }
        }
        Ok(committed.len())
    }

    async fn refresh_binding(
        &self,
        binding: &Binding,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        // As its line has it, should it be read from the earlier layout and move meanwhile.
        let binding = &legacy::normalised(binding.clone());
        let refreshed = binding.refreshed(now);
        let ttl_ms = millis(binding.ttl());
        let written: i64 = self
            .on_lines(
                &binding.account_sid,
                &binding.identity,
                &REFRESH_LINE,
                &[
                    binding.id.as_str(),
                    &lines::body(binding),
                    &lines::body(&refreshed),
                    &ttl_ms.to_string(),
                ],
            )
            .await?;
        if written == 1 {
            // Only if the binding still owns its token: one that lost it meanwhile must not
            // keep the new owner's index entry alive.
            self.refresh_token(binding, ttl_ms).await?;
        }
        Ok(())
    }

    async fn remove_dead_binding(&self, binding: &Binding) -> Result<(), StoreError> {
        if let Some(claim) = self.remove_if_same_token(binding).await? {
            self.release_token(&legacy::normalised(binding.clone()), claim)
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
        let sockets_key = self.keys.sockets(account, identity);
        let mut pipe = redis::pipe();
        let read = self.read_bindings(&mut pipe, account, identity);
        pipe.hgetall(&sockets_key).pttl(&sockets_key);
        let mut c = self.conn.clone();
        let replies: Vec<redis::Value> = self.run(pipe.query_async(&mut c)).await?;
        self.take_targets(account, identity, &read, &mut replies.into_iter(), now)
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
        let sockets_key = self.keys.sockets(account, identity);
        let marker = self.keys.message(account, identity, request.message_id);
        let value = claim_value(request.owner);
        // One round trip: the reads and the claim together, plain commands (no script, which
        // would cost Redis more than the three of them). The claim is taken before knowing
        // whether there is anyone to deliver to; when there is not, it is released with the
        // next batch of outcomes. A retry that comes in before that finds it pending and
        // waits, as for any claim, until it is free.
        let mut pipe = redis::pipe();
        let read = self.read_bindings(&mut pipe, account, identity);
        pipe.hgetall(&sockets_key)
            .pttl(&sockets_key)
            .cmd("SET")
            .arg(&marker)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(millis(request.pending_for));
        let mut c = self.conn.clone();
        let replies: Vec<redis::Value> = self.run(pipe.query_async(&mut c)).await?;
        let mut replies = replies.into_iter();
        let targets = self.take_targets(account, identity, &read, &mut replies, now)?;
        let set: Option<String> = replies
            .next()
            .map(redis::from_redis_value)
            .transpose()
            .map_err(|e| corrupt("message marker", e))?
            .flatten();
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
        kept: usize,
    ) -> Result<Vec<CallSid>, StoreError> {
        self.read_recent_calls(account, identity, since, limit, kept)
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
