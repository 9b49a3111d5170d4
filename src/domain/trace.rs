//! The per-call delivery trace: what callrelay recorded about each call notification it
//! answered (who it was for, what Twilio was told, every target tried and what Apple or Google
//! said) and the Voice Insights call summaries Event Streams brought for the same call.
//!
//! Each is one entry, stored as JSON in the call's list and read back as is; the call's view
//! (`CallTrace`) is assembled from its entries when it is read. Entries name bindings by id and
//! sockets by connection id, never by device token.

use serde::{Deserialize, Serialize};

use super::clipped as short;
use time::OffsetDateTime;

/// One entry of a call's trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceEntry {
    Notification(NotificationRecord),
    Insights(InsightsRecord),
    Ack(AckRecord),
}

/// A client's acknowledgement of a notification it received over a socket opened with
/// `ack=1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub identity: String,
    pub socket: String,
    /// The replica holding the socket (not shown to access-token holders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub acknowledged_at: OffsetDateTime,
    /// From the hand-off to the socket to the acknowledgement.
    pub after_ms: f64,
}

/// One call notification Twilio sent, and the answer it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub identity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// The HTTP status Twilio was answered.
    pub status: u16,
    /// The answer's outcome, as `callrelay_webhooks_total` labels it.
    pub answer: String,
    pub took_ms: f64,
    pub delivered: usize,
    pub removed: usize,
    pub failed: usize,
    /// A retry of a notification already delivered: nothing was sent again.
    pub duplicate: bool,
    /// The replica that answered (not shown to access-token holders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    pub targets: Vec<TargetRecord>,
}

/// One target a notification was delivered to, or tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub channel: String,
    /// A push binding's app and id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    /// A socket's connection id and the replica holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    pub attempts: u32,
    /// `delivered`, `removed` (the address is dead and the binding or socket went) or `failed`.
    pub outcome: String,
    /// What Apple or Google answered last: HTTP status, their reason or error code, `apns-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apns_id: Option<String>,
    /// callrelay's own words when the target was not delivered to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub latency_ms: f64,
}

/// What a Voice Insights call summary says about how the call went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsightsRecord {
    /// The event type, e.g. `com.twilio.voice.insights.call-summary.complete`.
    #[serde(rename = "type")]
    pub kind: String,
    pub event_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// `to.callee`, e.g. `client:alice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee: Option<String>,
}

/// The event types that carry Voice Insights call summaries.
const CALL_SUMMARY: &str = "com.twilio.voice.insights.call-summary";

impl InsightsRecord {
    /// The summary in a CloudEvent's `data` when its type is a Voice Insights call summary.
    pub fn read(
        kind: &str,
        event_id: &str,
        data: Option<&serde_json::Value>,
        received_at: OffsetDateTime,
    ) -> Option<Self> {
        if !kind.starts_with(CALL_SUMMARY) {
            return None;
        }
        let data = data?;
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(short);
        let number = |name: &str| data.get(name).and_then(serde_json::Value::as_u64);
        Some(Self {
            kind: short(kind),
            event_id: short(event_id),
            received_at,
            call_state: text(data.get("call_state")),
            duration: number("duration"),
            connect_duration: number("connect_duration"),
            disconnected_by: text(data.pointer("/properties/disconnected_by")),
            processing_state: text(data.get("processing_state")),
            start_time: text(data.get("start_time")),
            end_time: text(data.get("end_time")),
            callee: text(data.pointer("/to/callee")),
        })
    }
}

/// A call's trace as the API shows it: the call, then its notifications and summaries in the
/// order they were recorded.
#[derive(Debug, Clone, Serialize)]
pub struct CallTrace {
    pub account_sid: String,
    pub call_sid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub notifications: Vec<NotificationRecord>,
    pub insights: Vec<InsightsRecord>,
    /// Acknowledgements from clients' sockets; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acks: Vec<AckRecord>,
}

impl CallTrace {
    /// Assembles the view from a call's entries; an entry that does not read (written by a
    /// newer callrelay, say) is passed over.
    pub fn assemble(account_sid: &str, call_sid: &str, entries: &[bytes::Bytes]) -> Self {
        let mut trace = Self {
            account_sid: account_sid.to_owned(),
            call_sid: call_sid.to_owned(),
            identity: None,
            from: None,
            to: None,
            notifications: Vec::new(),
            insights: Vec::new(),
            acks: Vec::new(),
        };
        for entry in entries {
            match serde_json::from_slice::<TraceEntry>(entry) {
                Ok(TraceEntry::Notification(n)) => trace.notifications.push(n),
                Ok(TraceEntry::Insights(i)) => trace.insights.push(i),
                Ok(TraceEntry::Ack(a)) => trace.acks.push(a),
                Err(e) => tracing::debug!(error = %e, "passing over a trace entry"),
            }
        }
        trace.notifications.sort_by_key(|n| n.received_at);
        trace.insights.sort_by_key(|i| i.received_at);
        trace.acks.sort_by_key(|a| a.acknowledged_at);
        if let Some(first) = trace.notifications.first() {
            trace.identity = Some(first.identity.clone());
            trace.from.clone_from(&first.from);
            trace.to.clone_from(&first.to);
        } else if let Some(callee) = trace.insights.iter().find_map(|i| i.callee.clone()) {
            trace.identity = callee.strip_prefix("client:").map(str::to_owned);
            trace.to = Some(callee);
        }
        trace
    }

    /// The trace as a client sees it: only the notifications to its own identity (`None` when
    /// there are none), without callrelay's internal words (error details, replica ids).
    pub fn for_client(mut self, identity: &str) -> Option<Self> {
        self.notifications.retain(|n| n.identity == identity);
        if self.notifications.is_empty() {
            return None;
        }
        self.acks.retain(|a| a.identity == identity);
        for a in &mut self.acks {
            a.replica = None;
        }
        for n in &mut self.notifications {
            n.replica = None;
            for t in &mut n.targets {
                t.detail = None;
                t.replica = None;
            }
        }
        self.identity = Some(identity.to_owned());
        Some(self)
    }

    /// When the call was first heard of.
    pub fn first_seen(&self) -> Option<OffsetDateTime> {
        let n = self.notifications.first().map(|n| n.received_at);
        let i = self.insights.first().map(|i| i.received_at);
        n.into_iter().chain(i).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(identity: &str, at: i64) -> NotificationRecord {
        NotificationRecord {
            identity: identity.into(),
            message_id: Some("m1".into()),
            message_type: Some("twilio.voice.call".into()),
            from: Some("client:bob".into()),
            to: Some(format!("client:{identity}")),
            received_at: OffsetDateTime::from_unix_timestamp(at).unwrap(),
            status: 200,
            answer: "delivered".into(),
            took_ms: 1.5,
            delivered: 1,
            removed: 0,
            failed: 0,
            duplicate: false,
            replica: Some("r1".into()),
            targets: vec![],
        }
    }

    fn json(entry: &TraceEntry) -> Bytes {
        Bytes::from(serde_json::to_vec(entry).unwrap())
    }

    #[test]
    fn a_trace_is_assembled_in_time_order_and_unreadable_entries_are_passed_over() {
        let later = record("alice", 20);
        let earlier = record("alice", 10);
        let entries = vec![
            json(&TraceEntry::Notification(later.clone())),
            Bytes::from_static(b"{\"kind\":\"from-the-future\"}"),
            json(&TraceEntry::Notification(earlier.clone())),
        ];
        let trace = CallTrace::assemble("AC1", "CA1", &entries);
        assert_eq!(trace.notifications, vec![earlier, later]);
        assert_eq!(trace.identity.as_deref(), Some("alice"));
        assert_eq!(trace.from.as_deref(), Some("client:bob"));
    }

    #[test]
    fn a_call_summary_is_read_from_insights_data_and_other_types_are_not() {
        let data = serde_json::json!({
            "call_sid": "CA1", "call_state": "completed", "duration": 42,
            "connect_duration": 40, "processing_state": "complete",
            "properties": {"disconnected_by": "callee"},
            "to": {"callee": "client:alice"}
        });
        let now = OffsetDateTime::UNIX_EPOCH;
        let summary = InsightsRecord::read(
            "com.twilio.voice.insights.call-summary.complete",
            "EZ1",
            Some(&data),
            now,
        )
        .unwrap();
        assert_eq!(summary.call_state.as_deref(), Some("completed"));
        assert_eq!(summary.duration, Some(42));
        assert_eq!(summary.connect_duration, Some(40));
        assert_eq!(summary.disconnected_by.as_deref(), Some("callee"));
        assert_eq!(summary.callee.as_deref(), Some("client:alice"));
        assert!(InsightsRecord::read("com.twilio.messaging.x", "EZ2", Some(&data), now).is_none());
        let trace = CallTrace::assemble("AC1", "CA1", &[json(&TraceEntry::Insights(summary))]);
        assert_eq!(trace.identity.as_deref(), Some("alice"));
    }

    #[test]
    fn a_client_sees_only_its_own_notifications_without_internal_details() {
        let mut mine = record("alice", 10);
        mine.targets.push(TargetRecord {
            channel: "fcm".into(),
            app: Some("android".into()),
            binding: Some("b1".into()),
            socket: None,
            replica: None,
            attempts: 2,
            outcome: "failed".into(),
            status: Some(503),
            reason: Some("UNAVAILABLE".into()),
            apns_id: None,
            detail: Some("cannot reach FCM: connection refused".into()),
            latency_ms: 3.0,
        });
        let other = record("bob", 20);
        let entries = vec![
            json(&TraceEntry::Notification(mine)),
            json(&TraceEntry::Notification(other)),
        ];
        let trace = CallTrace::assemble("AC1", "CA1", &entries);
        let seen = trace.clone().for_client("alice").unwrap();
        assert_eq!(seen.notifications.len(), 1);
        assert_eq!(seen.notifications[0].replica, None);
        assert_eq!(seen.notifications[0].targets[0].detail, None);
        assert_eq!(
            seen.notifications[0].targets[0].reason.as_deref(),
            Some("UNAVAILABLE")
        );
        assert!(trace.for_client("carol").is_none());
    }
}
