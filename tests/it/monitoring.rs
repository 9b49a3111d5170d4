//! The Grafana dashboard and the alerting rules name only metrics callrelay exports, with
//! labels those metrics have; and the metrics operators rely on are served.
//!
//! A metric counts as exported when a live scrape of a replica that has answered a webhook and
//! a bindings request shows it, or when `src/metrics.rs` registers it: families whose series
//! appear only once a push app has answered (push results, credentials, certificate expiry)
//! are not in a scrape of a replica without push services.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::helpers::*;

const MONITORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/components/monitoring");

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `callrelay_…` and `process_…` name in the text: the rules' expressions and
/// descriptions, the dashboard's queries and descriptions.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = (bytes[i..].starts_with(b"callrelay_") || bytes[i..].starts_with(b"process_"))
            && (i == 0 || !word(bytes[i - 1]));
        if starts {
            let end = (i..bytes.len())
                .find(|&j| !word(bytes[j]))
                .unwrap_or(bytes.len());
            // `process_*` in prose is a pattern, not a name.
            if !text[i..end].ends_with('_') {
                names.insert(text[i..end].to_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Label names used in `metric{label="…", …}` selectors, by metric.
fn selector_labels(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in referenced(text) {
        for (at, _) in text.match_indices(&format!("{name}{{")) {
            let rest = &text[at + name.len() + 1..];
            let Some(body) = rest.split('}').next() else {
                continue;
            };
            for matcher in body.split(',') {
                let label = matcher
                    .split(['=', '!'])
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .trim_matches(['\\', '"']);
                if !label.is_empty() {
                    out.entry(name.clone())
                        .or_default()
                        .insert(label.to_owned());
                }
            }
        }
    }
    out
}

/// Sample names a family of this type produces.
fn samples(family: &str, kind: &str) -> Vec<String> {
    match kind {
        "counter" => vec![format!("{family}_total")],
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{family}{s}"))
            .collect(),
        "info" => vec![format!("{family}_info")],
        _ => vec![family.to_owned()],
    }
}

/// Sample names of the scrape, with the label names each has.
fn scraped(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (family, kind) = (words.next().unwrap(), words.next().unwrap());
            for name in samples(family, kind) {
                out.entry(name).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap();
            let labels = out.entry(line[..name_end].to_owned()).or_default();
            if line[name_end..].starts_with('{') {
                let body = &line[name_end + 1..line.find('}').unwrap()];
                for pair in body.split(',') {
                    labels.insert(pair.split('=').next().unwrap().to_owned());
                }
            }
        }
    }
    out
}

/// Families `src/metrics.rs` registers (under the `callrelay_` prefix), with every name they
/// can produce whatever their type.
fn registered() -> BTreeSet<String> {
    let source = read(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs"));
    let mut names = BTreeSet::new();
    for call in ["register(", "encode_descriptor("] {
        for (at, _) in source.match_indices(call) {
            let rest = &source[at + call.len()..];
            let Some(open) = rest.find('"') else { continue };
            let family = rest[open + 1..].split('"').next().unwrap();
            for kind in ["counter", "histogram", "info", "gauge"] {
                names.extend(samples(&format!("callrelay_{family}"), kind));
            }
        }
    }
    names
}

#[tokio::test]
async fn the_dashboard_and_the_rules_name_only_exported_metrics_and_labels() {
    let app = spawn_with(TestConfig::redis()).await;
    let mut bob = app.connect_ws("bob").await;
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);
    assert!(bob.next_text(Duration::from_secs(5)).await.is_some());
    let listed = app
        .api(
            Method::GET,
            "/v1/bindings?identity=bob",
            &token("bob"),
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let scrape = scraped(&app.metrics().await);
    let registered = registered();

    let rules = read(&format!("{MONITORING}/prometheusrule.yaml"));
    let dashboard = read(&format!("{MONITORING}/callrelay-dashboard.json"));
    // The dashboard is JSON Grafana can load, with a query in every panel but the rows.
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let panels = parsed["panels"].as_array().unwrap();
    assert!(panels.len() > 10);
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert!(
            panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "{}",
            panel["title"]
        );
    }

    for (file, text) in [("prometheusrule.yaml", &rules), ("dashboard", &dashboard)] {
        let names = referenced(text);
        assert!(names.len() > 10, "{file}: {names:?}");
        for name in &names {
            assert!(
                scrape.contains_key(name) || registered.contains(name),
                "{file} names {name}, which callrelay does not export"
            );
        }
        // Labels Prometheus adds to every target, and the histogram's own.
        let target_labels = ["namespace", "job", "instance", "le"];
        for (name, labels) in selector_labels(text) {
            let Some(has) = scrape.get(&name).filter(|l| !l.is_empty()) else {
                continue; // no series in this scrape to compare with
            };
            for label in labels {
                assert!(
                    has.contains(&label) || target_labels.contains(&label.as_str()),
                    "{file} selects {name} by {label}, a label it does not have ({has:?})"
                );
            }
        }
    }
    drop(bob);
    app.stop().await;
}

/// The process, build, limit and store metrics are served with plausible values.
#[tokio::test]
async fn process_build_limit_and_store_metrics_are_served() {
    let app = spawn_with(TestConfig::redis()).await;
    assert_eq!(app.notify("nobody").await.status, StatusCode::NOT_FOUND);
    let text = app.metrics().await;
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    #[cfg(target_os = "linux")]
    {
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }
    assert!(
        text.contains(&format!(
            "callrelay_build_info{{version=\"{}\",revision=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // The test configuration's deadline and the default caps.
    assert_eq!(value("callrelay_webhook_deadline_seconds"), 3.0);
    assert_eq!(value("callrelay_http_connections_limit"), 50_000.0);
    assert_eq!(value("callrelay_websocket_connections_limit"), 20_000.0);
    // The webhook's lookup went through the metered store, once, and did not fail.
    assert_eq!(
        value("callrelay_store_operation_duration_seconds_count{operation=\"lookup\"}"),
        1.0
    );
    assert_eq!(
        value("callrelay_store_errors_total{operation=\"lookup\",error=\"unavailable\"}"),
        0.0
    );
    app.stop().await;
}

/// A store call that fails is counted against its operation.
#[tokio::test]
async fn store_errors_are_counted_by_operation() {
    let mut redis = crate::helpers::redis::RedisServer::start();
    let app = spawn_with(TestConfig::with_engine(Engine::RedisAt(redis.url()))).await;
    redis.stop();
    assert_eq!(
        app.notify("bob").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let text = app.metrics().await;
    assert!(
        text.contains(
            "callrelay_store_errors_total{operation=\"lookup\",error=\"unavailable\"} 1\n"
        ),
        "{text}"
    );
    app.stop().await;
}
