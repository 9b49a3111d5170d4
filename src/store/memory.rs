//! The embedded store: the same semantics as the Redis engine, inside one process, kept in
//! memory only. Several callrelay instances in one process may share one `MemoryStore`, which
//! lets unit tests exercise replica-to-replica delivery without Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::{
    Claim, ClaimOwner, PutOutcome, Settlement, SocketPresence, Store, StoreError, Targets,
};
use crate::domain::{AccountSid, Binding, BindingId, CallSid, Identity, PushChannel, RoomSid};

type IdentityKey = (AccountSid, Identity);
type MessageKey = (AccountSid, Identity, String);

/// A dedupe marker, as the Redis engine keeps it under `…:msg:<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Marker {
    Pending(ClaimOwner),
    Delivered,
}
type AddressKey = (AccountSid, PushChannel, String);

#[derive(Default)]
struct State {
    bindings: HashMap<IdentityKey, HashMap<BindingId, Binding>>,
    /// Each presence with the end of its lease, by this process's monotonic clock: the one
    /// clock every replica sharing this store agrees on, as they agree on Redis's.
    sockets: HashMap<IdentityKey, HashMap<String, (SocketPresence, Instant)>>,
    owners: HashMap<AddressKey, (Identity, BindingId)>,
    /// Each marker with the instant it lapses.
    messages: HashMap<MessageKey, (Marker, Instant)>,
    messages_pruned: Option<Instant>,
    subscribers: HashMap<String, mpsc::Sender<Bytes>>,
    events: super::memory_events::EventLogs,
    records: super::memory_records::Records,
}

#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

/// How many messages a replica's inbox holds before publishing reports no receiver.
const INBOX_CAPACITY: usize = 4096;

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(account: &AccountSid, identity: &Identity) -> IdentityKey {
    (account.clone(), identity.clone())
}

fn address_key(b: &Binding) -> AddressKey {
    (b.account_sid.clone(), b.channel, b.address.clone())
}

impl State {
    fn remove_binding(&mut self, k: &IdentityKey, id: &BindingId) -> Option<Binding> {
        let map = self.bindings.get_mut(k)?;
        let removed = map.remove(id)?;
        if map.is_empty() {
            self.bindings.remove(k);
        }
        let ak = address_key(&removed);
        if self.owners.get(&ak) == Some(&(removed.identity.clone(), removed.id.clone())) {
            self.owners.remove(&ak);
        }
        Some(removed)
    }

    fn live_bindings(&self, k: &IdentityKey, now: OffsetDateTime) -> Vec<Binding> {
        let mut list: Vec<Binding> = self
            .bindings
            .get(k)
            .map(|m| m.values().filter(|b| !b.is_expired(now)).cloned().collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Drops lapsed dedupe markers, at most once a second: a scan per claim would cost as much
    /// as the markers of the whole window.
    fn forget_old_messages(&mut self) {
        let now = Instant::now();
        if self
            .messages_pruned
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        self.messages_pruned = Some(now);
        self.messages.retain(|_, (_, until)| *until > now);
    }

    /// Deletes the identity's expired bindings (with their token ownership; `now` is the
    /// caller's clock) and lapsed socket leases (by the store's clock), as Redis would let them
    /// expire: memory is not kept for the dead.
    fn prune(&mut self, k: &IdentityKey, now: OffsetDateTime) {
        let expired: Vec<BindingId> = self
            .bindings
            .get(k)
            .map(|m| {
                m.values()
                    .filter(|b| b.is_expired(now))
                    .map(|b| b.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for id in expired {
            self.remove_binding(k, &id);
        }
        let store_now = Instant::now();
        if let Some(sockets) = self.sockets.get_mut(k) {
            sockets.retain(|_, (_, lease_end)| *lease_end > store_now);
            if sockets.is_empty() {
                self.sockets.remove(k);
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn engine(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_binding(&self, binding: Binding) -> Result<PutOutcome, StoreError> {
        let mut s = self.lock();
        let k = key(&binding.account_sid, &binding.identity);
        // An expired binding counts as absent: the new one starts a new life.
        s.prune(&k, binding.updated_at);
        let previous = s.bindings.get(&k).and_then(|m| m.get(&binding.id)).cloned();
        let mut stored = binding;
        if let Some(prev) = &previous {
            stored.created_at = prev.created_at;
            // The replaced binding's token is no longer this binding's: release it.
            if prev.channel != stored.channel || prev.address != stored.address {
                let ak = address_key(prev);
                if s.owners.get(&ak) == Some(&(prev.identity.clone(), prev.id.clone())) {
                    s.owners.remove(&ak);
                }
            }
        }
        let mut displaced = Vec::new();
        let owner = (stored.identity.clone(), stored.id.clone());
        if let Some(old) = s.owners.insert(address_key(&stored), owner.clone())
            && old != owner
        {
            let old_key = (stored.account_sid.clone(), old.0.clone());
            let same_token = s
                .bindings
                .get(&old_key)
                .and_then(|m| m.get(&old.1))
                .is_some_and(|b| b.channel == stored.channel && b.address == stored.address);
            if same_token {
                if let Some(map) = s.bindings.get_mut(&old_key) {
                    map.remove(&old.1);
                    if map.is_empty() {
                        s.bindings.remove(&old_key);
                    }
                }
                displaced.push(old);
            }
        }
        s.bindings
            .entry(k)
            .or_default()
            .insert(stored.id.clone(), stored.clone());
        Ok(PutOutcome {
            binding: stored,
            created: previous.is_none(),
            displaced,
        })
    }

    async fn get_binding(
        &self,
        account: &AccountSid,
        identity: &Identity,
        id: &BindingId,
        now: OffsetDateTime,
    ) -> Result<Option<Binding>, StoreError> {
        let mut s = self.lock();
        let k = key(account, identity);
        s.prune(&k, now);
        Ok(s.bindings.get(&k).and_then(|m| m.get(id)).cloned())
    }

    async fn list_bindings(
        &self,
        account: &AccountSid,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<Vec<Binding>, StoreError> {
        let mut s = self.lock();
        let k = key(account, identity);
        s.prune(&k, now);
        Ok(s.live_bindings(&k, now))
    }

    async fn delete_binding(
        &self,
        account: &AccountSid,
        identity: &Identity,
        id: &BindingId,
    ) -> Result<bool, StoreError> {
        let mut s = self.lock();
        let k = key(account, identity);
        s.prune(&k, OffsetDateTime::now_utc());
        Ok(s.remove_binding(&k, id).is_some())
    }

    async fn delete_bindings(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<usize, StoreError> {
        let mut s = self.lock();
        let k = key(account, identity);
        let ids: Vec<BindingId> = s
            .bindings
            .get(&k)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for id in &ids {
            s.remove_binding(&k, id);
        }
        Ok(ids.len())
    }

    async fn refresh_binding(
        &self,
        binding: &Binding,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        if let Some(current) = s
            .bindings
            .get_mut(&key(&binding.account_sid, &binding.identity))
            .and_then(|m| m.get_mut(&binding.id))
            && current == binding
        {
            *current = binding.refreshed(now);
        }
        Ok(())
    }

    async fn remove_dead_binding(&self, binding: &Binding) -> Result<(), StoreError> {
        let mut s = self.lock();
        let k = key(&binding.account_sid, &binding.identity);
        let unchanged = s
            .bindings
            .get(&k)
            .and_then(|m| m.get(&binding.id))
            .is_some_and(|b| b.channel == binding.channel && b.address == binding.address);
        if unchanged {
            s.remove_binding(&k, &binding.id);
        }
        Ok(())
    }

    async fn targets(
        &self,
        account: &AccountSid,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<Targets, StoreError> {
        let mut s = self.lock();
        let k = key(account, identity);
        s.prune(&k, now);
        // `prune` left only live leases.
        let mut sockets: Vec<SocketPresence> = s
            .sockets
            .get(&k)
            .map(|m| m.values().map(|(p, _)| p.clone()).collect())
            .unwrap_or_default();
        sockets.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
        Ok(Targets {
            bindings: s.live_bindings(&k, now),
            sockets,
        })
    }

    async fn put_presences(&self, presences: &[SocketPresence]) -> Result<(), StoreError> {
        let mut s = self.lock();
        let now = Instant::now();
        for p in presences {
            s.sockets
                .entry(key(&p.account_sid, &p.identity))
                .or_default()
                .insert(p.conn_id.clone(), (p.clone(), now + p.lease));
        }
        Ok(())
    }

    async fn remove_presence(
        &self,
        account: &AccountSid,
        identity: &Identity,
        conn_id: &str,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        let k = key(account, identity);
        if let Some(map) = s.sockets.get_mut(&k) {
            map.remove(conn_id);
            if map.is_empty() {
                s.sockets.remove(&k);
            }
        }
        Ok(())
    }

    async fn claim_message(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        pending_for: Duration,
    ) -> Result<Claim, StoreError> {
        let mut s = self.lock();
        s.forget_old_messages();
        let k = (account.clone(), identity.clone(), message_id.to_owned());
        let now = Instant::now();
        match s.messages.get(&k) {
            Some((Marker::Delivered, until)) if *until > now => Ok(Claim::Delivered),
            Some((Marker::Pending(holder), until)) if *until > now => Ok(if holder == owner {
                Claim::Acquired
            } else {
                Claim::Pending
            }),
            _ => {
                s.messages
                    .insert(k, (Marker::Pending(owner.clone()), now + pending_for));
                Ok(Claim::Acquired)
            }
        }
    }

    async fn settle_message(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        settlement: Settlement,
    ) -> Result<(), StoreError> {
        self.settle_message_detached(account, identity, message_id, owner, settlement);
        Ok(())
    }

    fn settle_message_detached(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        settlement: Settlement,
    ) -> bool {
        let mut s = self.lock();
        let k = (account.clone(), identity.clone(), message_id.to_owned());
        let now = Instant::now();
        // As the Redis engine's scripts: only the owner's claim is touched; `delivered` is
        // also written over a lapsed claim nobody took since.
        let current = s.messages.get(&k).filter(|(_, until)| *until > now);
        let owned = matches!(current, Some((Marker::Pending(holder), _)) if holder == owner);
        match settlement {
            Settlement::Delivered { window } if owned || current.is_none() => {
                s.messages.insert(k, (Marker::Delivered, now + window));
            }
            Settlement::Forgotten if owned => {
                s.messages.remove(&k);
            }
            _ => {}
        }
        true
    }

    async fn publish(&self, node: &str, message: Bytes) -> Result<usize, StoreError> {
        let sender = self.lock().subscribers.get(node).cloned();
        Ok(match sender {
            Some(tx) if tx.try_send(message).is_ok() => 1,
            _ => 0,
        })
    }

    async fn subscribe(&self, node: &str) -> Result<mpsc::Receiver<Bytes>, StoreError> {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        self.lock().subscribers.insert(node.to_owned(), tx);
        Ok(rx)
    }

    async fn append_event(
        &self,
        account: &AccountSid,
        event_id: &str,
        envelope: Bytes,
        retention: super::EventRetention,
    ) -> Result<super::Appended, StoreError> {
        Ok(self
            .lock()
            .events
            .append(account, event_id, envelope, retention))
    }

    async fn read_events(
        &self,
        account: &AccountSid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<super::LoggedEvent>, StoreError> {
        Ok(self.lock().events.read(account, after, limit))
    }

    async fn hold_forwarder(
        &self,
        account: &AccountSid,
        target: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.lock().events.hold(account, target, node, ttl))
    }

    async fn release_forwarder(
        &self,
        account: &AccountSid,
        target: &str,
        node: &str,
    ) -> Result<(), StoreError> {
        self.lock().events.release(account, target, node);
        Ok(())
    }

    async fn forward_cursor(
        &self,
        account: &AccountSid,
        target: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.lock().events.cursor(account, target))
    }

    async fn set_forward_cursor(
        &self,
        account: &AccountSid,
        target: &str,
        holder: &str,
        position: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .events
            .set_cursor(account, target, holder, position))
    }

    async fn event_at(
        &self,
        account: &AccountSid,
        position: &str,
    ) -> Result<Option<super::LoggedEvent>, StoreError> {
        Ok(self.lock().events.event_at(account, position))
    }

    async fn failed_forwards(
        &self,
        account: &AccountSid,
        target: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().events.failed(account, target, limit))
    }

    async fn replay_failed(&self, account: &AccountSid, target: &str) -> Result<u64, StoreError> {
        Ok(self.lock().events.replay_failed(account, target))
    }

    async fn next_replay(
        &self,
        account: &AccountSid,
        target: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.lock().events.next_replay(account, target))
    }

    async fn finish_replay(
        &self,
        account: &AccountSid,
        target: &str,
        position: &str,
    ) -> Result<(), StoreError> {
        self.lock().events.finish_replay(account, target, position);
        Ok(())
    }

    async fn put_event_target(
        &self,
        account: &AccountSid,
        target: &super::StoredTarget,
    ) -> Result<(), StoreError> {
        self.lock().events.put_target(account, target);
        Ok(())
    }

    async fn remove_event_target(
        &self,
        account: &AccountSid,
        name: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.lock().events.remove_target(account, name))
    }

    async fn event_targets(
        &self,
        account: &AccountSid,
    ) -> Result<Vec<super::StoredTarget>, StoreError> {
        Ok(self.lock().events.targets(account))
    }

    async fn note_failed_forward(
        &self,
        account: &AccountSid,
        target: &str,
        position: &str,
    ) -> Result<u64, StoreError> {
        Ok(self.lock().events.note_failed(account, target, position))
    }

    async fn record_calls(&self, writes: &[super::TraceWrite]) -> Result<(), StoreError> {
        self.lock()
            .records
            .record_calls(writes, OffsetDateTime::now_utc());
        Ok(())
    }

    async fn keep_ringing(&self, writes: &[super::RingingWrite]) -> Result<(), StoreError> {
        self.lock()
            .records
            .keep_ringing(writes, OffsetDateTime::now_utc());
        Ok(())
    }

    async fn ringing(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<Vec<Bytes>, StoreError> {
        Ok(self
            .lock()
            .records
            .ringing(account, identity, OffsetDateTime::now_utc()))
    }

    async fn call_entries(
        &self,
        account: &AccountSid,
        call_sid: &CallSid,
    ) -> Result<Vec<Bytes>, StoreError> {
        Ok(self
            .lock()
            .records
            .call_entries(account, call_sid, OffsetDateTime::now_utc()))
    }

    async fn recent_calls(
        &self,
        account: &AccountSid,
        identity: &Identity,
        since: OffsetDateTime,
        limit: usize,
        // This engine trims each list to exactly its cap as it appends.
        _kept: usize,
    ) -> Result<Vec<CallSid>, StoreError> {
        Ok(self.lock().records.recent_calls(
            account,
            identity,
            since,
            limit,
            OffsetDateTime::now_utc(),
        ))
    }

    async fn keep_room_fact(&self, fact: super::RoomFactWrite) -> Result<(), StoreError> {
        self.lock()
            .records
            .keep_room_fact(fact, OffsetDateTime::now_utc());
        Ok(())
    }

    async fn room_facts(
        &self,
        account: &AccountSid,
        room_sid: &RoomSid,
    ) -> Result<Vec<Bytes>, StoreError> {
        Ok(self
            .lock()
            .records
            .room_facts(account, room_sid, OffsetDateTime::now_utc()))
    }

    async fn rooms_between(
        &self,
        account: &AccountSid,
        from: OffsetDateTime,
        to: OffsetDateTime,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<RoomSid>, StoreError> {
        Ok(self.lock().records.rooms_between(
            account,
            from,
            to,
            offset,
            limit,
            OffsetDateTime::now_utc(),
        ))
    }
}
