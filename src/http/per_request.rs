//! What every public request gets, in one middleware (each layer of its own would box and
//! poll the request once more): a request id, taken from `X-Request-Id` when it is sane and
//! made up otherwise, echoed in the answer and attached to every log line of the request; and
//! a time limit, body included, so a client trickling a body cannot hold a request open.
//! (WebSocket sessions run after their upgrade answer, outside it.) A handler that panics is
//! answered `500` with a problem document and counted (`callrelay_http_panics_total`), instead
//! of hyper dropping the connection with the request unanswered; the panic's message is
//! logged with the request id.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use prometheus_client::metrics::counter::Counter;
use tracing::Instrument;

use super::problem::Problem;

pub const HEADER: &str = "x-request-id";

fn acceptable(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A new id: 16 random hex digits chosen at start-up, then a counter. Unique per process and,
/// with overwhelming odds, across replicas; no random numbers drawn per request.
fn made_up() -> String {
    static PREFIX: LazyLock<String> =
        LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_owned());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}{:016x}", *PREFIX, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What the middleware needs: the time limit (`limits.request_timeout_ms`) and where panics
/// are counted.
#[derive(Clone)]
pub struct Settings {
    pub limit: Duration,
    pub panics: Counter,
}

/// What a panic said, when it said it with a string (as `panic!`, `unwrap` and `expect` do).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

pub async fn layer(
    State(Settings { limit, panics }): State<Settings>,
    request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(made_up);
    let method = request.method().clone();
    // The span carries only the id (and, with traces, the trace id): every field is formatted
    // when the span opens, on every request, whether or not anything is logged inside it.
    let span = tracing::info_span!("request", request_id = %id, trace_id = tracing::field::Empty);
    if crate::telemetry::traces::on() {
        traced(&span, &request);
    }
    let path = tracing::enabled!(tracing::Level::DEBUG).then(|| request.uri().path().to_owned());
    let handled = AssertUnwindSafe(next.run(request).instrument(span.clone())).catch_unwind();
    let mut response = match tokio::time::timeout(limit, handled).await {
        Ok(Ok(response)) => response,
        Ok(Err(payload)) => {
            panics.inc();
            span.in_scope(|| {
                tracing::error!(%method, panic = panic_message(&*payload), "a handler panicked; answered 500");
            });
            Problem::internal().into_response()
        }
        Err(_) => Problem::request_timeout(limit).into_response(),
    };
    if crate::telemetry::traces::on() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.set_attribute(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        );
    }
    if let Some(path) = path {
        span.in_scope(|| {
            tracing::debug!(%method, path, status = response.status().as_u16(), "answered");
        });
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// With traces on: the request joins its caller's trace (`traceparent`), is described as the
/// server side of an HTTP call, and its log lines carry the trace id.
fn traced(span: &tracing::Span, request: &Request) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    crate::telemetry::traces::continue_trace(span, request.headers());
    span.set_attribute("http.request.method", request.method().to_string());
    span.set_attribute("url.path", request.uri().path().to_owned());
    if let Some(trace_id) = crate::telemetry::traces::sampled_trace_id(span) {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;
    use prometheus_client::metrics::gauge::Gauge;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// One answer off a keep-alive connection: status, headers (lowercased names) and body.
    async fn answer(
        reader: &mut BufReader<tokio::net::TcpStream>,
    ) -> (u16, Vec<(String, String)>, String) {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.unwrap();
        (status, headers, String::from_utf8(body).unwrap())
    }

    /// A route that panics exists only in this test build; the middleware, the problem mapping
    /// and the listener's HTTP/1.1 loop are the ones callrelay serves with.
    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_the_connection_lives_on() {
        let panics = Counter::default();
        let router = Router::new()
            .route(
                "/panic",
                get(|| async {
                    if true {
                        panic!("a handler bug");
                    }
                    "unreachable"
                }),
            )
            .route("/ok", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn_with_state(
                Settings {
                    limit: Duration::from_secs(5),
                    panics: panics.clone(),
                },
                layer,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let limits = crate::config::from_toml_str("").unwrap().limits;
        let server = tokio::spawn(crate::http::server::serve(
            listener,
            router,
            limits,
            Gauge::default(),
            shutdown.clone(),
        ));

        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut reader = BufReader::new(stream);
        reader
            .get_mut()
            .write_all(b"GET /panic HTTP/1.1\r\nhost: test\r\nx-request-id: req-1\r\n\r\n")
            .await
            .unwrap();
        let (status, headers, body) = answer(&mut reader).await;
        assert_eq!(status, 500);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("content-type"), Some("application/problem+json"));
        assert_eq!(header("x-request-id"), Some("req-1"));
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["type"], "urn:callrelay:problem:internal-error");
        assert_eq!(problem["status"], 500);
        assert!(!body.contains("a handler bug"), "{body}");
        assert_eq!(panics.get(), 1);

        // The same connection answers the next request.
        reader
            .get_mut()
            .write_all(b"GET /ok HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let (status, _, body) = answer(&mut reader).await;
        assert_eq!((status, body.as_str()), (200, "fine"));
        assert_eq!(panics.get(), 1);

        shutdown.cancel();
        drop(reader);
        server.await.unwrap();
    }
}
