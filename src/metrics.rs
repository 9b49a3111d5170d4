//! Prometheus metrics, served on the admin listener's `/metrics`: callrelay's own, prefixed
//! `callrelay_`, and the process's (`process_…`, the names every Prometheus client library
//! uses, so that existing dashboards and alerts work unchanged).

mod process;

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// A ringing rule that kept a target from being sent to (`channels::Skip`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub rule: &'static str,
}

/// Events received (status callbacks and Event Streams): `source` is `status_callback` or
/// `event_streams`; `outcome` is `accepted`, `duplicate`, or the refusal's label as for
/// webhooks (`bad_request`, `challenged`, `forbidden`, `unavailable`, `too_large`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub source: &'static str,
    pub outcome: &'static str,
}

/// Events forwarded to an account's target: `outcome` is `delivered`, `retried` (an attempt
/// that failed and will be tried again) or `failed` (set aside after the retry budget).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    pub account: String,
    pub target: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub channel: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BindingOpLabels {
    pub operation: &'static str,
    pub status: u16,
}

/// The `outcome` label of `callrelay_webhooks_total`. `challenged` is the `401` that asks
/// for HTTP Basic credentials: Twilio's first try at every webhook of such an account.
pub const WEBHOOK_OUTCOMES: [&str; 10] = [
    "delivered",
    "duplicate",
    "in_progress",
    "not_found",
    "bad_request",
    "too_large",
    "challenged",
    "forbidden",
    "failed",
    "unavailable",
];
pub const CHANNELS: [&str; 3] = ["websocket", "apns", "fcm"];
pub const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "removed", "failed"];
/// The `outcome` label of `callrelay_bus_acknowledgements_total`: what became of a delivery
/// handed to another replica, as the asking replica saw it. `queued`, `full` and `gone` are
/// the holder's answers; `timeout`: none by the deadline; `not_listening`: the publish
/// reached no subscriber; `error`: the publish failed.
pub const BUS_OUTCOMES: [&str; 6] = [
    "queued",
    "full",
    "gone",
    "timeout",
    "not_listening",
    "error",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    pub app: String,
    pub channel: &'static str,
    /// `success`, the push service's reason or error code, or callrelay's own
    /// (`timeout`, `connection_error`, `payload_too_large`).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

/// A store call: the `Store` method's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreErrorLabels {
    pub operation: &'static str,
    /// `unavailable` (unreachable, timed out) or `corrupt` (unreadable data).
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

/// The commit this binary was built from: `CALLRELAY_REVISION` at compile time (the
/// Dockerfile passes its `REVISION` build argument), `unknown` otherwise.
pub const REVISION: &str = match option_env!("CALLRELAY_REVISION") {
    Some(r) if !r.is_empty() => r,
    _ => "unknown",
};

fn latency_histogram() -> Histogram {
    // 0.25 ms to ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub webhooks: Family<OutcomeLabels, Counter>,
    pub webhook_duration: Histogram,
    pub events: Family<EventLabels, Counter>,
    pub event_forwards: Family<ForwardLabels, Counter>,
    /// Open event feeds (`GET /v1/events/ws`).
    pub event_subscribers: Gauge<i64, AtomicI64>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub delivery_duration: Family<ChannelLabels, Histogram>,
    pub live_sockets: Gauge<i64, AtomicI64>,
    /// Connections the public listener is serving; an upgraded WebSocket moves from here to
    /// `live_sockets`.
    pub http_connections: Gauge<i64, AtomicI64>,
    pub binding_requests: Family<BindingOpLabels, Counter>,
    /// Answers from Apple and Google (and callrelay's own verdicts), per app.
    pub push_results: Family<PushLabels, Counter>,
    /// Provider tokens signed (APNs) and access tokens fetched (FCM), per app.
    pub push_auth_tokens: Family<AppLabels, Counter>,
    /// When each certificate-auth APNs app's client certificate expires (Unix seconds).
    pub apns_certificate_expiry: Family<AppLabels, Gauge<i64, AtomicI64>>,
    /// Dedupe outcomes not recorded because the writer's queue was full (their claims lapse
    /// by themselves).
    pub dedupe_outcomes_dropped: Counter,
    /// Call-trace entries by outcome: `written`, `dropped` (the writer's queue was full),
    /// `failed` (the store refused the batch).
    pub call_trace_entries: Family<OutcomeLabels, Counter>,
    /// Deliveries handed to another replica over the bus, by outcome (`BUS_OUTCOMES`).
    pub bus_acknowledgements: Family<OutcomeLabels, Counter>,
    /// Notifications a socket already had, acknowledged without a second frame (a retry after
    /// a lost acknowledgement).
    pub websocket_repeats: Counter,
    /// Acknowledgements from sockets opened with `ack=1`, by outcome: `acknowledged`,
    /// `repeated` (acknowledged already), `unknown` (no such notification sent recently),
    /// `invalid` (not an acknowledgement).
    pub websocket_acks: Family<OutcomeLabels, Counter>,
    /// Targets not sent to, by the ringing rule that kept them back (`channels::Skip`).
    pub skipped_targets: Family<SkipLabels, Counter>,
    /// Devices reached socket first (`delivery = "prefer_websocket"`), by outcome:
    /// `acknowledged` (push skipped) or `pushed` (no acknowledgement in time).
    pub socket_first: Family<OutcomeLabels, Counter>,
    /// Frames dropped because they waited past the ringing window: never delivered late.
    pub websocket_late_frames: Counter,
    /// Notifications replayed to clients that reconnected with `replay_since`.
    pub websocket_replayed: Counter,
    /// `server.webhook_deadline_ms`, in seconds, for alerts on latency near it.
    pub webhook_deadline: Gauge<f64, AtomicU64>,
    /// `limits.max_connections` and `limits.max_sockets`, beside the gauges they cap.
    pub http_connections_limit: Gauge<i64, AtomicI64>,
    pub websocket_connections_limit: Gauge<i64, AtomicI64>,
    /// Requests whose handler panicked; each was answered `500`.
    pub http_panics: Counter,
    /// Time each store call took (errors and timeouts included), by operation.
    pub store_duration: Family<StoreLabels, Histogram>,
    pub store_errors: Family<StoreErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("callrelay");
        registry.register(
            "build",
            "The version and revision callrelay was built from",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                revision: REVISION,
            }),
        );
        let webhooks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Call-notification webhooks by outcome",
            webhooks.clone(),
        );
        let webhook_duration = latency_histogram();
        registry.register(
            "webhook_duration_seconds",
            "Time from receiving a webhook to answering it",
            webhook_duration.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Status callbacks and Event Streams events received, by source and outcome (each event of a batch counts)",
            events.clone(),
        );
        let event_forwards = Family::<ForwardLabels, Counter>::default();
        registry.register(
            "event_forwards",
            "Attempts to forward events to an account's targets, by outcome (delivered, retried, failed: set aside after events.forward_retry_secs)",
            event_forwards.clone(),
        );
        let event_subscribers = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "event_subscribers",
            "Open event feeds (GET /v1/events/ws)",
            event_subscribers.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Deliveries by channel and outcome (delivered, removed, failed)",
            deliveries.clone(),
        );
        let delivery_duration = Family::<ChannelLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "delivery_duration_seconds",
            "Time one delivery took, by channel",
            delivery_duration.clone(),
        );
        let live_sockets = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "websocket_connections",
            "WebSocket connections held by this replica",
            live_sockets.clone(),
        );
        let http_connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_connections",
            "Connections the public listener is serving (limits.max_connections); upgraded WebSockets count in websocket_connections instead",
            http_connections.clone(),
        );
        let binding_requests = Family::<BindingOpLabels, Counter>::default();
        registry.register(
            "binding_requests",
            "Bindings API requests by operation and status",
            binding_requests.clone(),
        );
        let push_results = Family::<PushLabels, Counter>::default();
        registry.register(
            "push_results",
            "Push attempts by app and result (success, the service's reason, or timeout/connection_error/payload_too_large)",
            push_results.clone(),
        );
        let push_auth_tokens = Family::<AppLabels, Counter>::default();
        registry.register(
            "push_auth_tokens",
            "APNs provider tokens signed and FCM access tokens fetched, by app",
            push_auth_tokens.clone(),
        );
        let apns_certificate_expiry = Family::<AppLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "apns_certificate_expiry_timestamp_seconds",
            "Expiry of each certificate-auth APNs app's client certificate (Unix time)",
            apns_certificate_expiry.clone(),
        );
        // Both are the process's, whichever `Metrics` shows them: one log writer, one throttle.
        registry.register(
            "log_lines_suppressed",
            "Authentication-failure log lines left out by the rate limit, by reason",
            crate::telemetry::throttle::auth_failures()
                .suppressed()
                .clone(),
        );
        registry.register_collector(Box::new(LogLinesDropped));
        let dedupe_outcomes_dropped = Counter::default();
        registry.register(
            "dedupe_outcomes_dropped",
            "Dedupe outcomes dropped because the store's write queue was full; each claim lapses by itself after the webhook deadline",
            dedupe_outcomes_dropped.clone(),
        );
        let call_trace_entries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "call_trace_entries",
            "Call-trace entries by outcome: written, dropped (the writer's queue was full), failed (the store refused the batch)",
            call_trace_entries.clone(),
        );
        let bus_acknowledgements = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "bus_acknowledgements",
            "Deliveries to sockets held by other replicas, by outcome: the holder's answer (queued, full, gone), or timeout, not_listening, error",
            bus_acknowledgements.clone(),
        );
        let websocket_repeats = Counter::default();
        registry.register(
            "websocket_repeats",
            "Notifications handed to a socket that already had them (same twi_message_id), acknowledged without a second frame",
            websocket_repeats.clone(),
        );
        let websocket_acks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "websocket_acks",
            "Acknowledgements from sockets opened with ack=1, by outcome: acknowledged, repeated, unknown, invalid",
            websocket_acks.clone(),
        );
        let skipped_targets = Family::<SkipLabels, Counter>::default();
        registry.register(
            "skipped_targets",
            "Targets not sent to, by the ringing rule that kept them back: not_a_call, older_binding, socket_acknowledged",
            skipped_targets.clone(),
        );
        let socket_first = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "socket_first_deliveries",
            "Devices reached socket first (delivery = prefer_websocket), by outcome: acknowledged (push skipped) or pushed (no acknowledgement within websocket.ack_timeout_ms)",
            socket_first.clone(),
        );
        let websocket_late_frames = Counter::default();
        registry.register(
            "websocket_late_frames",
            "Frames dropped because they waited past websocket.ringing_window_secs: never delivered late",
            websocket_late_frames.clone(),
        );
        let websocket_replayed = Counter::default();
        registry.register(
            "websocket_replayed",
            "Call notifications replayed to clients that reconnected with replay_since",
            websocket_replayed.clone(),
        );
        let webhook_deadline = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "webhook_deadline_seconds",
            "server.webhook_deadline_ms: the time a webhook's answer may take",
            webhook_deadline.clone(),
        );
        let http_connections_limit = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_connections_limit",
            "limits.max_connections: the most connections the public listener serves at once",
            http_connections_limit.clone(),
        );
        let websocket_connections_limit = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "websocket_connections_limit",
            "limits.max_sockets: the most WebSocket connections this replica holds",
            websocket_connections_limit.clone(),
        );
        let http_panics = Counter::default();
        registry.register(
            "http_panics",
            "Requests whose handler panicked, answered with a 500 problem document",
            http_panics.clone(),
        );
        let store_duration = Family::<StoreLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "store_operation_duration_seconds",
            "Time each store call took, errors and timeouts included, by operation",
            store_duration.clone(),
        );
        let store_errors = Family::<StoreErrorLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Store calls that failed, by operation and error (unavailable, corrupt)",
            store_errors.clone(),
        );
        // Every known series exists from the start, so rates and alerts see zeros, not gaps.
        for outcome in WEBHOOK_OUTCOMES {
            let _ = webhooks.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in BUS_OUTCOMES {
            let _ = bus_acknowledgements.get_or_create(&OutcomeLabels { outcome });
        }
        for channel in CHANNELS {
            for outcome in DELIVERY_OUTCOMES {
                let _ = deliveries.get_or_create(&DeliveryLabels { channel, outcome });
            }
        }
        Self {
            registry: root,
            webhooks,
            webhook_duration,
            events,
            event_forwards,
            event_subscribers,
            deliveries,
            delivery_duration,
            live_sockets,
            http_connections,
            binding_requests,
            push_results,
            push_auth_tokens,
            apns_certificate_expiry,
            dedupe_outcomes_dropped,
            call_trace_entries,
            bus_acknowledgements,
            websocket_repeats,
            websocket_acks,
            skipped_targets,
            socket_first,
            websocket_late_frames,
            websocket_replayed,
            webhook_deadline,
            http_connections_limit,
            websocket_connections_limit,
            http_panics,
            store_duration,
            store_errors,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// `callrelay_log_lines_dropped_total`: read from the log writer at each scrape, since the
/// writer keeps the count itself.
#[derive(Debug)]
struct LogLinesDropped;

impl Collector for LogLinesDropped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(crate::telemetry::dropped_lines());
        let metric = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because the log writer fell behind",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_counters_are_exposed() {
        let text = Metrics::new().render();
        assert!(
            text.contains("# TYPE callrelay_log_lines_dropped counter"),
            "{text}"
        );
        assert!(
            text.contains("\ncallrelay_log_lines_dropped_total "),
            "{text}"
        );
        // Series of suppressed lines appear with the first line left out.
        let throttle = crate::telemetry::throttle::auth_failures();
        while throttle.admit("metrics_test").is_some() {}
        let text = Metrics::new().render();
        assert!(
            text.contains("callrelay_log_lines_suppressed_total{reason=\"metrics_test\"} 1"),
            "{text}"
        );
    }
}
