//! Traces: a call notification delivered across replicas is one trace (request, webhook,
//! store lookup, delivery, the replica bus's acknowledgement), exported over OTLP/HTTP to a
//! collector the test runs; the request's JSON log lines carry its request and trace ids at
//! the top level; a request inside a caller's trace (`traceparent`) joins it; spans still
//! buffered at SIGTERM are exported before the process exits.

use std::collections::BTreeMap;
use std::time::Duration;

use callrelay_testkit::otlp::{Collector, ReceivedSpan};
use reqwest::StatusCode;

use crate::helpers::ws::WsClient;
use crate::helpers::*;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    f: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}\nall spans: {spans:#?}");
    found[0]
}

fn attr<'a>(span: &'a ReceivedSpan, key: &str) -> &'a str {
    span.attributes.get(key).map_or("", String::as_str)
}

// Two worker threads: the collector must answer while the test waits for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_call_is_one_trace_and_its_log_lines_name_it() {
    let collector = Collector::start().await;
    let traced = TestConfig {
        extra: format!("[traces]\notlp_endpoint = \"{}\"\n", collector.url()),
        ..TestConfig::redis()
    };
    // The socket's replica shares the store and exports nothing.
    let holder_config = TestConfig {
        prefix: traced.prefix.clone(),
        ..TestConfig::redis()
    };
    let json_logs = [("CALLRELAY__LOG__FORMAT", "json"), ("RUST_LOG", "info")];
    let mut front = ProcessApp::start_with_env(&traced, &json_logs).await;
    let holder = ProcessApp::start(&holder_config).await;
    let mut socket = WsClient::connect(&holder.base, &token("bob"), None)
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let webhook = |identity: &str, request_id: &str, traceparent: Option<String>| {
        let body = payload(ACCOUNT, identity);
        let url = format!("{}{}", front.base, webhook_path(&body));
        let mut request = http
            .post(&url)
            .header("x-twilio-signature", sign(AUTH_TOKEN, &url))
            .header("x-request-id", request_id)
            .body(body.clone());
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        async move { (request.send().await.unwrap().status(), body) }
    };
    // The socket's presence may take a moment to reach the store.
    let mut delivered = None;
    for attempt in 0..50 {
        let (status, body) = webhook("bob", &format!("traced-{attempt}"), None).await;
        if status == StatusCode::OK {
            delivered = Some((format!("traced-{attempt}"), body));
            break;
        }
        assert_eq!(status, StatusCode::NOT_FOUND);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (request_id, body) = delivered.expect("the socket was reached");
    let frame = socket.next_text(Duration::from_secs(5)).await.unwrap();
    assert_eq!(frame.as_bytes(), body.as_slice(), "delivered unmodified");

    let (status, _) = webhook(
        "nobody",
        "in-callers-trace",
        Some(format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The batch processor exports every few seconds; SIGTERM must flush what it holds.
    assert!(front.terminate().success());
    let spans = collector.spans();
    assert!(
        collector
            .content_types()
            .iter()
            .all(|t| t == "application/x-protobuf"),
        "{:?}",
        collector.content_types()
    );

    let request = one(&spans, "the delivered request", |s| {
        s.name == "request" && attr(s, "request_id") == request_id
    });
    assert_eq!(request.parent_span_id, "", "a root span");
    assert_eq!(attr(request, "http.request.method"), "POST");
    assert_eq!(attr(request, "url.path"), "/v1/twilio/call-notifications");
    assert_eq!(attr(request, "http.response.status_code"), "200");
    assert_eq!(
        request.resource.get("service.name").map(String::as_str),
        Some("callrelay")
    );
    let trace = &request.trace_id;
    let in_trace: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| &s.trace_id == trace)
        .cloned()
        .collect();
    let child_of = |parent: &ReceivedSpan, name: &str| {
        one(&in_trace, name, |s| {
            s.name == name && s.parent_span_id == parent.span_id
        })
        .clone()
    };
    let webhook_span = child_of(request, "webhook");
    assert_eq!(attr(&webhook_span, "account_sid"), ACCOUNT);
    assert_eq!(attr(&webhook_span, "identity"), "bob");
    assert_eq!(attr(&webhook_span, "outcome"), "delivered");
    let message_id: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        attr(&webhook_span, "twi_message_id"),
        message_id["twi_message_id"].as_str().unwrap()
    );
    // The relayed line is an event of the webhook span.
    assert!(
        webhook_span
            .events
            .iter()
            .any(|(name, _)| name == "call notification relayed"),
        "{webhook_span:#?}"
    );
    child_of(&webhook_span, "store.lookup");
    let deliver = child_of(&webhook_span, "deliver");
    assert_eq!(attr(&deliver, "channel"), "websocket");
    assert_eq!(attr(&deliver, "outcome"), "delivered");
    let ack = child_of(&deliver, "bus.acknowledgement");
    assert_eq!(attr(&ack, "outcome"), "queued");
    assert_eq!(attr(&ack, "replica"), attr(&deliver, "replica"));

    // A request inside the caller's trace is part of it, under the caller's span.
    let joined = one(&spans, "the request in the caller's trace", |s| {
        s.name == "request" && attr(s, "request_id") == "in-callers-trace"
    });
    assert_eq!(joined.trace_id, CALLER_TRACE);
    assert_eq!(joined.parent_span_id, CALLER_SPAN);
    assert_eq!(attr(joined, "http.response.status_code"), "404");

    // The JSON log lines: the request's ids are top-level members.
    let logs = front.logs();
    let lines: Vec<BTreeMap<String, serde_json::Value>> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let relayed = lines
        .iter()
        .find(|l| l.get("message").and_then(|m| m.as_str()) == Some("call notification relayed"))
        .unwrap_or_else(|| panic!("no relayed line in:\n{logs}"));
    assert_eq!(relayed["request_id"], request_id.as_str());
    assert_eq!(relayed["trace_id"], trace.as_str());
    assert!(!relayed.contains_key("span"), "{relayed:?}");
    let not_delivered = lines
        .iter()
        .find(|l| l.get("request_id").and_then(|m| m.as_str()) == Some("in-callers-trace"))
        .unwrap_or_else(|| panic!("no line of the joined request in:\n{logs}"));
    assert_eq!(not_delivered["trace_id"], CALLER_TRACE);
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_traced_and_lines_have_no_trace_id() {
    let app = ProcessApp::start_with_env(
        &TestConfig::default(),
        &[("CALLRELAY__LOG__FORMAT", "json"), ("RUST_LOG", "info")],
    )
    .await;
    let body = payload(ACCOUNT, "nobody");
    let url = format!("{}{}", app.base, webhook_path(&body));
    let r = reqwest::Client::new()
        .post(&url)
        .header("x-twilio-signature", sign(AUTH_TOKEN, &url))
        .header("x-request-id", "untraced")
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.logs().contains("\"request_id\":\"untraced\"")
        })
        .await,
        "{}",
        app.logs()
    );
    let logs = app.logs();
    assert!(!logs.contains("trace_id"), "{logs}");
}

/// A collector that accepts connections and never answers, then one that is gone: webhooks
/// are answered as ever, the failed exports are logged, and SIGTERM still ends the process
/// promptly (the last export is given a few seconds, not the collector's silence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_hangs_or_is_gone_costs_spans_not_webhooks() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let gone_url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    for (collector, what) in [(silent_url, "silent"), (gone_url, "gone")] {
        let config = TestConfig {
            extra: format!("[traces]\notlp_endpoint = \"{collector}\"\n"),
            ..TestConfig::default()
        };
        let mut app = ProcessApp::start_with_env(
            &config,
            &[
                // Export every 100 ms, so that exports are under way during the webhooks.
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("RUST_LOG", "info"),
            ],
        )
        .await;
        let mut socket = WsClient::connect(&app.base, &token("bob"), None)
            .await
            .unwrap();
        let http = reqwest::Client::new();
        for i in 0..40 {
            let body = payload(ACCOUNT, "bob");
            let url = format!("{}{}", app.base, webhook_path(&body));
            let status = http
                .post(&url)
                .header("x-twilio-signature", sign(AUTH_TOKEN, &url))
                .body(body)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, StatusCode::OK, "{what} collector, webhook {i}");
            assert!(socket.next_text(Duration::from_secs(5)).await.is_some());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if what == "gone" {
            assert!(
                eventually(Duration::from_secs(10), || async {
                    app.logs().contains("BatchSpanProcessor.ExportError")
                })
                .await,
                "a failed export is logged:\n{}",
                app.logs()
            );
        }
        let stopping = std::time::Instant::now();
        assert!(app.terminate().success());
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "{what} collector: shutdown took {:?}",
            stopping.elapsed()
        );
    }
    held.abort();
}
