//! apns channel tests (written with the channel).
