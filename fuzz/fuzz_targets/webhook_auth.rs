//! Webhook authentication on arbitrary URLs, signature headers, settings headers,
//! Authorization headers and bodies: no panic, and nothing without the right key passes.
#![no_main]

use callrelay::auth::signature;
use callrelay::auth::webhook::{WebhookCredentials, authenticate};
use callrelay::config::{AccountConfig, BasicAuth, Secret};
use callrelay::domain::AccountSid;
use libfuzzer_sys::fuzz_target;

fn text(part: Option<&[u8]>) -> Option<&str> {
    part.and_then(|p| std::str::from_utf8(p).ok())
}

fuzz_target!(|data: &[u8]| {
    // Fields separated by 0xff bytes, which never occur in UTF-8 text.
    let mut parts = data.split(|b| *b == 0xff);
    let url = text(parts.next()).unwrap_or_default();
    let sig = text(parts.next());
    let settings = text(parts.next());
    let authorization = text(parts.next());
    let body = parts.next().unwrap_or_default();

    let _ = signature::url_variants(url);
    let account = AccountConfig {
        sid: AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap(),
        auth_tokens: vec![Secret::new("fuzz-auth-token")],
        shared_keys: vec![("k1".into(), Secret::new("fuzz-shared-key"))],
        api_keys: vec![],
        webhook_basic_auth: Some(BasicAuth {
            username: "twilio".into(),
            password: Secret::new("fuzz-password"),
        }),
        require_signature: true,
    };
    let creds = WebhookCredentials {
        url,
        signature: sig,
        signature_settings: settings,
        authorization,
        body,
    };
    // The fuzzer cannot know the keys, so a pass would mean the check is broken.
    assert!(authenticate(&account, &creds).is_err());
});
