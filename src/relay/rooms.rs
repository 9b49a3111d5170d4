//! The room ledger: every room and participant status callback is kept as a fact of its room
//! before Twilio is answered, and a room's ledger is computed from its facts whenever it is
//! read (`domain::ledger`), so duplicated and out-of-order callbacks, or a restart between
//! them, cannot make it wrong. Ledgers are the account's billing data: admin keys only.

use time::OffsetDateTime;

use super::{RecordError, Relay};
use crate::auth::Caller;
use crate::domain::ledger::{self, Ledger, RoomFact, RoomStatus};
use crate::domain::{AccountSid, Family, StatusCallback};
use crate::store::{RoomFactWrite, StoreError};

/// The most rooms one listing returns.
pub const MAX_ROOMS_LISTED: usize = 1_000;

/// What `GET /v1/rooms` asks for.
#[derive(Debug, Clone)]
pub struct RoomQuery {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub status: Option<RoomStatus>,
    pub limit: usize,
}

/// A room's ledger and the room it is about.
#[derive(Debug, Clone)]
pub struct RoomView {
    pub account_sid: AccountSid,
    pub room_sid: String,
    pub ledger: Ledger,
}

/// Whether `sid` can name a room: `RM`, then letters and digits.
fn valid_room_sid(sid: &str) -> bool {
    sid.len() <= 64 && sid.starts_with("RM") && sid.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Relay {
    /// Keeps a room or participant callback as a fact of its room (a repeat writes the same
    /// fact again: Twilio's retry of a callback whose first attempt failed half-way).
    pub(super) async fn keep_room_fact(
        &self,
        callback: &StatusCallback,
        id: &str,
    ) -> Result<(), StoreError> {
        if !self.config.rooms.ledger
            || !matches!(callback.event.family(), Family::Room | Family::Participant)
        {
            return Ok(());
        }
        let Some(room_sid) = callback
            .params
            .iter()
            .find(|(k, _)| k == "RoomSid")
            .map(|(_, v)| v.as_str())
            .filter(|sid| valid_room_sid(sid))
        else {
            return Ok(());
        };
        let Some(fact) = RoomFact::from_params(&callback.params, id.to_owned()) else {
            tracing::debug!(event = %callback.event_name, "room callback without a usable Timestamp: not in the ledger");
            return Ok(());
        };
        let at = fact.timestamp;
        let bytes = serde_json::to_vec(&fact).expect("a room fact serialises");
        self.store
            .keep_room_fact(RoomFactWrite {
                account: callback.account_sid.clone(),
                room_sid: room_sid.to_owned(),
                fact_id: id.to_owned(),
                fact: bytes.into(),
                at,
                retention: self.config.rooms.retention,
            })
            .await
    }

    fn room_account(
        &self,
        caller: &Caller,
        account: Option<AccountSid>,
    ) -> Result<AccountSid, RecordError> {
        if matches!(caller, Caller::Client { .. }) {
            return Err(RecordError::Forbidden(
                "room ledgers are read with an admin key".into(),
            ));
        }
        let account = account.ok_or_else(|| {
            RecordError::BadRequest("account_sid is required with an admin key".into())
        })?;
        if self.config.account(&account).is_none() {
            return Err(RecordError::Forbidden(format!(
                "account {account} is not configured on this relay"
            )));
        }
        Ok(account)
    }

    /// A room's ledger, from every fact kept for it.
    pub async fn room(
        &self,
        caller: &Caller,
        account: Option<AccountSid>,
        room_sid: &str,
    ) -> Result<RoomView, RecordError> {
        let account = self.room_account(caller, account)?;
        if !valid_room_sid(room_sid) {
            return Err(RecordError::BadRequest(
                "the room SID must be RM followed by letters and digits".into(),
            ));
        }
        self.room_view(&account, room_sid)
            .await?
            .ok_or_else(|| RecordError::NotFound(format!("no events of room {room_sid}")))
    }

    /// The rooms first heard of between `from` and `to`, newest first.
    pub async fn rooms(
        &self,
        caller: &Caller,
        account: Option<AccountSid>,
        query: RoomQuery,
    ) -> Result<Vec<RoomView>, RecordError> {
        let account = self.room_account(caller, account)?;
        if query.from > query.to {
            return Err(RecordError::BadRequest("from is after to".into()));
        }
        let limit = query.limit.clamp(1, MAX_ROOMS_LISTED);
        // The status is known only once a ledger is computed: read more rooms than asked for
        // when filtering by it.
        let candidates = if query.status.is_some() {
            MAX_ROOMS_LISTED * 10
        } else {
            limit
        };
        let rooms = self
            .store
            .rooms_between(&account, query.from, query.to, candidates)
            .await?;
        let mut views = Vec::new();
        for room in rooms {
            if views.len() == limit {
                break;
            }
            if let Some(view) = self.room_view(&account, &room).await?
                && query.status.is_none_or(|s| s == view.ledger.status)
            {
                views.push(view);
            }
        }
        Ok(views)
    }

    async fn room_view(
        &self,
        account: &AccountSid,
        room_sid: &str,
    ) -> Result<Option<RoomView>, StoreError> {
        let stored = self.store.room_facts(account, room_sid).await?;
        if stored.is_empty() {
            return Ok(None);
        }
        let facts: Vec<RoomFact> = stored
            .iter()
            .filter_map(|bytes| match serde_json::from_slice(bytes) {
                Ok(fact) => Some(fact),
                Err(e) => {
                    tracing::warn!(room = room_sid, error = %e, "passing over an unreadable room fact");
                    None
                }
            })
            .collect();
        Ok(Some(RoomView {
            account_sid: account.clone(),
            room_sid: room_sid.to_owned(),
            ledger: ledger::ledger(&facts, self.config.rooms.billing),
        }))
    }
}
