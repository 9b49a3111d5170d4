//! The Access Token verifier on arbitrary strings: no panic, no acceptance without the key.
#![no_main]

use callrelay::auth::access_token::TokenVerifier;
use callrelay::config::{AccountConfig, Secret};
use callrelay::domain::{AccountSid, ApiKeySid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let verifier = TokenVerifier::new(&[AccountConfig {
        sid: AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap(),
        auth_tokens: vec![Secret::new("t")],
        shared_keys: vec![],
        api_keys: vec![(
            ApiKeySid::parse("SK0123456789abcdef0123456789abcdef").unwrap(),
            Secret::new("fuzz-api-key-secret"),
        )],
        webhook_basic_auth: None,
        require_signature: true,
        delivery: Default::default(),
        event_targets: Vec::new(),
    }]);
    assert!(verifier.verify(token).is_err());
});
