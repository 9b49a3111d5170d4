//! The binding parser on arbitrary bodies: no panic, and what it accepts follows the rules.
#![no_main]

use callrelay::domain::{BindingRequest, PushChannel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = BindingRequest::parse(data) {
        assert!((60..=31_536_000).contains(&b.ttl_seconds));
        assert!(!b.address.is_empty() && b.address.len() <= 4096);
        if b.channel == PushChannel::Fcm {
            assert!(b.apns_environment.is_none() && b.push_type.is_none());
        } else {
            assert!(b.address.bytes().all(|c| c.is_ascii_hexdigit()));
        }
    }
});
