//! `[calls]` and `[rooms]`: how long the per-call delivery trace and the room ledger keep what
//! they record, and how the ledger counts billable time.

use std::time::Duration;

use super::ConfigError;
use super::raw::{RawCalls, RawRooms};
use crate::domain::ledger::BillingRule;

/// The per-call delivery trace (`[calls]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallsConfig {
    /// Off: nothing new is recorded (traces kept already stay readable until they expire).
    pub trace: bool,
    pub retention: Duration,
    /// The most notifications one identity's list of calls keeps (the oldest go first).
    pub max_per_identity: u64,
}

/// The room ledger (`[rooms]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomsConfig {
    /// Off: no new facts are kept (ledgers kept already stay readable until they expire).
    pub ledger: bool,
    pub retention: Duration,
    pub billing: BillingRule,
}

pub(super) fn validate_calls(raw: RawCalls) -> Result<CallsConfig, ConfigError> {
    let retention = raw.retention_secs.unwrap_or(7 * 24 * 3600);
    if !(60..=90 * 24 * 3600).contains(&retention) {
        return Err(ConfigError::invalid(
            "calls.retention_secs",
            "must be between 60 and 7776000 (90 days)",
        ));
    }
    let max_per_identity = raw.max_per_identity.unwrap_or(1_000);
    if !(1..=1_000_000).contains(&max_per_identity) {
        return Err(ConfigError::invalid(
            "calls.max_per_identity",
            "must be between 1 and 1000000",
        ));
    }
    Ok(CallsConfig {
        trace: raw.trace.unwrap_or(true),
        retention: Duration::from_secs(retention),
        max_per_identity,
    })
}

pub(super) fn validate_rooms(raw: RawRooms) -> Result<RoomsConfig, ConfigError> {
    let retention = raw.retention_secs.unwrap_or(400 * 24 * 3600);
    if !(3600..=3 * 366 * 24 * 3600).contains(&retention) {
        return Err(ConfigError::invalid(
            "rooms.retention_secs",
            "must be between 3600 and 94867200 (three years)",
        ));
    }
    let billing = match raw.billing.as_deref() {
        None | Some("per_started_minute") => BillingRule::PerStartedMinute,
        Some("per_second") => BillingRule::PerSecond,
        Some(other) => {
            return Err(ConfigError::invalid(
                "rooms.billing",
                format!("`{other}` is not one of per_started_minute, per_second"),
            ));
        }
    };
    Ok(RoomsConfig {
        ledger: raw.ledger.unwrap_or(true),
        retention: Duration::from_secs(retention),
        billing,
    })
}
