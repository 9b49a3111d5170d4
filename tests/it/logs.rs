//! Logs an attacker cannot flood: authentication failures are logged at a bounded rate per
//! reason, the lines left out are counted, and no line carries a query string (where
//! `bodySHA256` and browsers' `access_token` travel).

use std::time::{Duration, Instant};

use callrelay::telemetry::throttle::{BURST, PER_SECOND};
use futures_util::future::join_all;

use crate::helpers::*;

const BURST_SIZE: usize = 300;

/// The value of a counter series in a Prometheus text exposition (0 when absent).
fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_burst_of_bad_signatures_logs_a_bounded_number_of_lines() {
    let app = ProcessApp::start_with_env(
        &TestConfig::default(),
        &[("CALLRELAY__LOG__FORMAT", "json"), ("RUST_LOG", "info")],
    )
    .await;
    let http = reqwest::Client::new();
    let send = |i: usize| {
        let body = payload(ACCOUNT, "bob");
        let url = format!("{}{}", app.base, webhook_path(&body));
        http.post(&url)
            .header("x-twilio-signature", sign(&format!("guess-{i}"), &url))
            .body(body)
            .send()
    };
    let started = Instant::now();
    // In waves of 20 at once, as a flood would arrive.
    for wave in (0..BURST_SIZE).collect::<Vec<_>>().chunks(20) {
        for r in join_all(wave.iter().map(|i| send(*i))).await {
            assert_eq!(r.unwrap().status(), reqwest::StatusCode::FORBIDDEN);
        }
    }
    let elapsed = started.elapsed();

    let logs = app.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("webhook authentication failed"))
        .collect();
    // The bucket: a burst, then the steady rate for as long as the flood lasted.
    let allowed = BURST + (elapsed.as_secs_f64() * PER_SECOND).ceil() + 1.0;
    assert!(!lines.is_empty(), "failures are still logged");
    assert!(
        lines.len() as f64 <= allowed,
        "{} lines logged for {BURST_SIZE} failures in {elapsed:?} (at most {allowed})",
        lines.len()
    );
    for line in &lines {
        assert!(
            !line.contains("bodySHA256="),
            "a query string is logged: {line}"
        );
    }
    // A line after a gap says how many like it were left out.
    let reported: u64 = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["suppressed"].as_u64())
        .sum();

    let metrics = reqwest::get(format!("{}/metrics", app.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let suppressed = counter(
        &metrics,
        "callrelay_log_lines_suppressed_total{reason=\"webhook_signature_mismatch\"}",
    );
    assert_eq!(
        suppressed as usize,
        BURST_SIZE - lines.len(),
        "every failure is either logged or counted:\n{metrics}"
    );
    assert!(reported <= suppressed as u64);
    assert_eq!(
        counter(&metrics, "callrelay_webhooks_total{outcome=\"forbidden\"}") as usize,
        BURST_SIZE
    );
    // The writer kept up here; the counter exists for when it does not.
    assert!(
        metrics.contains("callrelay_log_lines_dropped_total 0"),
        "{metrics}"
    );

    // Other reasons have buckets of their own: an unsigned request still gets its line.
    let body = payload(ACCOUNT, "bob");
    let r = http
        .post(format!("{}{}", app.base, webhook_path(&body)))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.logs().contains("no X-Twilio-Signature header")
        })
        .await
    );
}

/// Refused WebSocket tokens, also in the query string as browsers send them: rate-limited
/// like webhook failures, and the token never logged.
#[tokio::test]
async fn a_burst_of_refused_socket_tokens_logs_a_bounded_number_of_lines() {
    let app = ProcessApp::start_with_env(
        &TestConfig::default(),
        &[("CALLRELAY__LOG__FORMAT", "json"), ("RUST_LOG", "info")],
    )
    .await;
    let forged = mint(
        ACCOUNT,
        API_KEY,
        "not-the-secret",
        "mallory",
        Duration::from_secs(600),
    );
    let started = Instant::now();
    const ATTEMPTS: usize = 60;
    for _ in 0..ATTEMPTS {
        let refused =
            WsClient::connect(&app.base, "", Some(&format!("access_token={forged}"))).await;
        assert!(refused.is_err());
    }
    let elapsed = started.elapsed();
    let logs = app.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WebSocket authentication failed"))
        .collect();
    let allowed = BURST + (elapsed.as_secs_f64() * PER_SECOND).ceil() + 1.0;
    assert!(!lines.is_empty());
    assert!(
        lines.len() as f64 <= allowed,
        "{} lines for {ATTEMPTS} refusals in {elapsed:?}",
        lines.len()
    );
    assert!(!logs.contains(&forged), "the token is logged");
    assert!(
        !logs.contains("access_token="),
        "the query string is logged"
    );
}
