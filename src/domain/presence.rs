//! A live WebSocket connection as the store records it and every replica reads it.

use std::time::Duration;

use time::OffsetDateTime;

use super::{AccountSid, Identity};

/// A live WebSocket connection as other replicas see it: which replica holds it, and for how
/// long the holder has promised to be alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPresence {
    pub conn_id: String,
    pub account_sid: AccountSid,
    pub identity: Identity,
    pub node: String,
    pub device_id: Option<String>,
    /// Opened with `ack=1`: its client acknowledges what it receives, so a webhook may wait
    /// for that (`delivery = "prefer_websocket"`).
    pub takes_acks: bool,
    pub connected_at: OffsetDateTime,
    /// The presence counts for this long after the store records it, unless the holder renews
    /// it. The store's clock measures the lease (Redis's, for the Redis engine), never a
    /// replica's: a replica whose clock is wrong can neither cut a live socket's lease short
    /// nor keep a dead one's alive.
    pub lease: Duration,
}
