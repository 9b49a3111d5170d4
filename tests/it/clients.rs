//! The client kit and the web example, against this build of callrelay: `clients/js`'s Node
//! tests (each starts its own callrelay from `CALLRELAY_BIN`) and `examples/web` in headless
//! Chromium (`tests/browser/web_example.mjs`, screenshot in `target/web-example/`).
//!
//! Needs Node 20.10+, `npm ci --prefix clients/js`, `npm ci --prefix tests/browser` and
//! `chromium` (or `CHROMIUM=<path>`).

use std::path::Path;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program args` in `dir` with this build's callrelay; panics with its output on failure.
async fn run(dir: &Path, program: &str, args: &[&str], needs: &str) {
    assert!(
        repo().join(needs).exists(),
        "missing {needs}: see the README's Testing section"
    );
    let output = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("CALLRELAY_BIN", env!("CARGO_BIN_EXE_callrelay"))
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One test, in order: the kit's tests build `dist/`, which the web example's page loads.
#[tokio::test]
async fn the_javascript_kit_passes_its_node_tests_and_the_web_example_rings_in_chromium() {
    run(
        &repo().join("clients/js"),
        "npm",
        &["test", "--silent"],
        "clients/js/node_modules/typescript",
    )
    .await;
    run(
        repo(),
        "node",
        &["tests/browser/web_example.mjs"],
        "tests/browser/node_modules/playwright-core",
    )
    .await;
}
