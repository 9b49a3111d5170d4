//! Call traces and room-ledger facts on Redis (the rows `…:call:{…}`, `…:calls`,
//! `…:room:{…}` and `…:rooms}:index` of `keys.rs`).
//!
//! Trace entries arrive in batches from the relay's writer, off every answer's path: one
//! pipeline per batch, which the link splits per slot on a cluster. Every key written is given
//! the retention as its expiry, and every list and index is trimmed as it grows, so Redis holds
//! at most what the retention and the caps say.
//!
//! A room fact is kept before Twilio is answered (the ledger must not lose an acknowledged
//! callback): a repeat of an event writes the same field with the same value.

use bytes::Bytes;
use time::OffsetDateTime;

use super::{RedisStore, millis};
use crate::domain::{AccountSid, CallSid, Identity, RoomSid};
use crate::store::{MAX_TRACE_ENTRIES, RoomFactWrite, StoreError, TraceWrite};

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// From an identity's list of `<ms>:<call SID>` entries: each call at its earliest entry,
/// those from `since` on, newest first, at most `limit`.
fn newest_calls(listed: &[String], since: i64, limit: usize) -> Vec<CallSid> {
    let mut first: std::collections::HashMap<CallSid, i64> = std::collections::HashMap::new();
    for entry in listed {
        let Some((ms, call)) = entry.split_once(':') else {
            continue;
        };
        let (Ok(ms), Ok(call)) = (ms.parse::<i64>(), CallSid::parse(call)) else {
            continue;
        };
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

impl RedisStore {
    pub(super) async fn write_call_records(&self, writes: &[TraceWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let keep = -(MAX_TRACE_ENTRIES as i64);
        let mut pipe = redis::pipe();
        for w in writes {
            let ttl = millis(w.retention);
            let call = self.keys.call(&w.account, &w.call_sid);
            pipe.rpush(&call, w.entry.as_ref()).ignore();
            pipe.ltrim(&call, keep as isize, -1).ignore();
            pipe.pexpire(&call, ttl as i64).ignore();
            if let Some(identity) = &w.identity {
                // The identity's calls as a list of `<ms>:<call SID>`, one per notification:
                // three O(1) commands (a sorted set cost twice as much per call, measured).
                // Readers take each call's earliest entry; the trim bounds the list.
                let index = self.keys.identity_calls(&w.account, identity);
                let cap = isize::try_from(w.max_per_identity).unwrap_or(isize::MAX);
                pipe.rpush(&index, format!("{}:{}", unix_ms(w.at), w.call_sid))
                    .ignore();
                pipe.ltrim(&index, -cap, -1).ignore();
                pipe.pexpire(&index, ttl as i64).ignore();
            }
        }
        let mut c = self.conn.clone();
        self.run(pipe.query_async::<()>(&mut c)).await
    }

    pub(super) async fn read_call_entries(
        &self,
        account: &AccountSid,
        call_sid: &CallSid,
    ) -> Result<Vec<Bytes>, StoreError> {
        let mut c = self.conn.clone();
        let key = self.keys.call(account, call_sid);
        let entries: Vec<Vec<u8>> = self
            .run(
                redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c),
            )
            .await?;
        Ok(entries.into_iter().map(Bytes::from).collect())
    }

    pub(super) async fn read_recent_calls(
        &self,
        account: &AccountSid,
        identity: &Identity,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<CallSid>, StoreError> {
        let mut c = self.conn.clone();
        let key = self.keys.identity_calls(account, identity);
        let listed: Vec<String> = self
            .run(
                redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c),
            )
            .await?;
        Ok(newest_calls(&listed, unix_ms(since), limit))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identitys_calls_are_listed_at_their_earliest_entry_newest_first() {
        let listed: Vec<String> = ["10:CA1", "20:CA2", "30:CA1", "bad", "40:CA}{", "50:CA3"]
            .map(String::from)
            .to_vec();
        let names = |calls: Vec<CallSid>| calls.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(names(newest_calls(&listed, 0, 10)), ["CA3", "CA2", "CA1"]);
        assert_eq!(names(newest_calls(&listed, 15, 10)), ["CA3", "CA2"]);
        assert_eq!(names(newest_calls(&listed, 0, 1)), ["CA3"]);
    }
}
