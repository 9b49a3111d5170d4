//! Property tests for the pure parts that see untrusted input: call-notification parsing and
//! identity extraction, Twilio signatures, access tokens, binding validation.

use std::time::Duration;

use bytes::Bytes;
use callrelay::auth::access_token::{self, TokenVerifier};
use callrelay::auth::signature::{self, SignatureAlgorithm};
use callrelay::auth::webhook::{WebhookCredentials, authenticate};
use callrelay::config::{AccountConfig, Secret};
use callrelay::domain::{
    AccountSid, ApiKeySid, BindingRequest, CallNotification, Identity, PushChannel,
};
use proptest::prelude::*;
use serde_json::json;

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const KEY: &str = "SK0123456789abcdef0123456789abcdef";

/// Identities as Twilio allows them: printable, possibly with `:` and non-ASCII letters.
fn identity() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.:@ é漢-]{1,40}"
}

fn account(auth_token: &str) -> AccountConfig {
    AccountConfig {
        sid: AccountSid::parse(ACCOUNT).unwrap(),
        auth_tokens: vec![Secret::new(auth_token)],
        shared_keys: vec![],
        api_keys: vec![(ApiKeySid::parse(KEY).unwrap(), Secret::new("api-secret"))],
        webhook_basic_auth: None,
        require_signature: true,
        delivery: Default::default(),
        event_targets: Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any well-formed notification parses; the identity is everything after `client:`; the
    /// bytes are kept as they came.
    #[test]
    fn notifications_parse_and_keep_their_bytes(
        identity in identity(),
        extra_key in "[a-z_]{1,12}",
        extra_value in any::<i64>(),
        message_id in "[A-Za-z0-9]{1,40}",
    ) {
        let body = serde_json::to_vec(&json!({
            "twi_account_sid": ACCOUNT,
            "twi_to": format!("client:{identity}"),
            "twi_message_id": message_id,
            extra_key: extra_value,
        })).unwrap();
        let n = CallNotification::parse(Bytes::from(body.clone())).unwrap();
        prop_assert_eq!(n.identity.as_str(), identity.as_str());
        prop_assert_eq!(n.account_sid.as_str(), ACCOUNT);
        prop_assert_eq!(n.message_id.as_deref(), Some(message_id.as_str()));
        prop_assert_eq!(&n.raw[..], &body[..]);
    }

    /// Arbitrary bytes never panic the parser, and whatever it accepts it keeps unchanged.
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(n) = CallNotification::parse(Bytes::from(body.clone())) {
            prop_assert_eq!(&n.raw[..], &body[..]);
            prop_assert!(!n.identity.as_str().is_empty());
        }
    }

    /// `twi_to` values without the `client:` prefix are always refused.
    #[test]
    fn callees_need_the_client_prefix(to in "[^c].{0,30}") {
        let body = serde_json::to_vec(&json!({"twi_account_sid": ACCOUNT, "twi_to": to})).unwrap();
        prop_assert!(CallNotification::parse(Bytes::from(body)).is_err());
    }

    /// A signature verifies for exactly the key, URL and algorithm it was made with.
    #[test]
    fn signatures_round_trip_and_any_changed_byte_fails(
        key in proptest::collection::vec(any::<u8>(), 1..40),
        url in "https://[a-z]{1,10}\\.example\\.com/[a-z/]{0,20}\\?bodySHA256=[0-9a-f]{64}",
        flip in any::<prop::sample::Index>(),
        sha256 in any::<bool>(),
    ) {
        let alg = if sha256 { SignatureAlgorithm::HmacSha256 } else { SignatureAlgorithm::HmacSha1 };
        let sig = signature::compute(alg, &key, &url, &[]);
        prop_assert!(signature::verify(alg, &key, &url, &[], &sig));

        let mut other_url = url.clone().into_bytes();
        let i = flip.index(other_url.len());
        other_url[i] ^= 0x01;
        if let Ok(other_url) = String::from_utf8(other_url) {
            prop_assert!(!signature::verify(alg, &key, &other_url, &[], &sig));
        }
        let mut other_key = key.clone();
        let i = flip.index(other_key.len());
        other_key[i] ^= 0x80;
        prop_assert!(!signature::verify(alg, &other_key, &url, &[], &sig));
    }

    /// Through the webhook check: a correctly signed request passes, and changing one byte of
    /// the body, the URL or the Auth Token makes it fail.
    #[test]
    fn webhook_authentication_rejects_any_single_change(
        identity in identity(),
        token in "[a-zA-Z0-9]{8,32}",
        path in "/[a-z]{1,8}",
        flip in any::<prop::sample::Index>(),
    ) {
        let body = serde_json::to_vec(&json!({"twi_account_sid": ACCOUNT, "twi_to": format!("client:{identity}")})).unwrap();
        let url = format!("https://relay.example.com{path}?bodySHA256={}", signature::body_sha256_hex(&body));
        let sig = signature::compute(SignatureAlgorithm::HmacSha1, token.as_bytes(), &url, &[]);
        let creds = |url: &str, body: &[u8], sig: &str| -> bool {
            authenticate(&account(&token), &WebhookCredentials {
                url, signature: Some(sig), signature_settings: None, authorization: None, body, params: None,
            }).is_ok()
        };
        prop_assert!(creds(&url, &body, &sig));

        let mut changed_body = body.clone();
        let i = flip.index(changed_body.len());
        changed_body[i] ^= 0x01;
        prop_assert!(!creds(&url, &changed_body, &sig));

        let mut changed_url = url.clone().into_bytes();
        let i = flip.index(changed_url.len());
        changed_url[i] ^= 0x01;
        if let Ok(changed_url) = String::from_utf8(changed_url) {
            prop_assert!(!creds(&changed_url, &body, &sig));
        }

        let other = signature::compute(SignatureAlgorithm::HmacSha1, format!("{token}x").as_bytes(), &url, &[]);
        prop_assert!(!creds(&url, &body, &other));
    }

    /// Minted access tokens verify as their identity; any changed character is refused.
    #[test]
    fn access_tokens_round_trip_and_tampering_fails(identity in identity(), flip in any::<prop::sample::Index>()) {
        let verifier = TokenVerifier::new(&[account("t")]);
        let token = access_token::mint(
            &AccountSid::parse(ACCOUNT).unwrap(),
            &ApiKeySid::parse(KEY).unwrap(),
            &Secret::new("api-secret"),
            &Identity::parse(&identity).unwrap(),
            Duration::from_secs(600),
        );
        let ok = verifier.verify(&token).unwrap();
        prop_assert_eq!(ok.identity.as_str(), identity.as_str());

        let mut bytes = token.clone().into_bytes();
        let i = flip.index(bytes.len());
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        if tampered != token {
            // A changed base64 character may decode to the same bits only in the signature's
            // final character's unused low bits; anything else must fail.
            let last = token.len() - 1;
            if i != last {
                prop_assert!(verifier.verify(&tampered).is_err(), "accepted a tampered token");
            }
        }
    }

    /// Arbitrary strings never panic the token verifier.
    #[test]
    fn arbitrary_tokens_never_panic(token in ".{0,300}") {
        let verifier = TokenVerifier::new(&[account("t")]);
        let _ = verifier.verify(&token);
    }

    /// Valid FCM bindings round-trip; an address with one character outside the allowed set
    /// is refused.
    #[test]
    fn binding_addresses_follow_the_rules(
        address in "[A-Za-z0-9._~:+/=-]{1,200}",
        bad in "[ \"\\\\<>{}|^`\u{80}-\u{10ffff}]",
        ttl in 60u64..=31_536_000,
    ) {
        let body = json!({"channel": "fcm", "address": address, "ttl_seconds": ttl});
        let parsed = BindingRequest::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        prop_assert_eq!(parsed.channel, PushChannel::Fcm);
        prop_assert_eq!(&parsed.address, &address);
        prop_assert_eq!(parsed.ttl_seconds, ttl);

        let broken = format!("{address}{bad}");
        let body = json!({"channel": "fcm", "address": broken});
        prop_assert!(BindingRequest::parse(&serde_json::to_vec(&body).unwrap()).is_err());
    }

    /// TTLs outside 60..=31536000 are refused.
    #[test]
    fn binding_ttls_are_bounded(ttl in prop_oneof![0u64..60, 31_536_001u64..u64::MAX]) {
        let body = json!({"channel": "fcm", "address": "t", "ttl_seconds": ttl});
        prop_assert!(BindingRequest::parse(&serde_json::to_vec(&body).unwrap()).is_err());
    }

    /// Arbitrary bytes never panic the binding parser.
    #[test]
    fn arbitrary_binding_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = BindingRequest::parse(&body);
    }
}
