//! Where bindings, socket presence, delivered-message markers, the replica bus and the event
//! log (Twilio's status callbacks and Event Streams, per account) live. One
//! trait, two engines: `redis` for production and several replicas, `memory` for a single
//! process. Both pass the same conformance suite (`tests/it/store.rs`).

pub mod memory;
mod memory_events;
mod memory_records;
pub mod metered;
pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::config::StoreConfig;
use crate::domain::{AccountSid, Binding, BindingId, CallSid, Identity, RoomSid, SocketPresence};

/// How long, and how many, events an account's log keeps (`[events]`).
pub use crate::config::EventRetention;

/// What became of an event appended to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Kept, at this position.
    New(String),
    /// An event with the same id was kept already (within the retention), at this position.
    Duplicate(String),
}

/// An event as the log keeps it: its position and its envelope (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Increasing within an account's log (`<milliseconds>-<sequence>`, as Redis streams).
    pub position: String,
    pub envelope: Bytes,
}

/// Everything a webhook can deliver to for one (account, identity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    pub bindings: Vec<Binding>,
    pub sockets: Vec<SocketPresence>,
}

impl Targets {
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty() && self.sockets.is_empty()
    }
}

/// The result of registering a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The binding as stored (its `created_at` kept from the binding it replaced).
    pub binding: Binding,
    /// No binding with this id existed.
    pub created: bool,
    /// Bindings removed because they held the same device token: another identity's (a move)
    /// or an older registration under another id.
    pub displaced: Vec<(Identity, BindingId)>,
}

/// What a webhook needs from the store before delivering: the callee's targets and, when
/// there are any, the claim on the notification's `twi_message_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    pub targets: Targets,
    /// `None` when no claim was asked for or there is nobody to deliver to. (An engine that
    /// takes the claim to answer in one round trip releases it by itself, soon after: a
    /// retry in between finds the notification pending for a moment.)
    pub claim: Option<Claim>,
}

/// The claim a lookup should take: on `message_id`, for `owner`, pending for `pending_for`.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub message_id: &'a str,
    pub owner: &'a ClaimOwner,
    pub pending_for: Duration,
}

/// Claiming a `twi_message_id` before delivering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Nobody delivered it, and now the asking owner holds the claim: it delivers and then
    /// settles the claim.
    Acquired,
    /// Another attempt holds the claim: it is delivering right now, or it died and the claim
    /// has not lapsed yet.
    Pending,
    /// Already delivered within the dedupe window.
    Delivered,
}

/// Who holds a claim: one value per webhook attempt, so that an attempt settles its own claim
/// and never another's (an attempt whose claim lapsed must not settle the claim a retry took
/// since). What matters is that no two attempts share one, anywhere, ever: a random prefix
/// drawn once per process and a counter give that without drawing randomness per webhook.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimOwner(String);

impl ClaimOwner {
    /// A new owner, unique across attempts, replicas and restarts.
    pub fn new() -> Self {
        static PREFIX: LazyLock<String> =
            LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_owned());
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(format!(
            "{}{:x}",
            *PREFIX,
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a claim ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Remembered as delivered for `window`: Twilio's retries are duplicates. Written also when
    /// the owner's claim lapsed and nobody took it since: the delivery did happen.
    Delivered { window: Duration },
    /// Nothing was delivered (or the attempt gave up before delivering): the claim is removed,
    /// so that a retry goes through at once.
    Forgotten,
}

impl Default for ClaimOwner {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unreachable: {0}")]
    Unavailable(String),
    #[error("the store holds data callrelay cannot read: {0}")]
    Corrupt(String),
}

/// Which socket's presence: what withdrawing it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceKey {
    pub account_sid: AccountSid,
    pub identity: Identity,
    pub conn_id: String,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which engine, for logs and `/readyz`.
    fn engine(&self) -> &'static str;

    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates or replaces a binding, keeping one binding per (account, channel, address).
    async fn put_binding(&self, binding: Binding) -> Result<PutOutcome, StoreError>;

    /// Unexpired binding with this id, if any.
    async fn get_binding(
        &self,
        account: &AccountSid,
        identity: &Identity,
        id: &BindingId,
        now: OffsetDateTime,
    ) -> Result<Option<Binding>, StoreError>;

    async fn list_bindings(
        &self,
        account: &AccountSid,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<Vec<Binding>, StoreError>;

    /// Returns whether a binding was removed.
    async fn delete_binding(
        &self,
        account: &AccountSid,
        identity: &Identity,
        id: &BindingId,
    ) -> Result<bool, StoreError>;

    /// Removes every binding of the identity; returns how many there were.
    async fn delete_bindings(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<usize, StoreError>;

    /// After a successful push: extends the binding's life, unless it changed meanwhile.
    async fn refresh_binding(
        &self,
        binding: &Binding,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// After the push service called the address dead: removes the binding, unless it was
    /// re-registered with another address meanwhile.
    async fn remove_dead_binding(&self, binding: &Binding) -> Result<(), StoreError>;

    /// Bindings and live sockets of one identity, in one round trip. `now` (the caller's
    /// clock) decides which bindings have expired; which sockets are live is the store's own
    /// clock's call.
    async fn targets(
        &self,
        account: &AccountSid,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<Targets, StoreError>;

    /// Announces or renews live sockets; each lease starts when the store records it.
    async fn put_presences(&self, presences: &[SocketPresence]) -> Result<(), StoreError>;

    async fn remove_presence(
        &self,
        account: &AccountSid,
        identity: &Identity,
        conn_id: &str,
    ) -> Result<(), StoreError>;

    /// Withdraws several sockets' presences: the Redis engine does it in one round trip (a
    /// replica whose sockets close together would otherwise make one call per socket).
    async fn remove_presences(&self, sockets: &[PresenceKey]) -> Result<(), StoreError> {
        for s in sockets {
            self.remove_presence(&s.account_sid, &s.identity, &s.conn_id)
                .await?;
        }
        Ok(())
    }

    /// Targets and, when there are any, the claim `claim` asks for, together. The engines
    /// answer it in one round trip; this default takes two.
    async fn lookup(
        &self,
        account: &AccountSid,
        identity: &Identity,
        claim: Option<ClaimRequest<'_>>,
        now: OffsetDateTime,
    ) -> Result<Lookup, StoreError> {
        let targets = self.targets(account, identity, now).await?;
        let claim = match claim {
            Some(c) if !targets.is_empty() => Some(
                self.claim_message(account, identity, c.message_id, c.owner, c.pending_for)
                    .await?,
            ),
            _ => None,
        };
        Ok(Lookup { targets, claim })
    }

    /// Claims `message_id` (a notification to `identity`) for `owner` for `pending_for`,
    /// unless it was delivered or another owner holds it. A claim `owner` holds already is
    /// `Acquired` again. A claim nobody settles lapses after `pending_for`.
    async fn claim_message(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        pending_for: Duration,
    ) -> Result<Claim, StoreError>;

    /// Ends `owner`'s claim as `settlement` says. A claim another owner holds, or a delivered
    /// marker, is left as it is.
    async fn settle_message(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        settlement: Settlement,
    ) -> Result<(), StoreError>;

    /// `settle_message` without waiting for it, for the end of a delivery: the outcome is
    /// queued and written in the background. Returns `false` when it was dropped instead (the
    /// queue is full, or the store is shutting down): the claim then lapses by itself. A
    /// write that fails is logged, with the same consequence.
    fn settle_message_detached(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        settlement: Settlement,
    ) -> bool;

    /// Waits until writes made in the background (`settle_message_detached`) have reached
    /// the store or failed; for shutdown.
    async fn flush(&self) {}

    /// Sends a message to a replica; returns how many subscribers received it (0 or 1).
    /// A positive count says nothing about delivery: replicas acknowledge separately.
    async fn publish(&self, node: &str, message: Bytes) -> Result<usize, StoreError>;

    /// Messages sent to `node`, for as long as the receiver is kept.
    async fn subscribe(&self, node: &str) -> Result<mpsc::Receiver<Bytes>, StoreError>;

    /// Appends an event to its account's log, unless an event with the same id was appended
    /// within `retention.max_age`; trims what is past the retention. Answered only once the
    /// event is stored (with `store.min_replica_acks`, once replicas have it).
    async fn append_event(
        &self,
        account: &AccountSid,
        event_id: &str,
        envelope: Bytes,
        retention: EventRetention,
    ) -> Result<Appended, StoreError>;

    /// Events of `account` after position `after` (from the oldest kept without it), oldest
    /// first, at most `limit`.
    async fn read_events(
        &self,
        account: &AccountSid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError>;

    /// Takes, or renews, the lease to forward `account`'s events to `target` for `ttl`: true
    /// when `node` holds it now. One replica at a time forwards to a target, so it receives
    /// the events in the log's order.
    async fn hold_forwarder(
        &self,
        account: &AccountSid,
        target: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Gives the lease up, if `node` holds it (shutdown: another replica takes over at once).
    async fn release_forwarder(
        &self,
        account: &AccountSid,
        target: &str,
        node: &str,
    ) -> Result<(), StoreError>;

    /// The position of the last event handed to `target` (delivered, or set aside as failed).
    async fn forward_cursor(
        &self,
        account: &AccountSid,
        target: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Moves the cursor to `position` if `holder` holds the target's lease; false (and
    /// nothing written) otherwise, so a forwarder that lost its lease cannot move the cursor
    /// of the one that took over.
    async fn set_forward_cursor(
        &self,
        account: &AccountSid,
        target: &str,
        holder: &str,
        position: &str,
    ) -> Result<bool, StoreError>;

    /// The event at `position` of `account`'s log, if the log still keeps it.
    async fn event_at(
        &self,
        account: &AccountSid,
        position: &str,
    ) -> Result<Option<LoggedEvent>, StoreError>;

    /// The positions of events `target` did not take, oldest first, at most `limit`.
    async fn failed_forwards(
        &self,
        account: &AccountSid,
        target: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// Moves every failed position of `target` to its replay queue (after what is queued
    /// already); returns how many moved.
    async fn replay_failed(&self, account: &AccountSid, target: &str) -> Result<u64, StoreError>;

    /// The first position in `target`'s replay queue.
    async fn next_replay(
        &self,
        account: &AccountSid,
        target: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Takes `position` off the front of the replay queue, if it is there.
    async fn finish_replay(
        &self,
        account: &AccountSid,
        target: &str,
        position: &str,
    ) -> Result<(), StoreError>;

    /// Adds or replaces a forwarding target of `account`.
    async fn put_event_target(
        &self,
        account: &AccountSid,
        target: &StoredTarget,
    ) -> Result<(), StoreError>;

    /// Removes one, with its forwarding state (cursor, set-aside and replay lists); false
    /// when there was none by that name.
    async fn remove_event_target(
        &self,
        account: &AccountSid,
        name: &str,
    ) -> Result<bool, StoreError>;

    /// The targets added through the admin API, by name.
    async fn event_targets(&self, account: &AccountSid) -> Result<Vec<StoredTarget>, StoreError>;

    /// Notes an event `target` did not take within the retry budget (the most recent
    /// `MAX_FAILED_FORWARDS` are kept), and returns how many are noted.
    async fn note_failed_forward(
        &self,
        account: &AccountSid,
        target: &str,
        position: &str,
    ) -> Result<u64, StoreError>;

    /// Records call-trace entries, a batch at a time: each is appended to its call's list
    /// (the most recent `MAX_TRACE_ENTRIES` kept, for `retention`), and the call is listed
    /// under its identity when it names one (the most recent `max_per_identity`).
    async fn record_calls(&self, writes: &[TraceWrite]) -> Result<(), StoreError>;

    /// Keeps copies of call notifications for their identity's reconnecting clients, a batch
    /// at a time: each appended to the identity's list (the most recent `MAX_RINGING` kept),
    /// the list expiring `window` after its last copy.
    async fn keep_ringing(&self, writes: &[RingingWrite]) -> Result<(), StoreError>;

    /// The copies kept for an identity, oldest first, as `keep_ringing` encoded them
    /// (`RingingWrite::entry`); some may be older than the window.
    async fn ringing(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<Vec<Bytes>, StoreError>;

    /// A call's trace entries, in the order they were recorded.
    async fn call_entries(
        &self,
        account: &AccountSid,
        call_sid: &CallSid,
    ) -> Result<Vec<Bytes>, StoreError>;

    /// The calls listed under an identity since `since`, newest first, at most `limit`,
    /// among the last `kept` entries of its list (`calls.max_per_identity`: an engine may
    /// hold a few more until it trims).
    async fn recent_calls(
        &self,
        account: &AccountSid,
        identity: &Identity,
        since: OffsetDateTime,
        limit: usize,
        kept: usize,
    ) -> Result<Vec<CallSid>, StoreError>;

    /// Keeps one of a room's ledger facts under its id (a repeat replaces it with the same),
    /// and lists the room by its earliest fact's time. Answered once stored (with
    /// `store.min_replica_acks`, once replicas have it).
    async fn keep_room_fact(&self, fact: RoomFactWrite) -> Result<(), StoreError>;

    /// Every fact kept for a room, in no particular order.
    async fn room_facts(
        &self,
        account: &AccountSid,
        room_sid: &RoomSid,
    ) -> Result<Vec<Bytes>, StoreError>;

    /// Rooms whose earliest fact falls in `from..=to`, newest first: `limit` of them after the
    /// first `offset`.
    async fn rooms_between(
        &self,
        account: &AccountSid,
        from: OffsetDateTime,
        to: OffsetDateTime,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<RoomSid>, StoreError>;
}

/// The most entries one call's trace keeps (a call gets a few notifications and summaries;
/// a runaway retry loop cannot grow it).
pub const MAX_TRACE_ENTRIES: usize = 64;

/// Unix milliseconds, as the stores index records by.
pub(crate) fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// From an identity's list of (recorded ms, call) entries, one per notification: each call at
/// its earliest entry, those from `since` on, newest first, at most `limit`. Both engines list
/// an identity's calls this way.
pub(crate) fn newest_calls(
    entries: impl Iterator<Item = (i64, CallSid)>,
    since: i64,
    limit: usize,
) -> Vec<CallSid> {
    let mut first: std::collections::HashMap<CallSid, i64> = std::collections::HashMap::new();
    for (ms, call) in entries {
        first
            .entry(call)
            .and_modify(|at| *at = (*at).min(ms))
            .or_insert(ms);
    }
    let mut calls: Vec<(i64, CallSid)> = first
        .into_iter()
        .filter(|(_, at)| *at >= since)
        .map(|(call, at)| (at, call))
        .collect();
    calls.sort_by(|a, b| b.cmp(a));
    calls
        .into_iter()
        .take(limit)
        .map(|(_, call)| call)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identitys_calls_are_listed_at_their_earliest_entry_newest_first() {
        let call = |s: &str| CallSid::parse(s).unwrap();
        let listed = [(10, "CA1"), (20, "CA2"), (30, "CA1"), (50, "CA3")];
        let newest =
            |since, limit| newest_calls(listed.iter().map(|(ms, c)| (*ms, call(c))), since, limit);
        assert_eq!(newest(0, 10), [call("CA3"), call("CA2"), call("CA1")]);
        assert_eq!(newest(15, 10), [call("CA3"), call("CA2")]);
        assert_eq!(newest(0, 1), [call("CA3")]);
    }
}

/// One call-trace entry to record.
#[derive(Debug, Clone)]
pub struct TraceWrite {
    pub account: AccountSid,
    pub call_sid: CallSid,
    /// The identity whose list of calls names this one.
    pub identity: Option<Identity>,
    pub at: OffsetDateTime,
    pub entry: Bytes,
    pub retention: Duration,
    pub max_per_identity: u64,
}

/// The most call notifications kept per identity for replay: far more calls than one
/// identity receives within a ringing window.
pub const MAX_RINGING: usize = 32;

/// A call notification kept for replay to its identity's reconnecting clients.
#[derive(Debug, Clone)]
pub struct RingingWrite {
    pub account: AccountSid,
    pub identity: Identity,
    /// `<received ms>\n<Twilio's bytes>` (`crate::domain::ringing`).
    pub entry: Bytes,
    pub window: Duration,
}

/// One room-ledger fact to keep.
#[derive(Debug, Clone)]
pub struct RoomFactWrite {
    pub account: AccountSid,
    pub room_sid: RoomSid,
    pub fact_id: String,
    pub fact: Bytes,
    /// Twilio's `Timestamp` of the event: the room is listed by its earliest.
    pub at: OffsetDateTime,
    pub retention: Duration,
}

/// A forwarding target added through the admin API, as the store keeps it (its secret
/// included: the store is where every replica finds it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredTarget {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub types: Vec<String>,
    pub secret: String,
}

/// Failed forwards noted per target; older ones are forgotten.
pub const MAX_FAILED_FORWARDS: u64 = 10_000;

/// Opens the configured engine.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    match &config.redis {
        Some(redis) => Ok(Arc::new(
            redis::RedisStore::connect(redis, &config.key_prefix, config.command_timeout).await?,
        )),
        None => Ok(Arc::new(memory::MemoryStore::new())),
    }
}

pub use redis::MigrationReport;

/// `callrelay migrate`: moves what versions before 0.2 wrote to the current layout;
/// `Ok(None)` for the memory store.
pub async fn migrate(
    config: &StoreConfig,
    progress: impl FnMut(&MigrationReport),
) -> Result<Option<MigrationReport>, StoreError> {
    match &config.redis {
        Some(r) => {
            let store =
                redis::RedisStore::connect(r, &config.key_prefix, config.command_timeout).await?;
            store.migrate(progress).await.map(Some)
        }
        None => Ok(None),
    }
}

/// Connects to the configured Redis as `serve` would and describes what answered (for
/// `check-config --connect`); `Ok(None)` for the memory store.
pub async fn probe(config: &StoreConfig) -> Result<Option<redis::ServerReport>, StoreError> {
    match &config.redis {
        Some(redis) => redis::probe(redis, config.command_timeout).await.map(Some),
        None => Ok(None),
    }
}
