//! The memory engine's call traces and room facts: what the Redis engine keeps in
//! `…:trace:{…}` strings, `…:calls` lists, `…:room:{…}` hashes and `…:rooms` sorted sets, with
//! the same limits. Retention is judged against the wall clock when read; what lapsed is pruned
//! at most once a second (the engine's one lock is the webhooks' too), emptied entries with it.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use time::OffsetDateTime;

use super::{
    MAX_RINGING, MAX_TRACE_ENTRIES, RingingWrite, RoomFactWrite, TraceWrite, newest_calls, unix_ms,
};
use crate::domain::{AccountSid, CallSid, Identity, RoomSid};

/// An identity's calls: one (recorded ms, call) per notification, oldest first, as Redis's
/// list; and when the list lapses.
type CallList = (VecDeque<(i64, CallSid)>, OffsetDateTime);

#[derive(Default)]
pub struct Records {
    /// (account, call) → its entries with when each lapses.
    calls: HashMap<(AccountSid, CallSid), (VecDeque<Bytes>, OffsetDateTime)>,
    by_identity: HashMap<(AccountSid, Identity), CallList>,
    /// (account, identity) → copies of its recent notifications, with when the list lapses.
    ringing: HashMap<(AccountSid, Identity), (VecDeque<Bytes>, OffsetDateTime)>,
    /// (account, room) → fact id → fact, with when the room lapses.
    rooms: HashMap<(AccountSid, RoomSid), (HashMap<String, Bytes>, OffsetDateTime)>,
    /// account → room → (earliest fact, lapses).
    room_index: HashMap<AccountSid, HashMap<RoomSid, (OffsetDateTime, OffsetDateTime)>>,
    pruned: Option<OffsetDateTime>,
}

impl Records {
    pub fn record_calls(&mut self, writes: &[TraceWrite], now: OffsetDateTime) {
        for w in writes {
            let lapses = now + w.retention;
            let (entries, until) = self
                .calls
                .entry((w.account.clone(), w.call_sid.clone()))
                .or_insert_with(|| (VecDeque::new(), lapses));
            entries.push_back(w.entry.clone());
            while entries.len() > MAX_TRACE_ENTRIES {
                entries.pop_front();
            }
            *until = lapses;
            if let Some(identity) = &w.identity {
                let (listed, until) = self
                    .by_identity
                    .entry((w.account.clone(), identity.clone()))
                    .or_insert_with(|| (VecDeque::new(), lapses));
                listed.push_back((unix_ms(w.at), w.call_sid.clone()));
                let keep = usize::try_from(w.max_per_identity).unwrap_or(usize::MAX);
                while listed.len() > keep {
                    listed.pop_front();
                }
                *until = lapses;
            }
        }
        self.prune(now);
    }

    pub fn keep_ringing(&mut self, writes: &[RingingWrite], now: OffsetDateTime) {
        for w in writes {
            let lapses = now + w.window;
            let (kept, until) = self
                .ringing
                .entry((w.account.clone(), w.identity.clone()))
                .or_insert_with(|| (VecDeque::new(), lapses));
            kept.push_back(w.entry.clone());
            while kept.len() > MAX_RINGING {
                kept.pop_front();
            }
            *until = lapses;
        }
        self.prune(now);
    }

    pub fn ringing(
        &self,
        account: &AccountSid,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Vec<Bytes> {
        match self.ringing.get(&(account.clone(), identity.clone())) {
            Some((kept, until)) if *until > now => kept.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Forgets what lapsed, at most once a second.
    fn prune(&mut self, now: OffsetDateTime) {
        if self
            .pruned
            .is_some_and(|last| now - last < time::Duration::SECOND)
        {
            return;
        }
        self.pruned = Some(now);
        self.calls.retain(|_, (_, until)| *until > now);
        self.by_identity.retain(|_, (_, until)| *until > now);
        self.ringing.retain(|_, (_, until)| *until > now);
        self.rooms.retain(|_, (_, until)| *until > now);
        self.room_index.retain(|_, rooms| {
            rooms.retain(|_, (_, until)| *until > now);
            !rooms.is_empty()
        });
    }

    pub fn call_entries(
        &self,
        account: &AccountSid,
        call: &CallSid,
        now: OffsetDateTime,
    ) -> Vec<Bytes> {
        self.calls
            .get(&(account.clone(), call.clone()))
            .filter(|(_, until)| *until > now)
            .map(|(entries, _)| entries.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn recent_calls(
        &self,
        account: &AccountSid,
        identity: &Identity,
        since: OffsetDateTime,
        limit: usize,
        now: OffsetDateTime,
    ) -> Vec<CallSid> {
        match self.by_identity.get(&(account.clone(), identity.clone())) {
            Some((listed, until)) if *until > now => newest_calls(
                listed.iter().map(|(ms, call)| (*ms, call.clone())),
                unix_ms(since),
                limit,
            ),
            _ => Vec::new(),
        }
    }

    pub fn keep_room_fact(&mut self, w: RoomFactWrite, now: OffsetDateTime) {
        let lapses = now + w.retention;
        let (facts, until) = self
            .rooms
            .entry((w.account.clone(), w.room_sid.clone()))
            .or_insert_with(|| (HashMap::new(), lapses));
        facts.insert(w.fact_id, w.fact);
        *until = lapses;
        let index = self.room_index.entry(w.account).or_default();
        index
            .entry(w.room_sid)
            .and_modify(|(at, until)| {
                *at = (*at).min(w.at);
                *until = lapses;
            })
            .or_insert((w.at, lapses));
        self.prune(now);
    }

    pub fn room_facts(
        &self,
        account: &AccountSid,
        room: &RoomSid,
        now: OffsetDateTime,
    ) -> Vec<Bytes> {
        self.rooms
            .get(&(account.clone(), room.clone()))
            .filter(|(_, until)| *until > now)
            .map(|(facts, _)| facts.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn rooms_between(
        &self,
        account: &AccountSid,
        from: OffsetDateTime,
        to: OffsetDateTime,
        offset: usize,
        limit: usize,
        now: OffsetDateTime,
    ) -> Vec<RoomSid> {
        let Some(index) = self.room_index.get(account) else {
            return Vec::new();
        };
        let mut rooms: Vec<(OffsetDateTime, &RoomSid)> = index
            .iter()
            .filter(|(_, (at, until))| *at >= from && *at <= to && *until > now)
            .map(|(room, (at, _))| (*at, room))
            .collect();
        rooms.sort_by(|a, b| b.cmp(a));
        rooms
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect()
    }
}
