//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when `traces.otlp_endpoint` is set.
//!
//! The spans are ordinary `tracing` spans: `request` (every public request, info), and under a
//! call notification `webhook`, `store.lookup`, one `deliver` per target and, for a socket held
//! by another replica, `bus.acknowledgement` (debug, so the text and JSON logs show them only
//! at debug). A layer of their own, with a filter of its own, turns callrelay's spans into
//! OpenTelemetry spans and its info-and-above events into span events; the log layer's filter
//! is not changed by it. Off, nothing is installed: the debug spans' call sites stay disabled
//! and cost a branch.
//!
//! A sampled request's trace id is recorded on its `request` span (`trace_id`), so every log
//! line of the request carries it. A `traceparent` header (W3C Trace Context) makes the
//! request part of the caller's trace, and the caller's sampling decision stands.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

use super::otlp_client::RuntimeClient;
use crate::config::TracesConfig;

/// How long one export may take before the processor gives up on it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Set once traces are installed: the request middleware asks before doing any trace work.
static ON: OnceLock<()> = OnceLock::new();

/// Whether this process exports traces.
pub fn on() -> bool {
    ON.get().is_some()
}

/// The exporter, the provider and the layer that feeds it; None when traces are off.
pub fn install<S>(
    config: &TracesConfig,
) -> Result<Option<(SdkTracerProvider, impl Layer<S> + Send + Sync)>, String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(RuntimeClient::new(EXPORT_TIMEOUT)?)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("traces.otlp_endpoint: {e}"))?;
    let ratio = f64::from(config.sample_percent) / 100.0;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build();
    let tracer = provider.tracer("callrelay");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(|meta| {
            meta.target().starts_with("callrelay")
                && if meta.is_span() {
                    *meta.level() <= Level::DEBUG
                } else {
                    *meta.level() <= Level::INFO
                }
        }));
    Ok(Some((provider, layer)))
}

/// Called once the layer `install` made is part of the process's subscriber.
pub(super) fn mark_installed() {
    let _ = ON.set(());
}

/// How long shutdown waits for the last export: a collector that does not answer must not
/// hold the process past its termination grace.
const LAST_EXPORT: Duration = Duration::from_secs(5);

/// Sends what is buffered and stops the exporter; blocks, so it runs off the runtime's
/// threads (the exports it waits for run on them).
pub async fn shut_down(provider: SdkTracerProvider) {
    let done =
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(LAST_EXPORT)).await;
    if let Ok(Err(e)) = done {
        eprintln!("callrelay: traces not all exported at shutdown: {e}");
    }
}

/// Joins `span` to the trace a `traceparent` header names, if any.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if headers.contains_key("traceparent") {
        let parent =
            TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
        let _ = span.set_parent(parent);
    }
}

/// The trace id of `span`, when its trace is sampled (32 hex digits).
pub fn sampled_trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    (span_context.is_valid() && span_context.is_sampled())
        .then(|| span_context.trace_id().to_string())
}
