//! The status-callback and Event Streams parsers on arbitrary bodies: no panic; an accepted
//! callback keeps every parameter and its id does not depend on their order; an accepted
//! CloudEvent is kept verbatim in an envelope that is JSON.
#![no_main]

use callrelay::domain::{AccountSid, CloudEvent, StatusCallback};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = StatusCallback::decode(data)
        && let Ok(callback) = StatusCallback::parse(params.clone())
    {
        assert_eq!(callback.params, params);
        let mut reversed = params.clone();
        reversed.reverse();
        assert_eq!(StatusCallback::parse(reversed).unwrap().id(), callback.id());
        let envelope: serde_json::Value =
            serde_json::from_slice(&callback.envelope(OffsetDateTime::UNIX_EPOCH).to_json())
                .expect("an envelope is JSON");
        assert_eq!(envelope["account_sid"], callback.account_sid.as_str());
    }
    if let Ok(events) = CloudEvent::parse_batch(data) {
        let account = AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap();
        for event in events {
            let json = event.envelope(&account, OffsetDateTime::UNIX_EPOCH).to_json();
            let text = std::str::from_utf8(&json).expect("an envelope is UTF-8");
            assert!(text.contains(event.raw.get()), "the CloudEvent verbatim");
            serde_json::from_slice::<serde_json::Value>(&json).expect("an envelope is JSON");
        }
    }
});
