//! The memory engine's event log: per account, events in order with their positions, and the
//! ids seen within the retention. Positions look like Redis stream ids (`<ms>-<seq>`) and only
//! grow, whatever the wall clock does.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{Appended, EventRetention, LoggedEvent};
use crate::domain::AccountSid;

#[derive(Default)]
pub struct EventLogs {
    accounts: HashMap<AccountSid, Log>,
    forwarders: HashMap<(AccountSid, String), Forwarder>,
    targets: HashMap<AccountSid, std::collections::BTreeMap<String, super::StoredTarget>>,
}

/// One target's forwarding state.
#[derive(Default)]
struct Forwarder {
    /// The node holding the lease, until when (by this process's clock).
    lease: Option<(String, std::time::Instant)>,
    cursor: Option<String>,
    failed: VecDeque<String>,
    replay: VecDeque<String>,
}

#[derive(Default)]
struct Log {
    /// (milliseconds, sequence, envelope), oldest first.
    events: VecDeque<(u64, u64, Bytes)>,
    /// Event id → (position, the millisecond it is forgotten).
    ids: HashMap<String, (String, u64)>,
    last: (u64, u64),
}

fn position_text(ms: u64, seq: u64) -> String {
    format!("{ms}-{seq}")
}

/// `<ms>-<seq>` (or a bare `<ms>`, as Redis accepts) as a pair.
fn parse_position(text: &str) -> Option<(u64, u64)> {
    match text.split_once('-') {
        Some((ms, seq)) => Some((ms.parse().ok()?, seq.parse().ok()?)),
        None => Some((text.parse().ok()?, u64::MAX)),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl EventLogs {
    pub fn append(
        &mut self,
        account: &AccountSid,
        event_id: &str,
        envelope: Bytes,
        retention: EventRetention,
    ) -> Appended {
        let now = now_ms();
        let log = self.accounts.entry(account.clone()).or_default();
        log.ids.retain(|_, (_, until)| *until > now);
        if let Some((at, _)) = log.ids.get(event_id) {
            return Appended::Duplicate(at.clone());
        }
        let (last_ms, last_seq) = log.last;
        let next = if now > last_ms {
            (now, 0)
        } else {
            (last_ms, last_seq + 1)
        };
        log.last = next;
        log.events.push_back((next.0, next.1, envelope));
        let at = position_text(next.0, next.1);
        let max_age = retention.max_age.as_millis() as u64;
        log.ids.insert(
            event_id.to_owned(),
            (at.clone(), now.saturating_add(max_age)),
        );
        let oldest_kept = now.saturating_sub(max_age);
        while log.events.len() as u64 > retention.max_events
            || log
                .events
                .front()
                .is_some_and(|(ms, _, _)| *ms < oldest_kept)
        {
            log.events.pop_front();
        }
        Appended::New(at)
    }

    pub fn read(
        &self,
        account: &AccountSid,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<LoggedEvent> {
        let Some(log) = self.accounts.get(account) else {
            return Vec::new();
        };
        let after = after.and_then(parse_position);
        log.events
            .iter()
            .filter(|(ms, seq, _)| after.is_none_or(|a| (*ms, *seq) > a))
            .take(limit)
            .map(|(ms, seq, envelope)| LoggedEvent {
                position: position_text(*ms, *seq),
                envelope: envelope.clone(),
            })
            .collect()
    }

    fn forwarder(&mut self, account: &AccountSid, target: &str) -> &mut Forwarder {
        self.forwarders
            .entry((account.clone(), target.to_owned()))
            .or_default()
    }

    pub fn hold(&mut self, account: &AccountSid, target: &str, node: &str, ttl: Duration) -> bool {
        let now = std::time::Instant::now();
        let forwarder = self.forwarder(account, target);
        match &forwarder.lease {
            Some((holder, until)) if holder != node && *until > now => false,
            _ => {
                forwarder.lease = Some((node.to_owned(), now + ttl));
                true
            }
        }
    }

    pub fn release(&mut self, account: &AccountSid, target: &str, node: &str) {
        let forwarder = self.forwarder(account, target);
        if forwarder
            .lease
            .as_ref()
            .is_some_and(|(holder, _)| holder == node)
        {
            forwarder.lease = None;
        }
    }

    pub fn cursor(&mut self, account: &AccountSid, target: &str) -> Option<String> {
        self.forwarder(account, target).cursor.clone()
    }

    pub fn set_cursor(
        &mut self,
        account: &AccountSid,
        target: &str,
        holder: &str,
        position: &str,
    ) -> bool {
        let now = std::time::Instant::now();
        let forwarder = self.forwarder(account, target);
        let holds = forwarder
            .lease
            .as_ref()
            .is_some_and(|(h, until)| h == holder && *until > now);
        if holds {
            forwarder.cursor = Some(position.to_owned());
        }
        holds
    }

    pub fn note_failed(&mut self, account: &AccountSid, target: &str, position: &str) -> u64 {
        let failed = &mut self.forwarder(account, target).failed;
        failed.push_back(position.to_owned());
        while failed.len() as u64 > super::MAX_FAILED_FORWARDS {
            failed.pop_front();
        }
        failed.len() as u64
    }

    pub fn put_target(&mut self, account: &AccountSid, target: &super::StoredTarget) {
        self.targets
            .entry(account.clone())
            .or_default()
            .insert(target.name.clone(), target.clone());
    }

    pub fn remove_target(&mut self, account: &AccountSid, name: &str) -> bool {
        let removed = self
            .targets
            .get_mut(account)
            .is_some_and(|t| t.remove(name).is_some());
        if removed {
            self.forwarders.remove(&(account.clone(), name.to_owned()));
        }
        removed
    }

    pub fn targets(&self, account: &AccountSid) -> Vec<super::StoredTarget> {
        self.targets
            .get(account)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn event_at(&self, account: &AccountSid, position: &str) -> Option<LoggedEvent> {
        let wanted = parse_position(position)?;
        let log = self.accounts.get(account)?;
        log.events
            .iter()
            .find(|(ms, seq, _)| (*ms, *seq) == wanted)
            .map(|(ms, seq, envelope)| LoggedEvent {
                position: position_text(*ms, *seq),
                envelope: envelope.clone(),
            })
    }

    pub fn failed(&mut self, account: &AccountSid, target: &str, limit: usize) -> Vec<String> {
        self.forwarder(account, target)
            .failed
            .iter()
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn replay_failed(&mut self, account: &AccountSid, target: &str) -> u64 {
        let forwarder = self.forwarder(account, target);
        let moved = forwarder.failed.len() as u64;
        let failed = std::mem::take(&mut forwarder.failed);
        forwarder.replay.extend(failed);
        moved
    }

    pub fn next_replay(&mut self, account: &AccountSid, target: &str) -> Option<String> {
        self.forwarder(account, target).replay.front().cloned()
    }

    pub fn finish_replay(&mut self, account: &AccountSid, target: &str, position: &str) {
        let replay = &mut self.forwarder(account, target).replay;
        if replay.front().is_some_and(|p| p == position) {
            replay.pop_front();
        }
    }
}
