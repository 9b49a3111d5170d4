//! The replica's wall clock, behind a trait so that a test can run a replica whose clock is
//! wrong. Nothing that several replicas must agree on is decided by it: socket presence is
//! judged by the store's clock (Redis's), which every replica shares. What it still dates is
//! this replica's own doing: bindings it registers, sockets it accepts, the instant a webhook
//! compares binding expiry with.

use time::OffsetDateTime;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
