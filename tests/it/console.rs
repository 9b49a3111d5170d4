//! The console in a real browser: headless Chromium (Debian's `chromium`, driven by
//! `tests/browser/console.mjs` with playwright-core) loads `/console` from a live callrelay,
//! looks up a call delivered to a socket and to the APNs mock, the callee's bindings and
//! sockets, and a room's ledger, sends a test notification, and reports what the page shows.
//! Screenshots are left in `target/console/` for a person to look at.
//!
//! Needs `chromium` (or `CHROMIUM=<path>`) and `npm ci --prefix tests/browser`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::calls::{call_sid, start, trace};
use crate::helpers::*;
use crate::rooms::{ROOM, base, consult, post_all};

fn browser() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the console test needs Chromium: `apt-get install chromium` (or set CHROMIUM to a Chromium or Chrome binary)"
    );
    chromium
}

fn driver() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "the console test needs playwright-core: run `npm ci --prefix tests/browser`"
    );
    dir.join("console.mjs")
}

#[tokio::test]
async fn the_console_shows_a_calls_trace_an_identity_and_a_room_in_chromium() {
    let (chromium, driver) = (browser(), driver());
    let s = start(TestConfig::default()).await;
    let binding = s.app.register_apns("bob", APNS_TOKEN).await;
    let mut ws = s.app.connect_ws("bob").await;
    let body = payload(ACCOUNT, "bob");
    let call = call_sid(&body);
    assert_eq!(s.app.webhook(body).await.status, 200);
    assert!(ws.next_text(Duration::from_secs(2)).await.is_some());
    let recorded = trace(&s.app, &call, 1).await;
    post_all(&s.app, &consult(ROOM, base())).await;

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("console.png");
    let output = tokio::process::Command::new("node")
        .arg(&driver)
        .env("CONSOLE_URL", format!("{}/console", s.app.admin))
        .env("ADMIN_KEY", ADMIN_KEY)
        .env("ACCOUNT_SID", ACCOUNT)
        .env("CALL_SID", &call)
        .env("IDENTITY", "bob")
        .env("ROOM_SID", ROOM)
        .env("EXPECT_TARGETS", "2")
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), output)
        .await
        .expect("the browser finishes within 90 s")
        .expect("node runs (is Node.js installed?)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "console.mjs failed: {stderr}");
    let shown: Value = serde_json::from_slice(output.stdout.trim_ascii()).unwrap_or_else(|e| {
        panic!(
            "console.mjs printed no JSON line ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    assert_eq!(shown["errors"], serde_json::json!([]), "{shown}");

    // The call's trace, as the page shows it: both targets, Apple's apns-id.
    assert_eq!(shown["call_sid"], call.as_str());
    assert_eq!(shown["call_identity"], "bob");
    assert_eq!(shown["notifications"], 1);
    assert_eq!(shown["answers"][0]["status"], 200);
    let targets = shown["targets"].as_array().unwrap();
    let apns = targets.iter().find(|t| t["channel"] == "apns").unwrap();
    assert_eq!(apns["outcome"], "delivered");
    assert_eq!(apns["binding"], binding.id.to_string().as_str());
    let recorded_apns = recorded["notifications"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["channel"] == "apns")
        .unwrap()["apns_id"]
        .clone();
    assert_eq!(apns["apns_id"], recorded_apns);
    let socket = targets
        .iter()
        .find(|t| t["channel"] == "websocket")
        .unwrap();
    assert_eq!(socket["outcome"], "delivered");
    assert_eq!(socket["replica"], s.app.node().as_str());

    // The identity: its binding (token shortened), its socket, its call.
    assert_eq!(shown["identity_bindings"], 1);
    assert_eq!(shown["identity_sockets"], 1);
    assert!(shown["identity_calls"].as_u64().unwrap() >= 1);
    assert_eq!(
        shown["bindings"][0]["token"],
        format!("{}…", &APNS_TOKEN[..8])
    );

    // The test notification rang Bob's phone and socket.
    assert_eq!(shown["test_notification"]["status"], 200, "{shown}");
    assert_eq!(shown["test_notification"]["delivered"], 2);
    assert!(ws.next_text(Duration::from_secs(5)).await.is_some());
    assert_eq!(s.apns.request_count(), 2);

    // The room's ledger and its CSV.
    assert_eq!(shown["room"]["status"], "ended");
    assert_eq!(shown["room"]["billable_seconds"], 720);
    assert_eq!(shown["room"]["csv"]["rows"], 2, "{shown}");

    for suffix in ["", "-identity", "-room"] {
        let shot = shots.join(format!("console{suffix}.png"));
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is {size} bytes", shot.display());
    }
}
