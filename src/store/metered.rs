//! Time and errors of every store call, by operation, around whichever engine is in use:
//! `callrelay_store_operation_duration_seconds{operation}` and
//! `callrelay_store_errors_total{operation, error}`. A wrapper rather than timers inside each
//! engine, so that both engines are measured the same way and neither has to know about it.
//!
//! The time is the caller's: queueing for the connection, the round trip and the engine's own
//! deadline (`store.command_timeout_ms`) included, which is what a webhook waits. Writes an
//! engine makes in the background (`settle_message_detached`) are not timed here; their
//! failures are logged by the engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::{
    Appended, Claim, ClaimOwner, ClaimRequest, EventRetention, LoggedEvent, Lookup, PresenceKey,
    PutOutcome, Settlement, SocketPresence, Store, StoreError, StoredTarget, Targets,
};
use crate::domain::{AccountSid, Binding, BindingId, CallSid, Identity, RoomSid};
use crate::metrics::{Metrics, StoreErrorLabels, StoreLabels};

/// The `operation` label: each `Store` method that talks to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Ping,
    PutBinding,
    GetBinding,
    ListBindings,
    DeleteBinding,
    DeleteBindings,
    RefreshBinding,
    RemoveDeadBinding,
    Targets,
    PutPresences,
    RemovePresence,
    RemovePresences,
    Lookup,
    ClaimMessage,
    SettleMessage,
    Publish,
    Subscribe,
    AppendEvent,
    ReadEvents,
    HoldForwarder,
    ReleaseForwarder,
    ForwardCursor,
    SetForwardCursor,
    NoteFailedForward,
    PutEventTarget,
    RemoveEventTarget,
    EventTargets,
    EventAt,
    FailedForwards,
    ReplayFailed,
    NextReplay,
    FinishReplay,
    RecordCalls,
    KeepRinging,
    Ringing,
    CallEntries,
    RecentCalls,
    KeepRoomFact,
    RoomFacts,
    RoomsBetween,
}

impl Op {
    pub const ALL: [Op; 40] = [
        Op::Ping,
        Op::PutBinding,
        Op::GetBinding,
        Op::ListBindings,
        Op::DeleteBinding,
        Op::DeleteBindings,
        Op::RefreshBinding,
        Op::RemoveDeadBinding,
        Op::Targets,
        Op::PutPresences,
        Op::RemovePresence,
        Op::RemovePresences,
        Op::Lookup,
        Op::ClaimMessage,
        Op::SettleMessage,
        Op::Publish,
        Op::Subscribe,
        Op::AppendEvent,
        Op::ReadEvents,
        Op::HoldForwarder,
        Op::ReleaseForwarder,
        Op::ForwardCursor,
        Op::SetForwardCursor,
        Op::NoteFailedForward,
        Op::PutEventTarget,
        Op::RemoveEventTarget,
        Op::EventTargets,
        Op::EventAt,
        Op::FailedForwards,
        Op::ReplayFailed,
        Op::NextReplay,
        Op::FinishReplay,
        Op::RecordCalls,
        Op::KeepRinging,
        Op::Ringing,
        Op::CallEntries,
        Op::RecentCalls,
        Op::KeepRoomFact,
        Op::RoomFacts,
        Op::RoomsBetween,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Ping => "ping",
            Op::PutBinding => "put_binding",
            Op::GetBinding => "get_binding",
            Op::ListBindings => "list_bindings",
            Op::DeleteBinding => "delete_binding",
            Op::DeleteBindings => "delete_bindings",
            Op::RefreshBinding => "refresh_binding",
            Op::RemoveDeadBinding => "remove_dead_binding",
            Op::Targets => "targets",
            Op::PutPresences => "put_presences",
            Op::RemovePresence => "remove_presence",
            Op::RemovePresences => "remove_presences",
            Op::Lookup => "lookup",
            Op::ClaimMessage => "claim_message",
            Op::SettleMessage => "settle_message",
            Op::Publish => "publish",
            Op::Subscribe => "subscribe",
            Op::AppendEvent => "append_event",
            Op::ReadEvents => "read_events",
            Op::HoldForwarder => "hold_forwarder",
            Op::ReleaseForwarder => "release_forwarder",
            Op::ForwardCursor => "forward_cursor",
            Op::SetForwardCursor => "set_forward_cursor",
            Op::NoteFailedForward => "note_failed_forward",
            Op::PutEventTarget => "put_event_target",
            Op::RemoveEventTarget => "remove_event_target",
            Op::EventTargets => "event_targets",
            Op::EventAt => "event_at",
            Op::FailedForwards => "failed_forwards",
            Op::ReplayFailed => "replay_failed",
            Op::NextReplay => "next_replay",
            Op::FinishReplay => "finish_replay",
            Op::RecordCalls => "record_calls",
            Op::KeepRinging => "keep_ringing",
            Op::Ringing => "ringing",
            Op::CallEntries => "call_entries",
            Op::RecentCalls => "recent_calls",
            Op::KeepRoomFact => "keep_room_fact",
            Op::RoomFacts => "room_facts",
            Op::RoomsBetween => "rooms_between",
        }
    }
}

/// One operation's series, looked up once rather than on every call.
struct Series {
    duration: Histogram,
    unavailable: Counter,
    corrupt: Counter,
}

impl Series {
    fn new(metrics: &Metrics, operation: &'static str) -> Self {
        let errors = |error| {
            metrics
                .store_errors
                .get_or_create(&StoreErrorLabels { operation, error })
                .clone()
        };
        Self {
            duration: metrics
                .store_duration
                .get_or_create(&StoreLabels { operation })
                .clone(),
            unavailable: errors("unavailable"),
            corrupt: errors("corrupt"),
        }
    }

    fn record<T>(&self, started: Instant, result: &Result<T, StoreError>) {
        self.duration.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => {}
            Err(StoreError::Unavailable(_)) => {
                self.unavailable.inc();
            }
            Err(StoreError::Corrupt(_)) => {
                self.corrupt.inc();
            }
        }
    }
}

pub struct MeteredStore {
    inner: Arc<dyn Store>,
    /// Indexed by `Op`.
    series: Vec<Series>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: &Metrics) -> Self {
        let series = Op::ALL
            .iter()
            .map(|op| Series::new(metrics, op.name()))
            .collect();
        Self { inner, series }
    }

    async fn timed<T>(
        &self,
        op: Op,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.series[op as usize].record(started, &result);
        result
    }
}

#[async_trait]
impl Store for MeteredStore {
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(Op::Ping, self.inner.ping()).await
    }

    async fn put_binding(&self, binding: Binding) -> Result<PutOutcome, StoreError> {
        self.timed(Op::PutBinding, self.inner.put_binding(binding))
            .await
    }

    async fn get_binding(
        &self,
        account: &AccountSid,
        identity: &Identity,
        id: &BindingId,
        now: OffsetDateTime,
    ) -> Result<Option<Binding>, StoreError> {
        self.timed(
            Op::GetBinding,
            self.inner.get_binding(account, identity, id, now),
        )
        .await
    }

    async fn list_bindings(
        &self,
        account: &AccountSid,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<Vec<Binding>, StoreError> {
        self.timed(
            Op::ListBindings,
            self.inner.list_bindings(account, identity, now),
        )
        .await
    }

    async fn delete_binding(
        &self,
        account: &AccountSid,
        identity: &Identity,
        id: &BindingId,
    ) -> Result<bool, StoreError> {
        self.timed(
            Op::DeleteBinding,
            self.inner.delete_binding(account, identity, id),
        )
        .await
    }

    async fn delete_bindings(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<usize, StoreError> {
        self.timed(
            Op::DeleteBindings,
            self.inner.delete_bindings(account, identity),
        )
        .await
    }

    async fn refresh_binding(
        &self,
        binding: &Binding,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.timed(Op::RefreshBinding, self.inner.refresh_binding(binding, now))
            .await
    }

    async fn remove_dead_binding(&self, binding: &Binding) -> Result<(), StoreError> {
        self.timed(
            Op::RemoveDeadBinding,
            self.inner.remove_dead_binding(binding),
        )
        .await
    }

    async fn targets(
        &self,
        account: &AccountSid,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<Targets, StoreError> {
        self.timed(Op::Targets, self.inner.targets(account, identity, now))
            .await
    }

    async fn put_presences(&self, presences: &[SocketPresence]) -> Result<(), StoreError> {
        self.timed(Op::PutPresences, self.inner.put_presences(presences))
            .await
    }

    async fn remove_presences(&self, sockets: &[PresenceKey]) -> Result<(), StoreError> {
        self.timed(Op::RemovePresences, self.inner.remove_presences(sockets))
            .await
    }

    async fn remove_presence(
        &self,
        account: &AccountSid,
        identity: &Identity,
        conn_id: &str,
    ) -> Result<(), StoreError> {
        self.timed(
            Op::RemovePresence,
            self.inner.remove_presence(account, identity, conn_id),
        )
        .await
    }

    /// The engine's own `lookup` (one round trip), not the trait's two-call default.
    async fn lookup(
        &self,
        account: &AccountSid,
        identity: &Identity,
        claim: Option<ClaimRequest<'_>>,
        now: OffsetDateTime,
    ) -> Result<Lookup, StoreError> {
        self.timed(Op::Lookup, self.inner.lookup(account, identity, claim, now))
            .await
    }

    async fn claim_message(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        pending_for: Duration,
    ) -> Result<Claim, StoreError> {
        self.timed(
            Op::ClaimMessage,
            self.inner
                .claim_message(account, identity, message_id, owner, pending_for),
        )
        .await
    }

    async fn settle_message(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        settlement: Settlement,
    ) -> Result<(), StoreError> {
        self.timed(
            Op::SettleMessage,
            self.inner
                .settle_message(account, identity, message_id, owner, settlement),
        )
        .await
    }

    fn settle_message_detached(
        &self,
        account: &AccountSid,
        identity: &Identity,
        message_id: &str,
        owner: &ClaimOwner,
        settlement: Settlement,
    ) -> bool {
        self.inner
            .settle_message_detached(account, identity, message_id, owner, settlement)
    }

    async fn flush(&self) {
        self.inner.flush().await;
    }

    async fn publish(&self, node: &str, message: Bytes) -> Result<usize, StoreError> {
        self.timed(Op::Publish, self.inner.publish(node, message))
            .await
    }

    async fn subscribe(&self, node: &str) -> Result<mpsc::Receiver<Bytes>, StoreError> {
        self.timed(Op::Subscribe, self.inner.subscribe(node)).await
    }

    async fn append_event(
        &self,
        account: &AccountSid,
        event_id: &str,
        envelope: Bytes,
        retention: EventRetention,
    ) -> Result<Appended, StoreError> {
        self.timed(
            Op::AppendEvent,
            self.inner
                .append_event(account, event_id, envelope, retention),
        )
        .await
    }

    async fn read_events(
        &self,
        account: &AccountSid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        self.timed(
            Op::ReadEvents,
            self.inner.read_events(account, after, limit),
        )
        .await
    }

    async fn hold_forwarder(
        &self,
        account: &AccountSid,
        target: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.timed(
            Op::HoldForwarder,
            self.inner.hold_forwarder(account, target, node, ttl),
        )
        .await
    }

    async fn release_forwarder(
        &self,
        account: &AccountSid,
        target: &str,
        node: &str,
    ) -> Result<(), StoreError> {
        self.timed(
            Op::ReleaseForwarder,
            self.inner.release_forwarder(account, target, node),
        )
        .await
    }

    async fn forward_cursor(
        &self,
        account: &AccountSid,
        target: &str,
    ) -> Result<Option<String>, StoreError> {
        self.timed(
            Op::ForwardCursor,
            self.inner.forward_cursor(account, target),
        )
        .await
    }

    async fn set_forward_cursor(
        &self,
        account: &AccountSid,
        target: &str,
        holder: &str,
        position: &str,
    ) -> Result<bool, StoreError> {
        self.timed(
            Op::SetForwardCursor,
            self.inner
                .set_forward_cursor(account, target, holder, position),
        )
        .await
    }

    async fn event_at(
        &self,
        account: &AccountSid,
        position: &str,
    ) -> Result<Option<LoggedEvent>, StoreError> {
        self.timed(Op::EventAt, self.inner.event_at(account, position))
            .await
    }

    async fn failed_forwards(
        &self,
        account: &AccountSid,
        target: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.timed(
            Op::FailedForwards,
            self.inner.failed_forwards(account, target, limit),
        )
        .await
    }

    async fn replay_failed(&self, account: &AccountSid, target: &str) -> Result<u64, StoreError> {
        self.timed(Op::ReplayFailed, self.inner.replay_failed(account, target))
            .await
    }

    async fn next_replay(
        &self,
        account: &AccountSid,
        target: &str,
    ) -> Result<Option<String>, StoreError> {
        self.timed(Op::NextReplay, self.inner.next_replay(account, target))
            .await
    }

    async fn finish_replay(
        &self,
        account: &AccountSid,
        target: &str,
        position: &str,
    ) -> Result<(), StoreError> {
        self.timed(
            Op::FinishReplay,
            self.inner.finish_replay(account, target, position),
        )
        .await
    }

    async fn put_event_target(
        &self,
        account: &AccountSid,
        target: &StoredTarget,
    ) -> Result<(), StoreError> {
        self.timed(
            Op::PutEventTarget,
            self.inner.put_event_target(account, target),
        )
        .await
    }

    async fn remove_event_target(
        &self,
        account: &AccountSid,
        name: &str,
    ) -> Result<bool, StoreError> {
        self.timed(
            Op::RemoveEventTarget,
            self.inner.remove_event_target(account, name),
        )
        .await
    }

    async fn event_targets(&self, account: &AccountSid) -> Result<Vec<StoredTarget>, StoreError> {
        self.timed(Op::EventTargets, self.inner.event_targets(account))
            .await
    }

    async fn note_failed_forward(
        &self,
        account: &AccountSid,
        target: &str,
        position: &str,
    ) -> Result<u64, StoreError> {
        self.timed(
            Op::NoteFailedForward,
            self.inner.note_failed_forward(account, target, position),
        )
        .await
    }

    async fn record_calls(&self, writes: &[crate::store::TraceWrite]) -> Result<(), StoreError> {
        self.timed(Op::RecordCalls, self.inner.record_calls(writes))
            .await
    }

    async fn keep_ringing(&self, writes: &[crate::store::RingingWrite]) -> Result<(), StoreError> {
        self.timed(Op::KeepRinging, self.inner.keep_ringing(writes))
            .await
    }

    async fn ringing(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.timed(Op::Ringing, self.inner.ringing(account, identity))
            .await
    }

    async fn call_entries(
        &self,
        account: &AccountSid,
        call_sid: &CallSid,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.timed(Op::CallEntries, self.inner.call_entries(account, call_sid))
            .await
    }

    async fn recent_calls(
        &self,
        account: &AccountSid,
        identity: &Identity,
        since: OffsetDateTime,
        limit: usize,
        kept: usize,
    ) -> Result<Vec<CallSid>, StoreError> {
        self.timed(
            Op::RecentCalls,
            self.inner
                .recent_calls(account, identity, since, limit, kept),
        )
        .await
    }

    async fn keep_room_fact(&self, fact: crate::store::RoomFactWrite) -> Result<(), StoreError> {
        self.timed(Op::KeepRoomFact, self.inner.keep_room_fact(fact))
            .await
    }

    async fn room_facts(
        &self,
        account: &AccountSid,
        room_sid: &RoomSid,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.timed(Op::RoomFacts, self.inner.room_facts(account, room_sid))
            .await
    }

    async fn rooms_between(
        &self,
        account: &AccountSid,
        from: OffsetDateTime,
        to: OffsetDateTime,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<RoomSid>, StoreError> {
        self.timed(
            Op::RoomsBetween,
            self.inner.rooms_between(account, from, to, offset, limit),
        )
        .await
    }
}
