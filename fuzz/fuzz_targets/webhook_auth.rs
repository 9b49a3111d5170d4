//! The webhook's authentication path on arbitrary input: the signed URL rebuilt from the
//! request target and the `Host` / `X-Forwarded-Proto` headers (`callrelay::http::signed_url`),
//! then `X-Twilio-Signature`, `bodySHA256`, `X-Twilio-Webhooks-Signature-Settings` and HTTP
//! Basic (`auth::webhook::authenticate`). No panic; nothing signed without the right key
//! passes; what the harness signs itself with the right key passes, and with another body fails.
//!
//! Input: one flags byte, then fields separated by 0xff bytes (which never occur in UTF-8):
//! request target, Host, X-Forwarded-Proto, X-Twilio-Signature, the settings header,
//! Authorization, body. Flags: bit 0 configures `server.public_url`; bit 1 makes the harness
//! sign the rebuilt URL itself (bit 2: with the shared key and HMAC-SHA256 instead of the Auth
//! Token and HMAC-SHA1). `fuzz/seeds/webhook_auth` has seeds in this layout.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use callrelay::auth::signature::{self, SignatureAlgorithm};
use callrelay::auth::webhook::{WebhookAuthError, WebhookCredentials, authenticate};
use callrelay::config::{AccountConfig, BasicAuth, Secret, ServerConfig};
use callrelay::domain::AccountSid;
use callrelay::http::signed_url;
use http::{HeaderMap, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;

const AUTH_TOKEN: &str = "fuzz-auth-token";
const SHARED_KEY: &str = "fuzz-shared-key";
const PUBLIC_URL: &str = "https://relay.example.com/relay";
/// `twilio:fuzz-password`, the Basic credentials of the account that requires them. The seeds
/// carry it, so inputs get past the Basic check to the signature.
const BASIC: &str = "Basic dHdpbGlvOmZ1enotcGFzc3dvcmQ=";

fn text(part: Option<&[u8]>) -> Option<&str> {
    part.and_then(|p| std::str::from_utf8(p).ok())
}

/// With `basic`, the account also requires HTTP Basic credentials; without, every input goes
/// straight to the signature check.
fn account(basic: bool) -> AccountConfig {
    AccountConfig {
        sid: AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap(),
        auth_tokens: vec![Secret::new(AUTH_TOKEN), Secret::new("fuzz-auth-token-2")],
        shared_keys: vec![("k1".into(), Secret::new(SHARED_KEY))],
        api_keys: vec![],
        webhook_basic_auth: basic.then(|| BasicAuth {
            username: "twilio".into(),
            password: Secret::new("fuzz-password"),
        }),
        require_signature: true,
        delivery: Default::default(),
        event_targets: Vec::new(),
    }
}

fn server(public_url: bool) -> ServerConfig {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    ServerConfig {
        listen: any,
        admin_listen: any,
        public_url: public_url.then(|| PUBLIC_URL.to_owned()),
        // As configuration requires: without a public URL, only the explicit opt-in.
        trust_forwarded_headers: !public_url,
        webhook_deadline: Duration::from_secs(5),
        dedupe_window: Duration::from_secs(600),
        shutdown_grace: Duration::from_secs(10),
    }
}

/// The URL callrelay checks the signature against, as the webhook handler rebuilds it; a target
/// that is not a valid URI (the HTTP layer would refuse it) is used as the URL itself, so
/// `authenticate` also sees URLs no request could produce.
fn url(flags: u8, target: &[u8], host: Option<&[u8]>, proto: Option<&[u8]>) -> Option<String> {
    let Ok(uri) = Uri::try_from(target) else {
        return std::str::from_utf8(target).ok().map(str::to_owned);
    };
    let mut headers = HeaderMap::new();
    for (name, value) in [("host", host), ("x-forwarded-proto", proto)] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(name, value);
        }
    }
    let server = server(flags & 1 != 0);
    let url = signed_url(&server, &headers, &uri);
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    match &server.public_url {
        Some(base) => assert_eq!(url, format!("{base}{path_and_query}")),
        None => {
            assert!(url.starts_with("http://") || url.starts_with("https://"), "{url}");
            assert!(url.ends_with(path_and_query), "{url}");
        }
    }
    Some(url)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let mut parts = data.split(|b| *b == 0xff);
    let target = parts.next().unwrap_or_default();
    let host = parts.next();
    let proto = parts.next();
    let sig = text(parts.next());
    let settings = text(parts.next());
    let authorization = text(parts.next());
    let body = parts.next().unwrap_or_default();

    let Some(url) = url(flags, target, host, proto) else {
        return;
    };
    let _ = signature::url_variants(&url);
    // The body read as form parameters, as a status callback's would be.
    let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let creds = WebhookCredentials {
        url: &url,
        signature: sig,
        signature_settings: settings,
        authorization,
        body,
        params: None,
    };
    let form_creds = WebhookCredentials {
        params: Some(&form),
        ..creds
    };
    // The fuzzer cannot compute HMACs with the keys, so a pass would mean the check is broken.
    for basic in [false, true] {
        assert!(authenticate(&account(basic), &creds).is_err());
        assert!(authenticate(&account(basic), &form_creds).is_err());
    }

    // Signed here with the right key over the URL plus the body's hash: accepted, with the
    // Basic credentials too; with any other body, refused by the hash.
    if flags & 2 != 0 && !url.contains('#') && !url.contains("bodySHA256=") {
        let separator = if url.contains('?') { '&' } else { '?' };
        let signed = format!(
            "{url}{separator}bodySHA256={}",
            signature::body_sha256_hex(body)
        );
        let (key, alg, settings) = if flags & 4 != 0 {
            (
                SHARED_KEY,
                SignatureAlgorithm::HmacSha256,
                Some("key=k1,algorithm=HMAC_SHA256"),
            )
        } else {
            (AUTH_TOKEN, SignatureAlgorithm::HmacSha1, None)
        };
        let sig = signature::compute(alg, key.as_bytes(), &signed, &[]);
        let good = WebhookCredentials {
            url: &signed,
            signature: Some(&sig),
            signature_settings: settings,
            authorization: Some(BASIC),
            body,
            params: None,
        };
        assert_eq!(authenticate(&account(true), &good), Ok(()), "{signed}");
        assert_eq!(authenticate(&account(false), &good), Ok(()), "{signed}");
        let mut other = body.to_vec();
        other.push(b'x');
        let tampered = WebhookCredentials {
            body: &other,
            ..good
        };
        assert_eq!(
            authenticate(&account(false), &tampered),
            Err(WebhookAuthError::BodyHashMismatch)
        );
    }
});
