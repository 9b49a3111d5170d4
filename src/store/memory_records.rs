//! The memory engine's call traces and room facts: what the Redis engine keeps in
//! `…:call:{…}` lists, `…:calls` and `…:rooms` sorted sets and `…:room:{…}` hashes, with the
//! same limits. Retention is judged against the wall clock when read; what lapsed is pruned
//! at most once a second (the engine's one lock is the webhooks' too), emptied entries with it.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use time::OffsetDateTime;

use super::{MAX_TRACE_ENTRIES, RoomFactWrite, TraceWrite};
use crate::domain::{AccountSid, CallSid, Identity, RoomSid};

#[derive(Default)]
pub struct Records {
    /// (account, call) → its entries with when each lapses.
    calls: HashMap<(AccountSid, CallSid), (VecDeque<Bytes>, OffsetDateTime)>,
    /// (account, identity) → call → (first recorded, lapses).
    by_identity:
        HashMap<(AccountSid, Identity), HashMap<CallSid, (OffsetDateTime, OffsetDateTime)>>,
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
                let listed = self
                    .by_identity
                    .entry((w.account.clone(), identity.clone()))
                    .or_default();
                listed
                    .entry(w.call_sid.clone())
                    .and_modify(|(_, until)| *until = lapses)
                    .or_insert((w.at, lapses));
                let keep = usize::try_from(w.max_per_identity).unwrap_or(usize::MAX);
                // One in, one out once full: a scan of the list, no sort.
                while listed.len() > keep {
                    let oldest = listed
                        .iter()
                        .min_by_key(|(call, (at, _))| (*at, (*call).clone()))
                        .map(|(call, _)| call.clone());
                    match oldest {
                        Some(call) => listed.remove(&call),
                        None => break,
                    };
                }
            }
        }
        self.prune(now);
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
        self.by_identity.retain(|_, listed| {
            listed.retain(|_, (_, until)| *until > now);
            !listed.is_empty()
        });
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
        let Some(listed) = self.by_identity.get(&(account.clone(), identity.clone())) else {
            return Vec::new();
        };
        let mut calls: Vec<(OffsetDateTime, &CallSid)> = listed
            .iter()
            .filter(|(_, (at, until))| *at >= since && *until > now)
            .map(|(call, (at, _))| (*at, call))
            .collect();
        calls.sort_by(|a, b| b.cmp(a));
        calls
            .into_iter()
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect()
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
