//! The call-notification parser on arbitrary request bodies: no panic, and whatever it
//! accepts it keeps byte for byte.
#![no_main]

use bytes::Bytes;
use callrelay::domain::CallNotification;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = CallNotification::parse(Bytes::copy_from_slice(data)) {
        assert_eq!(&n.raw[..], data);
        assert!(!n.identity.as_str().is_empty());
        assert!(std::str::from_utf8(data).is_ok());
    }
});
