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
use crate::store::{
    MAX_RINGING, MAX_TRACE_ENTRIES, RingingWrite, RoomFactWrite, StoreError, TraceWrite,
    newest_calls, unix_ms,
};

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

    pub(super) async fn write_ringing(&self, writes: &[RingingWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for w in writes {
            let key = self.keys.ringing(&w.account, &w.identity);
            pipe.rpush(&key, w.entry.as_ref()).ignore();
            pipe.ltrim(&key, -(MAX_RINGING as isize), -1).ignore();
            pipe.pexpire(&key, millis(w.window) as i64).ignore();
        }
        let mut c = self.conn.clone();
        self.run(pipe.query_async::<()>(&mut c)).await
    }

    pub(super) async fn read_ringing(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.whole_list(&self.keys.ringing(account, identity)).await
    }

    /// Every element of the list at `key`, oldest first.
    async fn whole_list(&self, key: &str) -> Result<Vec<Bytes>, StoreError> {
        let mut c = self.conn.clone();
        let entries: Vec<Vec<u8>> = self
            .run(
                redis::cmd("LRANGE")
                    .arg(key)
                    .arg(0)
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
        self.whole_list(&self.keys.call(account, call_sid)).await
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
        // `<ms>:<call SID>` entries; an unreadable one is passed over.
        let entries = listed.iter().filter_map(|entry| {
            let (ms, call) = entry.split_once(':')?;
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
