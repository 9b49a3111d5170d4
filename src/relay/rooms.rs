//! The room ledger: every room and participant status callback is kept as a fact of its room
//! before Twilio is answered, and a room's ledger is computed from its facts whenever it is
//! read (`domain::ledger`), so duplicated and out-of-order callbacks, or a restart between
//! them, cannot make it wrong. Ledgers are the account's billing data: admin keys only.

use time::OffsetDateTime;

use super::{RecordError, Relay};
use crate::auth::Caller;
use crate::domain::ledger::{self, Ledger, RoomFact, RoomStatus};
use crate::domain::{AccountSid, Family, RoomSid, StatusCallback};
use crate::store::{RoomFactWrite, StoreError};

/// The most rooms one listing returns.
pub const MAX_ROOMS_LISTED: usize = 1_000;
/// Rooms read from the index at a time, and ledgers computed at once.
const SCAN_PAGE: usize = 100;
const READ_AT_ONCE: usize = 16;
/// The most rooms one listing looks at when filtering by status; the page then ends early and
/// says where to go on.
const MAX_SCANNED: usize = 10_000;

/// What `GET /v1/rooms` asks for.
#[derive(Debug, Clone)]
pub struct RoomQuery {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub status: Option<RoomStatus>,
    pub limit: usize,
    /// Rooms of the range to skip (the previous page's `next_offset`).
    pub offset: usize,
}

/// One page of rooms and where the next one starts (none: this was the last).
#[derive(Debug, Clone)]
pub struct RoomPage {
    pub rooms: Vec<RoomView>,
    pub next_offset: Option<usize>,
}

/// A room's ledger and the room it is about.
#[derive(Debug, Clone)]
pub struct RoomView {
    pub account_sid: AccountSid,
    pub room_sid: RoomSid,
    pub ledger: Ledger,
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
            .and_then(|(_, v)| RoomSid::parse(v).ok())
        else {
            return Ok(());
        };
        let Some(fact) = RoomFact::from_params(&callback.params, id.to_owned()) else {
            // Kept in the event log all the same; the ledger cannot place it in time.
            tracing::warn!(event = %callback.event_name, room = %room_sid, "room callback without an RFC 3339 Timestamp: left out of the room's ledger");
            return Ok(());
        };
        let at = fact.timestamp;
        let bytes = serde_json::to_vec(&fact).expect("a room fact serialises");
        self.store
            .keep_room_fact(RoomFactWrite {
                account: callback.account_sid.clone(),
                room_sid: room_sid.clone(),
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
        self.admin_account(account)
    }

    /// A room's ledger, from every fact kept for it.
    pub async fn room(
        &self,
        caller: &Caller,
        account: Option<AccountSid>,
        room_sid: &RoomSid,
    ) -> Result<RoomView, RecordError> {
        let account = self.room_account(caller, account)?;
        self.room_view(&account, room_sid)
            .await?
            .ok_or_else(|| RecordError::NotFound(format!("no events of room {room_sid}")))
    }

    /// The rooms first heard of between `from` and `to`, newest first, a page at a time.
    pub async fn rooms(
        &self,
        caller: &Caller,
        account: Option<AccountSid>,
        query: RoomQuery,
    ) -> Result<RoomPage, RecordError> {
        let account = self.room_account(caller, account)?;
        if query.from > query.to {
            return Err(RecordError::BadRequest("from is after to".into()));
        }
        let limit = query.limit.clamp(1, MAX_ROOMS_LISTED);
        let mut page = RoomPage {
            rooms: Vec::new(),
            next_offset: None,
        };
        let mut offset = query.offset;
        let mut scanned = 0;
        loop {
            let sids = self
                .store
                .rooms_between(&account, query.from, query.to, offset, SCAN_PAGE)
                .await?;
            let read = sids.len();
            let mut views = Vec::with_capacity(read);
            for chunk in sids.chunks(READ_AT_ONCE) {
                views.extend(
                    futures_util::future::join_all(
                        chunk.iter().map(|sid| self.room_view(&account, sid)),
                    )
                    .await,
                );
            }
            for (i, view) in views.into_iter().enumerate() {
                if let Some(view) = view?
                    && query.status.is_none_or(|s| s == view.ledger.status)
                {
                    page.rooms.push(view);
                    if page.rooms.len() == limit {
                        page.next_offset = Some(offset + i + 1);
                        return Ok(page);
                    }
                }
            }
            offset += read;
            scanned += read;
            if read < SCAN_PAGE {
                return Ok(page);
            }
            if scanned >= MAX_SCANNED {
                page.next_offset = Some(offset);
                return Ok(page);
            }
        }
    }

    async fn room_view(
        &self,
        account: &AccountSid,
        room_sid: &RoomSid,
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
                    tracing::warn!(room = %room_sid, error = %e, "passing over an unreadable room fact");
                    None
                }
            })
            .collect();
        Ok(Some(RoomView {
            account_sid: account.clone(),
            room_sid: room_sid.clone(),
            ledger: ledger::ledger(&facts, self.config.rooms.billing),
        }))
    }
}
