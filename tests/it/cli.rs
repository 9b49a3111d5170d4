//! The `callrelay` binary's commands.

use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

fn callrelay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_callrelay"));
    // Keep the environment from leaking configuration into the tests.
    c.env_remove("CALLRELAY_CONFIG");
    c
}

/// A file holding `text`, removed when the returned path is dropped.
fn write_config(text: &str) -> tempfile::TempPath {
    callrelay_testkit::tls::temp_file("cli.toml", text)
}

#[test]
fn check_config_accepts_the_example_and_names_broken_keys() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.toml");
    let out = callrelay()
        .args(["check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));

    let broken = write_config("[[accounts]]\nsid = \"ACnope\"\nauth_token = \"x\"\n");
    let out = callrelay()
        .args(["check-config", "--config"])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("accounts[0].sid"), "{err}");

    // Environment variables override the file, and are named when wrong.
    let out = callrelay()
        .args(["check-config", "--config", example])
        .env("CALLRELAY__SERVER__WEBHOOK_DEADLINE_MS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.webhook_deadline_ms"));
}

/// Accounts without `server.public_url` (and without the explicit opt-in to trusting `Host`)
/// are refused, with the key named and the way out given.
#[test]
fn check_config_requires_a_public_url_for_accounts() {
    let path = write_config(&format!(
        "[[accounts]]\nsid = \"{ACCOUNT}\"\nauth_token = \"{AUTH_TOKEN}\"\n"
    ));
    let out = callrelay()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.public_url: is required"), "{err}");
    assert!(
        err.contains("server.trust_forwarded_headers = true"),
        "{err}"
    );
    // The opt-in, here from the environment, is accepted.
    let out = callrelay()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("CALLRELAY__SERVER__TRUST_FORWARDED_HEADERS", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_never_prints_secrets() {
    let path = write_config(&format!(
        "[[accounts]]\nsid = \"ACnope\"\nauth_token = \"{AUTH_TOKEN}\"\n"
    ));
    let out = callrelay()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(AUTH_TOKEN), "{all}");
}

#[tokio::test]
async fn dev_helpers_mint_tokens_and_send_signed_webhooks() {
    let app = spawn_app().await;
    let port = app.base.rsplit(':').next().unwrap();
    let config =
        write_config(&TestConfig::default().toml(&format!("127.0.0.1:{port}"), "127.0.0.1:0"));

    let out = callrelay()
        .args(["dev", "token", "--identity", "bob", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut socket = WsClient::connect(&app.base, &minted, None).await.unwrap();

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_callrelay"))
        .args([
            "dev",
            "send-webhook",
            "--to",
            "bob",
            "--message-id",
            "RMcli",
            "--config",
        ])
        .arg(&config)
        .env_remove("CALLRELAY_CONFIG")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("200 "), "{stdout}");
    let frame = socket.next_text(Duration::from_secs(5)).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(v["twi_to"], "client:bob");
    assert_eq!(v["twi_message_id"], "RMcli");
}

/// `check-config` tries every push app, so one run names every broken key and certificate.
#[test]
fn check_config_names_every_broken_push_app() {
    let not_a_key = write_config("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let not_json = write_config("{\"type\": \"service_account\",");
    let text = TestConfig::default().toml("127.0.0.1:0", "127.0.0.1:0")
        + &format!(
            "[[apps]]\nname = \"ios\"\nchannel = \"apns\"\ntopic = \"com.example.voice\"\n\
             team_id = \"TEAM123456\"\nkey_id = \"KEY1234567\"\nkey_file = \"{}\"\n\
             [[apps]]\nname = \"android\"\nchannel = \"fcm\"\nservice_account_file = \"{}\"\n",
            not_a_key.display(),
            not_json.display()
        );
    let config = write_config(&text);
    let out = callrelay()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("apps[0].key_file: ") && stderr.contains("app `ios`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("apps[1].service_account_file: ") && stderr.contains("app `android`"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

/// `config defaults` prints the committed `examples/callrelay.toml`, and that file is a
/// configuration callrelay accepts as it is.
#[test]
fn config_defaults_prints_the_committed_example() {
    let out = callrelay().args(["config", "defaults"]).output().unwrap();
    assert!(out.status.success());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/callrelay.toml");
    let committed = std::fs::read_to_string(example).unwrap();
    assert!(
        committed == String::from_utf8(out.stdout).unwrap(),
        "examples/callrelay.toml is out of date: regenerate it with \
         `cargo run -q -- config defaults > examples/callrelay.toml`"
    );
    let out = callrelay()
        .args(["check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn healthcheck(args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_callrelay"))
        .arg("healthcheck")
        .args(args)
        .env_remove("CALLRELAY_CONFIG")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The image's HEALTHCHECK: 0 while the admin listener answers, 1 otherwise (never Docker's
/// reserved 2); liveness does not follow the store, `--ready` does.
#[tokio::test]
async fn healthcheck_exits_0_while_healthy_and_1_otherwise() {
    let mut redis = crate::helpers::redis::RedisServer::start();
    let app = spawn_with(TestConfig::with_engine(Engine::RedisAt(redis.url()))).await;
    let admin = app.admin.trim_start_matches("http://").to_owned();

    let (code, text) = healthcheck(&["--address", &admin]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("healthy: /healthz"), "{text}");
    let (code, text) = healthcheck(&["--address", &admin, "--ready"]).await;
    assert_eq!(code, Some(0), "{text}");

    // Without --address, the configuration's server.admin_listen.
    let config = write_config(&TestConfig::default().toml("127.0.0.1:0", &admin));
    let config_arg = config.to_str().unwrap().to_owned();
    let (code, text) = healthcheck(&["--config", &config_arg]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&admin), "{text}");

    // Redis gone: not ready, still alive (an orchestrator must not restart it for that).
    redis.stop();
    let (code, text) = healthcheck(&["--address", &admin, "--ready"]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("answered 503"), "{text}");
    let (code, text) = healthcheck(&["--address", &admin]).await;
    assert_eq!(code, Some(0), "{text}");

    // Stopped: nothing answers.
    app.stop().await;
    let (code, text) = healthcheck(&["--address", &admin]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.starts_with("unhealthy"), "{text}");

    // A configuration that cannot be read is unhealthy too, with exit code 1.
    std::fs::write(&config, "[server]\nadmin_listen = \"nowhere\"\n").unwrap();
    let (code, text) = healthcheck(&["--config", &config_arg]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("server.admin_listen"), "{text}");
}
