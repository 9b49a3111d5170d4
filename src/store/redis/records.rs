//! Call traces, copies kept for replay, and room-ledger facts on Redis (the rows
//! `…:trace:{…}`, `…:calls`, `…:ringing`, `…:room:{…}` and `…:rooms}:index` of `keys.rs`).
//!
//! Trace entries and copies arrive in batches from the relay's writer, off every answer's
//! path, on a connection of its own: one pipeline per batch (which the link splits per slot on
//! a cluster), and a second only for what the first's answers ask for. What a call
//! notification costs Redis here is paid on every call, so it is kept to one command per key
//! in the common case (each is about a `GET`'s worth of Redis's time):
//!
//! - a call's trace is a string of JSON lines, created with its expiry by one `SET … PX … NX`;
//!   the rare later entry (an acknowledgement, a summary, a retry) is appended by a script in
//!   a second round trip, which renews the expiry and keeps the last 64 lines;
//! - an identity's calls and its copies for replay are lists appended to by `RPUSH` alone,
//!   trimmed and given their expiry only when due (`appends.rs`).
//!
//! Every key is written with an expiry, or given one on a later append (`appends.rs` says
//! when), and every list is trimmed, so Redis holds about what the retention and the caps say.
//!
//! A room fact is kept before Twilio is answered (the ledger must not lose an acknowledged
//! callback): a repeat of an event writes the same field with the same value.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::Value;
use time::OffsetDateTime;

use super::appends::{self, Append};
use super::{RedisStore, bounded, millis};
use crate::domain::{AccountSid, CallSid, Identity, RoomSid};
use crate::store::{
    MAX_RINGING, MAX_TRACE_ENTRIES, RingingWrite, RoomFactWrite, StoreError, TraceWrite,
    newest_calls, unix_ms,
};

impl RedisStore {
    pub(super) async fn write_call_records(&self, writes: &[TraceWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        // One value per call: its entries in this batch (the last 64), a line each, in the
        // order recorded.
        let mut calls: Vec<(String, Vec<&[u8]>, Duration)> = Vec::new();
        // By key: the same call SID under two accounts is two traces.
        let mut of_call: HashMap<String, usize> = HashMap::new();
        for w in writes {
            debug_assert!(!w.entry.contains(&b'\n'), "a trace entry is one line");
            let key = self.keys.call(&w.account, &w.call_sid);
            let i = *of_call.entry(key.clone()).or_insert_with(|| {
                calls.push((key, Vec::new(), w.retention));
                calls.len() - 1
            });
            let (_, entries, retention) = &mut calls[i];
            entries.push(&w.entry);
            *retention = (*retention).max(w.retention);
        }
        let calls: Vec<(String, Vec<u8>, Duration)> = calls
            .into_iter()
            .map(|(key, entries, retention)| {
                let from = entries.len().saturating_sub(MAX_TRACE_ENTRIES);
                (key, entries[from..].join(&b'\n'), retention)
            })
            .collect();
        let mut pipe = redis::pipe();
        // A call's first entries create its trace, expiry included, in one command; a call
        // already traced (a later entry: an acknowledgement, a summary, a retry) is appended
        // to in the second round trip.
        for (key, lines, retention) in &calls {
            pipe.cmd("SET")
                .arg(key)
                .arg(lines.as_slice())
                .arg("PX")
                .arg(millis(*retention))
                .arg("NX");
        }
        // The identity's calls as a list of `<ms>:<call SID>`, one per notification: readers
        // take each call's earliest entry (a sorted set cost twice as much per call, measured).
        let lines: Vec<Vec<u8>> = writes
            .iter()
            .map(|w| format!("{}:{}", unix_ms(w.at), w.call_sid).into_bytes())
            .collect();
        let planned = appends::add(
            &mut pipe,
            writes
                .iter()
                .zip(&lines)
                .filter_map(|(w, line)| {
                    Some(Append {
                        key: self.keys.identity_calls(&w.account, w.identity.as_ref()?),
                        value: line,
                        cap: usize::try_from(w.max_per_identity).unwrap_or(usize::MAX),
                        lifetime: w.retention,
                    })
                })
                .collect(),
            &mut self.refreshes(),
            Instant::now(),
        );
        let replies: Vec<Value> = self.send_appends(&pipe, &planned).await?;
        let (created, lengths) = replies.split_at(calls.len().min(replies.len()));
        let upkeep = appends::follow_up(&planned, &lengths_of(lengths));
        let mut later = redis::pipe();
        for ((key, lines, retention), created) in calls.iter().zip(created) {
            if matches!(created, Value::Nil) {
                later
                    .cmd("EVAL")
                    .arg(APPEND_TRACE)
                    .arg(1)
                    .arg(key)
                    .arg(lines.as_slice())
                    .arg(millis(*retention))
                    .arg(MAX_TRACE_ENTRIES)
                    .ignore();
            }
        }
        // Entries are lost only if the appends fail; a failed trim or expiry is done again later.
        let appended = async {
            if later.is_empty() {
                return Ok(());
            }
            self.on_records(&later).await
        };
        let ((), appended) = tokio::join!(self.upkeep(upkeep, &planned), appended);
        appended
    }

    pub(super) async fn write_ringing(&self, writes: &[RingingWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let planned = appends::add(
            &mut pipe,
            writes
                .iter()
                .map(|w| Append {
                    key: self.keys.ringing(&w.account, &w.identity),
                    value: &w.entry,
                    cap: MAX_RINGING,
                    lifetime: w.window,
                })
                .collect(),
            &mut self.refreshes(),
            Instant::now(),
        );
        let lengths: Vec<Value> = self.send_appends(&pipe, &planned).await?;
        self.upkeep(
            appends::follow_up(&planned, &lengths_of(&lengths)),
            &planned,
        )
        .await;
        Ok(())
    }

    /// Sends `pipe` on the writer's own connection, bounded by the command timeout.
    async fn on_records<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut c = self.records.clone();
        bounded(&self.records, self.timeout, pipe.query_async(&mut c)).await
    }

    fn refreshes(&self) -> std::sync::MutexGuard<'_, appends::Refreshes> {
        self.refreshes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a pipeline carrying `planned`; when its outcome is unknown, the expiries it
    /// carried are sent again with the next appends.
    async fn send_appends(
        &self,
        pipe: &redis::Pipeline,
        planned: &[appends::Planned],
    ) -> Result<Vec<Value>, StoreError> {
        let sent = self.on_records(pipe).await;
        if sent.is_err() {
            self.refreshes().forget(appends::expiries_sent(planned));
        }
        sent
    }

    /// The trims and expiries the appends `planned` turned out to need. Every entry is
    /// already stored: when these fail, nothing is lost, the lists are trimmed on a later
    /// append, and their expiries are set again on their next one.
    async fn upkeep(&self, pipe: Option<redis::Pipeline>, planned: &[appends::Planned]) {
        let Some(pipe) = pipe else {
            return;
        };
        if let Err(e) = self.on_records::<()>(&pipe).await {
            self.refreshes().forget(appends::keys(planned));
            tracing::warn!(error = %e, "could not trim or set the expiry of call-record lists; a later append will");
        }
    }

    pub(super) async fn read_ringing(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<Vec<Bytes>, StoreError> {
        let key = self.keys.ringing(account, identity);
        self.list_tail(&key, MAX_RINGING).await
    }

    /// The last `n` elements of the list at `key`, oldest first.
    async fn list_tail(&self, key: &str, n: usize) -> Result<Vec<Bytes>, StoreError> {
        let mut c = self.conn.clone();
        let from = -isize::try_from(n).unwrap_or(isize::MAX);
        let entries: Vec<Vec<u8>> = self
            .run(
                redis::cmd("LRANGE")
                    .arg(key)
                    .arg(from)
                    .arg(-1)
                    .query_async(&mut c),
            )
            .await?;
        Ok(entries.into_iter().map(Bytes::from).collect())
    }

    pub(super) async fn read_call_entries(
        &self,
        account: &AccountSid,
        call_sid: &CallSid,
    ) -> Result<Vec<Bytes>, StoreError> {
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        // Versions before 0.2.1 kept a call's entries as a list (same hash tag, same node);
        // read until the retention has passed.
        pipe.lrange(self.keys.legacy_call(account, call_sid), 0, -1)
            .get(self.keys.call(account, call_sid));
        let (earlier, lines): (Vec<Vec<u8>>, Option<Vec<u8>>) =
            self.run(pipe.query_async(&mut c)).await?;
        let lines = Bytes::from(lines.unwrap_or_default());
        let mut entries: Vec<Bytes> = earlier.into_iter().map(Bytes::from).collect();
        entries.extend(
            lines
                .split(|b| *b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| lines.slice_ref(line)),
        );
        // A write the cluster client sent again (a connection lost, a slot moved) may have
        // appended the same lines twice; an entry carries its own time to the nanosecond, so
        // two equal lines are one entry.
        let mut seen = std::collections::HashSet::new();
        entries.retain(|e| seen.insert(e.clone()));
        let extra = entries.len().saturating_sub(MAX_TRACE_ENTRIES);
        entries.drain(..extra);
        Ok(entries)
    }

    pub(super) async fn read_recent_calls(
        &self,
        account: &AccountSid,
        identity: &Identity,
        since: OffsetDateTime,
        limit: usize,
        kept: usize,
    ) -> Result<Vec<CallSid>, StoreError> {
        let key = self.keys.identity_calls(account, identity);
        let listed = self.list_tail(&key, kept).await?;
        // `<ms>:<call SID>` entries; an unreadable one is passed over.
        let entries = listed.iter().filter_map(|entry| {
            let (ms, call) = std::str::from_utf8(entry).ok()?.split_once(':')?;
            Some((ms.parse::<i64>().ok()?, CallSid::parse(call).ok()?))
        });
        Ok(newest_calls(entries, unix_ms(since), limit))
    }

    pub(super) async fn write_room_fact(&self, w: RoomFactWrite) -> Result<(), StoreError> {
        let ttl = millis(w.retention) as i64;
        let room = self.keys.room(&w.account, &w.room_sid);
        let index = self.keys.room_index(&w.account);
        let at = unix_ms(w.at);
        let mut pipe = redis::pipe();
        pipe.hset(&room, &w.fact_id, w.fact.as_ref()).ignore();
        pipe.pexpire(&room, ttl).ignore();
        // LT: the room stays listed at its earliest fact, whatever order facts arrive in.
        pipe.cmd("ZADD")
            .arg(&index)
            .arg("LT")
            .arg(at)
            .arg(w.room_sid.as_str())
            .ignore();
        // Rooms past the retention, judged by Twilio's clock (the facts' `Timestamp`), which
        // every replica agrees on, rather than by this replica's.
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(format!("({}", at.saturating_sub(ttl)))
            .ignore();
        pipe.pexpire(&index, ttl).ignore();
        let mut c = self.conn.clone();
        self.run(pipe.query_async::<()>(&mut c)).await?;
        self.replicated(&[&room, &index]).await
    }

    pub(super) async fn read_room_facts(
        &self,
        account: &AccountSid,
        room_sid: &RoomSid,
    ) -> Result<Vec<Bytes>, StoreError> {
        let mut c = self.conn.clone();
        let key = self.keys.room(account, room_sid);
        let facts: Vec<Vec<u8>> = self
            .run(redis::cmd("HVALS").arg(&key).query_async(&mut c))
            .await?;
        Ok(facts.into_iter().map(Bytes::from).collect())
    }

    pub(super) async fn read_rooms_between(
        &self,
        account: &AccountSid,
        from: OffsetDateTime,
        to: OffsetDateTime,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<RoomSid>, StoreError> {
        let mut c = self.conn.clone();
        let key = self.keys.room_index(account);
        let rooms: Vec<String> = self
            .run(
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(unix_ms(to))
                    .arg(unix_ms(from))
                    .arg("BYSCORE")
                    .arg("REV")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(limit)
                    .query_async(&mut c),
            )
            .await?;
        Ok(rooms
            .iter()
            .filter_map(|s| RoomSid::parse(s).ok())
            .collect())
    }
}

/// The lengths `RPUSH` answered.
fn lengths_of(replies: &[Value]) -> Vec<i64> {
    replies
        .iter()
        .map(|v| match v {
            Value::Int(n) => *n,
            _ => 0,
        })
        .collect()
}

/// Appends lines to a call's trace that exists already (the `SET … NX` that would have
/// created it was refused), renews its expiry as a new list entry did, and keeps its last
/// `ARGV[3]` lines. If the trace lapsed in between, `APPEND` creates it: readers pass over
/// the empty first line. Sent as `EVAL`, not `EVALSHA`: callrelay never sends it again after
/// a node that forgot its scripts refused part of a split pipeline, which would append twice.
/// (The cluster client itself may resend a pipeline whose connection dropped; readers drop
/// repeated lines.)
const APPEND_TRACE: &str = r"
local len = redis.call('APPEND', KEYS[1], '\n' .. ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local keep = tonumber(ARGV[3])
local s = redis.call('GET', KEYS[1])
local _, breaks = string.gsub(s, '\n', '')
if breaks >= keep then
  local lines = {}
  for line in string.gmatch(s, '[^\n]+') do lines[#lines + 1] = line end
  if #lines > keep then
    redis.call('SET', KEYS[1], table.concat(lines, '\n', #lines - keep + 1), 'KEEPTTL')
  end
end
return len
";
