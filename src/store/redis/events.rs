//! The event log on Redis: one stream per account (`<p>:{AC…:events}:log`, field `e` holding
//! the envelope) and, under the same hash tag, a marker per event id seen
//! (`<p>:{AC…:events}:id:<event id>` → the event's stream position) that lives as long as the
//! retention. One script appends and trims atomically, so a duplicate is either kept once or
//! refused, never half-written; on Redis Cluster an account's events live on one shard.
//!
//! Forwarding to a target keeps, under the same tag, the lease of the replica forwarding
//! (`…:fwd:<target>:lease` → node id, expiring), the position of the last event handed over
//! (`…:fwd:<target>:cursor`) and the positions of events set aside as failed
//! (`…:fwd:<target>:failed`, a list of the most recent).

use std::sync::LazyLock;

use bytes::Bytes;
use redis::Script;

use super::{RedisStore, millis};
use crate::domain::AccountSid;
use crate::store::{Appended, EventRetention, LoggedEvent, StoreError};

/// KEYS: the stream, the id's marker. ARGV: the envelope, the retention in ms, the most events
/// kept. Returns `{1, position}` when appended, `{0, position}` for a duplicate.
///
/// The stream's own ids are `<ms>-<seq>` from Redis's clock, so trimming by age is `MINID`
/// from the new id's milliseconds. Both trims are exact, so the retention is what it says.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seen = redis.call('GET', KEYS[2])
if seen then return {0, seen} end
local position = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '*', 'e', ARGV[1])
local ms = tonumber(string.match(position, '^(%d+)'))
redis.call('XTRIM', KEYS[1], 'MINID', ms - tonumber(ARGV[2]))
redis.call('SET', KEYS[2], position, 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, position}
",
    )
});

/// KEYS: the lease. ARGV: the node, the lease in ms. 1 when the node holds it now.
static HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
",
    )
});

/// KEYS: the lease, the cursor. ARGV: the holder, a position. Moves the cursor only for the
/// lease's holder; 1 when it did.
static SET_IF_HOLDER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
",
    )
});

/// KEYS: the lease. ARGV: the node. Deletes the lease if the node holds it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// KEYS: the failed list, the replay list. Moves every failed position, oldest first, to the
/// end of the replay list; returns how many.
static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('LLEN', KEYS[1])
for _ = 1, n do redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') end
return n
",
    )
});

/// KEYS: the replay list. ARGV: a position. Pops it if it is first.
static POP_IF_FIRST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then return redis.call('LPOP', KEYS[1]) end
return false
",
    )
});

/// An `XRANGE` entry: its id and its fields with their values.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

impl RedisStore {
    pub(super) async fn append_event_to_log(
        &self,
        account: &AccountSid,
        event_id: &str,
        envelope: Bytes,
        retention: EventRetention,
    ) -> Result<Appended, StoreError> {
        let stream = self.keys.event_log(account);
        let marker = self.keys.event_id(account, event_id);
        let mut c = self.conn.clone();
        let mut invocation = APPEND.prepare_invoke();
        invocation
            .key(&stream)
            .key(&marker)
            .arg(envelope.as_ref())
            .arg(millis(retention.max_age).max(1))
            .arg(retention.max_events);
        let (appended, position): (i64, String) = self.run(invocation.invoke_async(&mut c)).await?;
        // Twilio is answered only once the event is where a failover cannot lose it; a
        // repeat too, since the first attempt may have failed at exactly this point.
        self.replicated(&[&stream]).await?;
        if appended == 1 {
            Ok(Appended::New(position))
        } else {
            Ok(Appended::Duplicate(position))
        }
    }

    pub(super) async fn read_event_log(
        &self,
        account: &AccountSid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let stream = self.keys.event_log(account);
        // `(` makes the start exclusive (Redis 6.2+).
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let mut c = self.conn.clone();
        let entries: Vec<StreamEntry> = self
            .run(
                redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut c),
            )
            .await?;
        // An entry without an envelope (not written by callrelay) is returned empty, so
        // readers skip it and move past it rather than stop at it.
        Ok(entries
            .into_iter()
            .map(|(position, fields)| {
                let envelope = fields
                    .into_iter()
                    .find(|(name, _)| name == "e")
                    .map(|(_, value)| Bytes::from(value))
                    .unwrap_or_default();
                LoggedEvent { position, envelope }
            })
            .collect())
    }

    pub(super) async fn hold_forwarder_lease(
        &self,
        account: &AccountSid,
        target: &str,
        node: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let lease = self.keys.forwarder(account, target, "lease");
        let mut c = self.conn.clone();
        let mut invocation = HOLD.prepare_invoke();
        invocation.key(&lease).arg(node).arg(millis(ttl).max(1));
        let held: i64 = self.run(invocation.invoke_async(&mut c)).await?;
        Ok(held == 1)
    }

    pub(super) async fn release_forwarder_lease(
        &self,
        account: &AccountSid,
        target: &str,
        node: &str,
    ) -> Result<(), StoreError> {
        let lease = self.keys.forwarder(account, target, "lease");
        let mut c = self.conn.clone();
        let mut invocation = RELEASE.prepare_invoke();
        invocation.key(&lease).arg(node);
        let _: i64 = self.run(invocation.invoke_async(&mut c)).await?;
        Ok(())
    }

    pub(super) async fn get_forward_cursor(
        &self,
        account: &AccountSid,
        target: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = self.keys.forwarder(account, target, "cursor");
        let mut c = self.conn.clone();
        self.run(redis::cmd("GET").arg(&key).query_async(&mut c))
            .await
    }

    pub(super) async fn put_forward_cursor(
        &self,
        account: &AccountSid,
        target: &str,
        holder: &str,
        position: &str,
    ) -> Result<bool, StoreError> {
        let lease = self.keys.forwarder(account, target, "lease");
        let cursor = self.keys.forwarder(account, target, "cursor");
        let mut c = self.conn.clone();
        let mut invocation = SET_IF_HOLDER.prepare_invoke();
        invocation
            .key(&lease)
            .key(&cursor)
            .arg(holder)
            .arg(position);
        let set: i64 = self.run(invocation.invoke_async(&mut c)).await?;
        Ok(set == 1)
    }

    pub(super) async fn push_failed_forward(
        &self,
        account: &AccountSid,
        target: &str,
        position: &str,
    ) -> Result<u64, StoreError> {
        let key = self.keys.forwarder(account, target, "failed");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("RPUSH")
            .arg(&key)
            .arg(position)
            .cmd("LTRIM")
            .arg(&key)
            .arg(-(crate::store::MAX_FAILED_FORWARDS as i64))
            .arg(-1)
            .ignore();
        let mut c = self.conn.clone();
        let (count,): (u64,) = self.run(pipe.query_async(&mut c)).await?;
        Ok(count.min(crate::store::MAX_FAILED_FORWARDS))
    }

    pub(super) async fn put_target(
        &self,
        account: &AccountSid,
        target: &crate::store::StoredTarget,
    ) -> Result<(), StoreError> {
        let key = self.keys.event_targets(account);
        let json = serde_json::to_string(target).expect("a target serialises");
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(
                redis::cmd("HSET")
                    .arg(&key)
                    .arg(&target.name)
                    .arg(json)
                    .query_async(&mut c),
            )
            .await?;
        self.replicated(&[&key]).await
    }

    pub(super) async fn remove_target(
        &self,
        account: &AccountSid,
        name: &str,
    ) -> Result<bool, StoreError> {
        let key = self.keys.event_targets(account);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HDEL").arg(&key).arg(name);
        // Its forwarding state goes too: a target added again under this name starts afresh.
        for what in ["cursor", "failed", "replay", "lease"] {
            pipe.cmd("DEL")
                .arg(self.keys.forwarder(account, name, what))
                .ignore();
        }
        let mut c = self.conn.clone();
        let (removed,): (i64,) = self.run(pipe.query_async(&mut c)).await?;
        self.replicated(&[&key]).await?;
        Ok(removed == 1)
    }

    pub(super) async fn targets_of(
        &self,
        account: &AccountSid,
    ) -> Result<Vec<crate::store::StoredTarget>, StoreError> {
        let key = self.keys.event_targets(account);
        let mut c = self.conn.clone();
        let all: Vec<(String, String)> = self
            .run(redis::cmd("HGETALL").arg(&key).query_async(&mut c))
            .await?;
        all.into_iter()
            .map(|(name, json)| {
                serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("event target {name}: {e}")))
            })
            .collect()
    }

    pub(super) async fn event_at_position(
        &self,
        account: &AccountSid,
        position: &str,
    ) -> Result<Option<LoggedEvent>, StoreError> {
        let stream = self.keys.event_log(account);
        let mut c = self.conn.clone();
        let entries: Vec<StreamEntry> = self
            .run(
                redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(position)
                    .arg(position)
                    .query_async(&mut c),
            )
            .await?;
        Ok(entries.into_iter().next().and_then(|(position, fields)| {
            fields
                .into_iter()
                .find(|(name, _)| name == "e")
                .map(|(_, value)| LoggedEvent {
                    position,
                    envelope: Bytes::from(value),
                })
        }))
    }

    pub(super) async fn failed_positions(
        &self,
        account: &AccountSid,
        target: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let key = self.keys.forwarder(account, target, "failed");
        let mut c = self.conn.clone();
        self.run(
            redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(limit.max(1) as i64 - 1)
                .query_async(&mut c),
        )
        .await
    }

    pub(super) async fn move_failed_to_replay(
        &self,
        account: &AccountSid,
        target: &str,
    ) -> Result<u64, StoreError> {
        let failed = self.keys.forwarder(account, target, "failed");
        let replay = self.keys.forwarder(account, target, "replay");
        let mut c = self.conn.clone();
        let mut invocation = REPLAY.prepare_invoke();
        invocation.key(&failed).key(&replay);
        self.run(invocation.invoke_async(&mut c)).await
    }

    pub(super) async fn first_replay(
        &self,
        account: &AccountSid,
        target: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = self.keys.forwarder(account, target, "replay");
        let mut c = self.conn.clone();
        self.run(redis::cmd("LINDEX").arg(&key).arg(0).query_async(&mut c))
            .await
    }

    pub(super) async fn pop_replay(
        &self,
        account: &AccountSid,
        target: &str,
        position: &str,
    ) -> Result<(), StoreError> {
        let key = self.keys.forwarder(account, target, "replay");
        let mut c = self.conn.clone();
        let mut invocation = POP_IF_FIRST.prepare_invoke();
        invocation.key(&key).arg(position);
        let _: Option<String> = self.run(invocation.invoke_async(&mut c)).await?;
        Ok(())
    }
}
