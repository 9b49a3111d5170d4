//! Redis over TLS (`rediss://`) and `check-config --connect`: the service runs against a
//! `redis-server --tls-port` with certificates from the tests' own CA, with or without a
//! client certificate, and a bad store setting (an unknown CA, a missing client certificate,
//! a wrong password) is caught before deploy, by a clear message that prints no secret.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::redis::{RedisServer, ServerOptions, TlsOptions};
use crate::helpers::*;
use callrelay_testkit::tls::{TestCa, temp_file};

fn write_config(store_keys: &str) -> tempfile::TempPath {
    temp_file("store.toml", format!("[store]\n{store_keys}\n"))
}

/// Runs `callrelay check-config --connect`: (success, stdout, stderr).
fn check_connect(store_keys: &str) -> (bool, String, String) {
    let path = write_config(store_keys);
    let out = Command::new(env!("CARGO_BIN_EXE_callrelay"))
        .env_remove("CALLRELAY_CONFIG")
        .args(["check-config", "--connect", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `redis_version` as the server reports it.
fn version_of(server: &RedisServer) -> String {
    server
        .cli(&["INFO", "server"])
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_webhook_is_served_with_the_store_over_tls() {
    let (ca, server) = redis::shared_tls();
    let app = spawn_with(TestConfig::with_engine(Engine::Store(format!(
        "redis_url = \"{}\"\ntls_ca_file = \"{}\"",
        server.url(),
        ca.ca_file.display()
    ))))
    .await;
    let mut bob = app.connect_ws("bob").await;
    let r = app.notify("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(bob.next_text(Duration::from_secs(5)).await.is_some());
}

#[tokio::test]
async fn mutual_tls_presents_the_configured_client_certificate() {
    let ca = TestCa::new("redis-mtls");
    let server = RedisServer::start_with(ServerOptions {
        tls: Some(TlsOptions::issued_by(&ca, true)),
        ..ServerOptions::default()
    });
    let client = ca.issue(&["callrelay"], "callrelay");
    let cert_file = temp_file("client.crt", &client.cert_pem);
    let key_file = temp_file("client.key", &client.key_pem);
    let with_cert = format!(
        "redis_url = \"{}\"\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        server.url(),
        ca.ca_file.display(),
        cert_file.display(),
        key_file.display()
    );
    let app = spawn_with(TestConfig {
        fake_apps: vec![("android", "fcm")],
        ..TestConfig::with_engine(Engine::Store(with_cert.clone()))
    })
    .await;
    let binding = serde_json::json!({"channel": "fcm", "address": "token-bob"});
    let r = app
        .api(
            reqwest::Method::PUT,
            "/v1/bindings/phone",
            &token("bob"),
            Some(binding),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(app.notify("bob").await.status, StatusCode::OK);

    let (ok, stdout, stderr) = check_connect(&with_cert);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "Redis {} (standalone)",
            version_of_tls(&ca, &server)
        )),
        "{stdout}"
    );

    // Without the client certificate the server refuses the handshake.
    let (ok, stdout, stderr) = check_connect(&format!(
        "redis_url = \"{}\"\ntls_ca_file = \"{}\"",
        server.url(),
        ca.ca_file.display()
    ));
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("store check failed"), "{stderr}");
    assert!(
        stderr.contains("TLS failed") || stderr.contains("cannot connect"),
        "{stderr}"
    );
    assert!(!stderr.contains(&client.key_pem), "{stderr}");
}

/// The version of a TLS server, asked over TLS with redis-cli.
fn version_of_tls(ca: &TestCa, server: &RedisServer) -> String {
    let client = ca.issue(&["redis-cli"], "redis-cli");
    let cert = temp_file("cli.crt", &client.cert_pem);
    let key = temp_file("cli.key", &client.key_pem);
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&ca.ca_file)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["-p", &server.port.to_string(), "INFO", "server"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .expect("redis-cli speaks TLS")
        .trim()
        .to_owned()
}

#[test]
fn check_config_connect_fails_on_an_unknown_certificate_authority() {
    let (_, server) = redis::shared_tls();
    let stranger = TestCa::new("someone else");
    let (ok, stdout, stderr) = check_connect(&format!(
        "redis_url = \"{}\"\ntls_ca_file = \"{}\"",
        server.url(),
        stranger.ca_file.display()
    ));
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("TLS failed"), "{stderr}");
    assert!(stderr.contains("store.tls_ca_file"), "{stderr}");
}

#[test]
fn check_config_connect_fails_on_a_wrong_password_without_printing_it() {
    let server = RedisServer::start_with_password(Some("right-password-for-tests"));
    let wrong = "wrong-password-for-tests";
    let (ok, stdout, stderr) = check_connect(&format!(
        "redis_url = \"redis://:{wrong}@127.0.0.1:{}\"",
        server.port
    ));
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(wrong), "{text}");
        assert!(!text.contains("right-password"), "{text}");
    }

    // The password as a secret of its own, read from a file, works.
    let password_file = temp_file("redis-password", "right-password-for-tests\n");
    let (ok, stdout, stderr) = check_connect(&format!(
        "redis_url = \"redis://127.0.0.1:{}\"\npassword_file = \"{}\"",
        server.port,
        password_file.display()
    ));
    assert!(ok, "{stdout}{stderr}");
    assert!(!stdout.contains("right-password"), "{stdout}");
}

#[test]
fn check_config_connect_reports_version_and_mode_of_every_topology() {
    let plain = redis::shared();
    let (ok, stdout, stderr) = check_connect(&format!("redis_url = \"{}\"", plain.url()));
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("Redis {} (standalone)", version_of(plain))),
        "{stdout}"
    );
    assert!(stdout.contains(&plain.addr()), "{stdout}");

    let sentinels = topology::shared_sentinels();
    let (ok, stdout, stderr) = check_connect(&sentinels.store_toml());
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("(sentinel), master at 127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("127.0.0.1:{}", sentinels.master_port())),
        "{stdout}"
    );

    let cluster = topology::shared_cluster();
    let (ok, stdout, stderr) = check_connect(&cluster.store_toml());
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "Redis {} (cluster), state ok, 3 masters",
            version_of(&cluster.nodes[0])
        )),
        "{stdout}"
    );

    // A cluster node given as a single server is named as such.
    let (ok, _, stderr) = check_connect(&format!("redis_url = \"{}\"", cluster.nodes[0].url()));
    assert!(!ok);
    assert!(stderr.contains("redis_cluster_urls"), "{stderr}");

    // Nothing listening: a clear failure, quickly.
    let port = crate::helpers::redis::free_port();
    let (ok, _, stderr) = check_connect(&format!("redis_url = \"redis://127.0.0.1:{port}\""));
    assert!(!ok);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn check_config_names_a_store_conflict() {
    let path = write_config(
        "redis_url = \"redis://127.0.0.1:6390\"\nredis_cluster_urls = [\"redis://127.0.0.1:7000\"]",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_callrelay"))
        .env_remove("CALLRELAY_CONFIG")
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(path);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("set only one of redis_url, sentinel_urls, redis_cluster_urls"),
        "{err}"
    );
    assert!(err.contains("redis_url and redis_cluster_urls"), "{err}");
}
