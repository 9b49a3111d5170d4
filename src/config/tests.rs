use super::*;

const SID: &str = "AC0123456789abcdef0123456789abcdef";

const SERVER: &str = "[server]\npublic_url = \"https://relay.example.com\"\n";

fn account_toml(extra: &str) -> String {
    format!("{SERVER}[[accounts]]\nsid = \"{SID}\"\nauth_token = \"12345\"\n{extra}")
}

#[test]
fn defaults_apply_to_an_empty_file() {
    let config = from_toml_str("").unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.server.admin_listen.to_string(), "0.0.0.0:9090");
    assert_eq!(config.server.webhook_deadline, Duration::from_secs(5));
    assert_eq!(config.server.dedupe_window, Duration::from_secs(600));
    assert!(config.store.redis.is_none());
    assert_eq!(config.store.key_prefix, "callrelay");
    assert_eq!(config.log.format, LogFormat::Text);
}

#[test]
fn unknown_keys_are_named() {
    let err = from_toml_str("[server]\nlistne = \"x\"").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("server"), "{text}");
    assert!(text.contains("listne"), "{text}");
}

#[test]
fn wrong_types_are_named() {
    let err = from_toml_str("[server]\nwebhook_deadline_ms = \"soon\"").unwrap_err();
    assert!(
        err.to_string().starts_with("server.webhook_deadline_ms"),
        "{err}"
    );
}

#[test]
fn bad_account_sid_is_named_with_its_index() {
    let err = from_toml_str("[[accounts]]\nsid = \"ACnope\"\nauth_token = \"x\"").unwrap_err();
    assert!(err.to_string().starts_with("accounts[0].sid:"), "{err}");
}

#[test]
fn account_needs_a_way_to_authenticate_webhooks() {
    let err = from_toml_str(&format!("[[accounts]]\nsid = \"{SID}\"")).unwrap_err();
    assert!(
        err.to_string().starts_with("accounts[0].auth_token"),
        "{err}"
    );
    let err = from_toml_str(&format!(
        "[[accounts]]\nsid = \"{SID}\"\nrequire_signature = false"
    ))
    .unwrap_err();
    assert!(
        err.to_string().starts_with("accounts[0].require_signature"),
        "{err}"
    );
}

#[test]
fn secrets_come_from_files_without_the_trailing_newline() {
    let dir = tempfile::Builder::new()
        .prefix("callrelay-config-")
        .tempdir()
        .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let config = from_toml_str(&format!(
        "{SERVER}[[accounts]]\nsid = \"{SID}\"\nauth_token_file = \"{}\"",
        token.display()
    ))
    .unwrap();
    assert_eq!(config.accounts[0].auth_tokens[0].expose(), "s3cret");

    let err = from_toml_str(&format!(
        "[[accounts]]\nsid = \"{SID}\"\nauth_token_file = \"{}\"",
        dir.path().join("missing").display()
    ))
    .unwrap_err();
    assert!(
        err.to_string().starts_with("accounts[0].auth_token_file"),
        "{err}"
    );
}

#[test]
fn inline_and_file_together_is_an_error() {
    let err = from_toml_str(&account_toml("auth_token_file = \"/x\"")).unwrap_err();
    assert!(err.to_string().contains("not both"), "{err}");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let config = from_toml_str(&format!(
        "{SERVER}[[accounts]]\nsid = \"{SID}\"\nauth_token = \"authtokenvalue\"\n\
         api_keys = [{{ sid = \"SK0123456789abcdef0123456789abcdef\", secret = \"apisecretvalue\" }}]\n\
         [store]\nredis_url = \"redis://:redispassword@127.0.0.1\"\n\
         [[apps]]\nname = \"android\"\nchannel = \"fcm\"\nservice_account = '''{}'''",
        apps::fcm::tests::key_json(serde_json::json!({
            "client_email": "inlineserviceaccount@x.iam.gserviceaccount.com"
        }))
    ))
    .unwrap();
    let dump = format!("{config:?}");
    for secret in [
        "authtokenvalue",
        "apisecretvalue",
        "redispassword",
        "inlineserviceaccount",
        "PRIVATE KEY",
    ] {
        assert!(!dump.contains(secret), "{secret} in {dump}");
    }
    assert!(dump.contains("[redacted]"), "{dump}");
}

#[test]
fn public_url_is_checked_and_normalised() {
    let config =
        from_toml_str("[server]\npublic_url = \"https://relay.example.com/relay/\"").unwrap();
    assert_eq!(
        config.server.public_url.as_deref(),
        Some("https://relay.example.com/relay")
    );
    for bad in [
        "ftp://x",
        "https://",
        "https://u:p@x.com",
        "https://x.com/?a=1",
    ] {
        let err = from_toml_str(&format!("[server]\npublic_url = \"{bad}\"")).unwrap_err();
        assert!(
            err.to_string().starts_with("server.public_url"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn traces_are_off_by_default_and_their_settings_are_checked() {
    let config = from_toml_str("").unwrap();
    assert_eq!(config.traces.otlp_endpoint, None);
    assert_eq!(config.traces.sample_percent, 100);
    assert_eq!(config.traces.service_name, "callrelay");

    let config = from_toml_str(
        "[traces]\notlp_endpoint = \"http://collector:4318/\"\nsample_percent = 5\nservice_name = \"relay-eu\"",
    )
    .unwrap();
    assert_eq!(
        config.traces.otlp_endpoint.as_deref(),
        Some("http://collector:4318")
    );
    assert_eq!(config.traces.sample_percent, 5);
    assert_eq!(config.traces.service_name, "relay-eu");

    for (toml, key, says) in [
        (
            "otlp_endpoint = \"collector:4318\"",
            "traces.otlp_endpoint",
            "http",
        ),
        (
            "otlp_endpoint = \"https://key:secret@collector\"",
            "traces.otlp_endpoint",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            "sample_percent = 101",
            "traces.sample_percent",
            "between 0 and 100",
        ),
        ("service_name = \" \"", "traces.service_name", "empty"),
    ] {
        let err = from_toml_str(&format!("[traces]\n{toml}"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(key), "{toml}: {err}");
        assert!(err.contains(says), "{toml}: {err}");
        assert!(
            !err.contains("secret"),
            "the URL's credentials are not repeated: {err}"
        );
    }
}

#[test]
fn accounts_need_a_public_url_unless_forwarded_headers_are_trusted() {
    let bare = format!("[[accounts]]\nsid = \"{SID}\"\nauth_token = \"12345\"\n");
    let err = from_toml_str(&bare).unwrap_err().to_string();
    assert!(err.starts_with("server.public_url: is required"), "{err}");
    assert!(err.contains("server.trust_forwarded_headers"), "{err}");

    let config = from_toml_str(&account_toml("")).unwrap();
    assert!(!config.server.trust_forwarded_headers);
    let config =
        from_toml_str(&format!("[server]\ntrust_forwarded_headers = true\n{bare}")).unwrap();
    assert!(config.server.trust_forwarded_headers);
    assert!(config.server.public_url.is_none());

    // Both at once is ambiguous.
    let err = from_toml_str(&format!(
        "[server]\npublic_url = \"https://relay.example.com\"\ntrust_forwarded_headers = true\n{bare}"
    ))
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("server.trust_forwarded_headers"),
        "{err}"
    );
    // Without accounts there is no signature to check, and nothing to require.
    assert!(from_toml_str("").unwrap().server.public_url.is_none());
}

#[test]
fn admin_keys_must_be_long() {
    let err = from_toml_str("[admin]\napi_keys = [\"short\"]").unwrap_err();
    assert!(err.to_string().starts_with("admin.api_keys[0]"), "{err}");
    let ok = from_toml_str("[admin]\napi_keys = [\"0123456789abcdef0123456789\"]").unwrap();
    assert_eq!(ok.admin.api_keys.len(), 1);
}

#[test]
fn environment_overrides_the_file_and_accepts_numbers_as_strings() {
    let mut table: toml::Table = toml::from_str(&account_toml("")).unwrap();
    env::apply(
        &mut table,
        vec![
            (
                "CALLRELAY__SERVER__WEBHOOK_DEADLINE_MS".to_string(),
                "1500".to_string(),
            ),
            (
                "CALLRELAY__ACCOUNTS__0__AUTH_TOKEN".to_string(),
                "67890".to_string(),
            ),
            (
                "CALLRELAY__ACCOUNTS__0__REQUIRE_SIGNATURE".to_string(),
                "true".to_string(),
            ),
        ],
    )
    .unwrap();
    let config = from_table(table).unwrap();
    assert_eq!(config.server.webhook_deadline, Duration::from_millis(1500));
    assert_eq!(config.accounts[0].auth_tokens[0].expose(), "67890");
}

#[test]
fn app_names_are_ones_a_binding_can_give() {
    for name in ["my app", "ios/voip", &"a".repeat(65)] {
        let err =
            from_toml_str(&format!("[[apps]]\nname = \"{name}\"\nchannel = \"fcm\"")).unwrap_err();
        assert!(
            err.to_string().starts_with("apps[0].name:"),
            "{name}: {err}"
        );
    }
    // A good name passes, and the app is refused for what it lacks.
    let err =
        from_toml_str("[[apps]]\nname = \"com.example_voice-2\"\nchannel = \"fcm\"").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("apps[0].service_account_file: is required"),
        "{err}"
    );
}

#[test]
fn apps_need_a_known_channel_and_unique_names() {
    let err = from_toml_str("[[apps]]\nname = \"a\"\nchannel = \"sms\"").unwrap_err();
    assert!(err.to_string().starts_with("apps[0].channel"), "{err}");
    let err = from_toml_str(
        "[[apps]]\nname = \"a\"\nchannel = \"fcm\"\n[[apps]]\nname = \"a\"\nchannel = \"apns\"",
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("apps[1].name"), "{err}");
}

#[test]
fn message_and_binding_size_limits_have_defaults_and_ranges() {
    let config = from_toml_str("").unwrap();
    assert_eq!(config.limits.max_client_message_bytes, 4096);
    assert_eq!(config.limits.max_binding_bytes, 16384);
    let config =
        from_toml_str("[limits]\nmax_client_message_bytes = 256\nmax_binding_bytes = \"2048\"")
            .unwrap();
    assert_eq!(config.limits.max_client_message_bytes, 256);
    assert_eq!(config.limits.max_binding_bytes, 2048);
    for (text, key) in [
        (
            "max_client_message_bytes = 127",
            "limits.max_client_message_bytes",
        ),
        (
            "max_client_message_bytes = 1048577",
            "limits.max_client_message_bytes",
        ),
        ("max_binding_bytes = 1023", "limits.max_binding_bytes"),
        ("max_binding_bytes = 1048577", "limits.max_binding_bytes"),
    ] {
        let err = from_toml_str(&format!("[limits]\n{text}")).unwrap_err();
        assert!(err.to_string().starts_with(key), "{text}: {err}");
    }
}

fn store_error(store: &str) -> String {
    from_toml_str(&format!("[store]\n{store}"))
        .unwrap_err()
        .to_string()
}

#[test]
fn one_redis_topology_at_a_time() {
    let err = store_error(
        "redis_url = \"redis://127.0.0.1:6390\"\nsentinel_urls = [\"redis://127.0.0.1:26379\"]\nsentinel_master = \"m\"",
    );
    assert!(err.starts_with("store:"), "{err}");
    assert!(err.contains("redis_url and sentinel_urls"), "{err}");
    let err = store_error("sentinel_urls = [\"redis://127.0.0.1:26379\"]");
    assert!(err.starts_with("store.sentinel_master"), "{err}");
    let err = store_error("sentinel_master = \"m\"");
    assert!(err.starts_with("store.sentinel_master"), "{err}");
    assert!(err.contains("sentinel_urls"), "{err}");
    let err = store_error("min_replica_acks = 1");
    assert!(err.starts_with("store.min_replica_acks"), "{err}");
}

#[test]
fn topologies_parse_into_their_mode() {
    let config = from_toml_str(
        "[store]\nredis_cluster_urls = [\"redis://10.0.0.1:6379\", \"redis://10.0.0.2:6379\"]\nmin_replica_acks = 1",
    )
    .unwrap();
    let redis = config.store.redis.unwrap();
    assert_eq!(redis.topology.mode(), "cluster");
    assert_eq!(redis.min_replica_acks, 1);
    let config = from_toml_str(
        "[store]\nsentinel_urls = [\"rediss://s1:26379\"]\nsentinel_master = \"mymaster\"",
    )
    .unwrap();
    match config.store.redis.unwrap().topology {
        Topology::Sentinel {
            master, master_tls, ..
        } => {
            assert_eq!(master, "mymaster");
            assert!(
                master_tls,
                "TLS to the master by default when the sentinels use it"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn node_urls_are_host_and_port_without_credentials() {
    for (urls, expected) in [
        (
            "[\"redis://:pw@10.0.0.1:6379\"]",
            "must not carry credentials",
        ),
        ("[\"http://10.0.0.1:6379\"]", "must start with redis://"),
        ("[\"redis://10.0.0.1\"]", "needs a port"),
        ("[\"redis://10.0.0.1:6379/2\"]", "host:port only"),
        ("[]", "lists no URL"),
        (
            "[\"redis://10.0.0.1:6379\", \"rediss://10.0.0.2:6379\"]",
            "mixes redis:// and rediss://",
        ),
    ] {
        let err = store_error(&format!("redis_cluster_urls = {urls}"));
        assert!(err.starts_with("store.redis_cluster_urls"), "{err}");
        assert!(err.contains(expected), "{urls}: {err}");
        assert!(!err.contains("pw@"), "{err}");
    }
}

#[test]
fn tls_files_are_checked_and_the_key_stays_secret() {
    let dir = tempfile::Builder::new()
        .prefix("callrelay-tls-")
        .tempdir()
        .unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let not_pem = write("garbage.pem", "supersecretkeymaterial");
    let err = store_error(&format!(
        "redis_url = \"rediss://r:6380\"\ntls_ca_file = \"{not_pem}\""
    ));
    assert!(err.starts_with("store.tls_ca_file"), "{err}");
    let err = store_error(&format!(
        "redis_url = \"rediss://r:6380\"\ntls_cert_file = \"{not_pem}\""
    ));
    assert!(err.starts_with("store.tls_key_file"), "{err}");
    assert!(err.contains("is required"), "{err}");
    // A client certificate that parses, with a key that does not: named, not printed.
    let cert = rcgen::generate_simple_self_signed(vec!["callrelay".into()]).unwrap();
    let cert_file = write("client.crt", &cert.cert.pem());
    let err = store_error(&format!(
        "redis_url = \"rediss://r:6380\"\ntls_cert_file = \"{cert_file}\"\ntls_key = \"supersecretkeymaterial\""
    ));
    assert!(err.starts_with("store.tls_key_file"), "{err}");
    assert!(!err.contains("supersecretkeymaterial"), "{err}");
    // TLS files need a TLS URL.
    let err = store_error(&format!(
        "redis_url = \"redis://r:6379\"\ntls_cert_file = \"{cert_file}\"\ntls_key = \"{}\"",
        cert.signing_key.serialize_pem().replace('\n', "\\n")
    ));
    assert!(err.contains("not a rediss:// URL"), "{err}");
    let config = from_toml_str(&format!(
        "[store]\nredis_url = \"rediss://r:6380\"\ntls_cert_file = \"{cert_file}\"\ntls_key = \"{}\"\npassword = \"redispassword\"",
        cert.signing_key.serialize_pem().replace('\n', "\\n")
    ))
    .unwrap();
    let dump = format!("{config:?}");
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");
    assert!(!dump.contains("redispassword"), "{dump}");
}

#[test]
fn a_password_goes_either_in_the_url_or_in_its_own_key() {
    let err = store_error("redis_url = \"redis://:pw@r:6379\"\npassword = \"pw2\"");
    assert!(err.starts_with("store.redis_url"), "{err}");
    assert!(!err.contains("pw2"), "{err}");
    from_toml_str("[store]\nredis_url = \"redis://r:6379\"\npassword = \"pw2\"").unwrap();
}

#[test]
fn ringing_settings_have_defaults_ranges_and_an_order() {
    let config = from_toml_str("").unwrap();
    assert_eq!(config.websocket.ringing_window, Duration::from_secs(30));
    assert!(config.websocket.replay);
    assert_eq!(config.websocket.ack_timeout, Duration::from_secs(1));
    // Unset, it leaves a short deadline's second half to the push.
    let short = from_toml_str("[server]\nwebhook_deadline_ms = 800").unwrap();
    assert_eq!(short.websocket.ack_timeout, Duration::from_millis(400));
    for (toml, key) in [
        (
            "[websocket]\nringing_window_secs = 0",
            "websocket.ringing_window_secs",
        ),
        (
            "[websocket]\nringing_window_secs = 301",
            "websocket.ringing_window_secs",
        ),
        (
            "[websocket]\nack_timeout_ms = 5",
            "websocket.ack_timeout_ms",
        ),
        // The push that follows a silent socket needs part of the deadline.
        (
            "[server]\nwebhook_deadline_ms = 800\n[websocket]\nack_timeout_ms = 401",
            "websocket.ack_timeout_ms",
        ),
    ] {
        let err = from_toml_str(toml).unwrap_err();
        assert!(err.to_string().starts_with(key), "{toml}: {err}");
    }
}

#[test]
fn delivery_is_all_unless_an_account_or_its_app_prefers_sockets() {
    let config = from_toml_str(&account_toml("delivery = \"prefer_websocket\"")).unwrap();
    let sid = AccountSid::parse(SID).unwrap();
    assert_eq!(config.delivery(&sid, "any"), Delivery::PreferWebsocket);
    let config = from_toml_str(&account_toml("")).unwrap();
    assert_eq!(config.delivery(&sid, "any"), Delivery::All);
    let err = from_toml_str(&account_toml("delivery = \"sometimes\"")).unwrap_err();
    assert!(err.to_string().starts_with("accounts[0].delivery"), "{err}");
    let err =
        from_toml_str("[[apps]]\nname = \"a\"\nchannel = \"fcm\"\ndelivery = \"x\"").unwrap_err();
    assert!(err.to_string().starts_with("apps[0].delivery"), "{err}");
}
