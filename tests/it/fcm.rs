//! fcm channel tests (written with the channel).
