//! Checks the layering rules ARCHITECTURE.md states, by reading the source.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn src(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(sub)
}

/// Files under `dir` whose code mentions `needle` (comments excluded).
fn offenders(dir: &Path, needle: &str) -> Vec<String> {
    let files = rust_files(dir);
    assert!(!files.is_empty(), "no sources under {}", dir.display());
    files
        .into_iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains(needle))
        })
        .map(|f| f.display().to_string())
        .collect()
}

#[test]
fn only_the_redis_engine_imports_redis() {
    let all = offenders(&src(""), "redis::");
    let outside: Vec<&String> = all
        .iter()
        .filter(|f| !f.contains("/src/store/redis/") && !f.ends_with("/src/store/mod.rs"))
        .collect();
    assert!(
        outside.is_empty(),
        "redis used outside store/redis: {outside:?}"
    );
}

#[test]
fn channels_never_import_axum() {
    assert_eq!(offenders(&src("channels"), "axum"), Vec::<String>::new());
}

#[test]
fn handlers_never_reach_the_store_or_redis_directly() {
    assert_eq!(offenders(&src("http"), "redis"), Vec::<String>::new());
    // `/readyz` pings through the trait; nothing else in http/ names the store.
    let store_users: Vec<String> = offenders(&src("http"), "state.store")
        .into_iter()
        .filter(|f| !f.ends_with("admin.rs"))
        .collect();
    assert_eq!(store_users, Vec::<String>::new());
}

#[test]
fn the_websocket_channel_reads_no_system_clock() {
    // Presence leases are the store's to date and judge; the channel dates sockets with the
    // replica's `Clock`, which tests can skew.
    for needle in ["now_utc", "SystemTime"] {
        assert_eq!(
            offenders(&src("channels/websocket"), needle),
            Vec::<String>::new(),
            "{needle}"
        );
    }
}

#[test]
fn errors_become_http_answers_only_in_the_problem_module() {
    // Problems are made (their constructor and fields are private), and errors turned into
    // responses, in `http/problem.rs` alone, so that every status, `type` and metric label of
    // an error is decided in one table.
    let outside: Vec<String> = offenders(&src(""), "impl IntoResponse for")
        .into_iter()
        .filter(|f| !f.ends_with("/src/http/problem.rs"))
        .collect();
    assert_eq!(outside, Vec::<String>::new());
    // Handlers name only success statuses; `/readyz` reports readiness, not an error.
    let allowed = [
        "StatusCode::OK",
        "StatusCode::CREATED",
        "StatusCode::NO_CONTENT",
    ];
    for file in rust_files(&src("http")) {
        if file.ends_with("problem.rs") || file.ends_with("admin.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("StatusCode::") {
                let named = &line[at..];
                assert!(
                    allowed.iter().any(|a| named.starts_with(a)),
                    "{}: {line}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn every_problem_kind_is_listed_in_the_readme_with_its_status() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for &kind in callrelay::http::problem::Kind::ALL {
        let row = format!("| `{}` | ", kind.slug());
        let line = readme
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("README lists no `{}`", kind.slug()));
        let status = line[row.len()..].split('|').next().unwrap();
        assert!(
            status.contains(kind.status().as_str()),
            "README gives `{}` the status {status}, the code {}",
            kind.slug(),
            kind.status().as_str()
        );
    }
}

#[test]
fn configuration_reads_settings_and_builds_nothing() {
    // `[[apps]]` are typed and loaded in `config/`; channels build from what it read, never the
    // other way round, so `check-config` needs no channel, metrics registry or client.
    for needle in [
        "crate::channels",
        "crate::http",
        "crate::metrics",
        "reqwest::Client",
    ] {
        assert_eq!(
            offenders(&src("config"), needle),
            Vec::<String>::new(),
            "{needle}"
        );
    }
    assert_eq!(
        offenders(&src("cli"), "push_channels"),
        Vec::<String>::new()
    );
}
