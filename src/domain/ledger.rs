//! The room ledger behind `GET /v1/rooms/{RoomSid}` and its CSV for the accounting spreadsheet:
//! who was in a Video Room, for how long, and what that bills per minute, as a pure function of
//! the room's status-callback facts (`RoomFact`, one per event, as stored).
//!
//! Twilio delivers room events more than once and out of order, and `SequenceNumber` does not
//! give the order (`EVENTS.md`, "Rooms"), so the ledger is built from the SET of facts: any order
//! of arrival, any retry, gives the same ledger. Nothing reads the clock either: where someone is
//! still connected, "now" is the latest timestamp among the facts. The rules:
//!
//! - Facts: `room-created`, `room-ended`, `participant-connected` and `participant-disconnected`
//!   count; other events, participant events without a `ParticipantSid`, and timestamps with no
//!   UTC form are ignored, never an error. Facts with the same id count once, and so do facts with
//!   the same (event, `ParticipantSid`, timestamp) under different ids. Facts are taken in one
//!   canonical order: timestamp, event rank (room-created, participant-connected,
//!   participant-disconnected, room-ended), `ParticipantSid`, then the rest of the content, the
//!   id last; of several that count once the first is kept, so the content kept never depends
//!   on ids. "Earliest" below means first in that order, and `events` counts the facts kept.
//! - Room: `ended` once a room-ended exists, else `in-progress`; `created_at` is the earliest
//!   room-created, `ended_at` and `room_duration` (Twilio's `RoomDuration`) the earliest
//!   room-ended's; `room_name` comes from the earliest fact carrying one.
//! - Participants, one per `ParticipantSid` (a reconnect is a new one): `connected_at` is the
//!   earliest connect; the disconnect is the earliest one not before `connected_at` (closed by
//!   `participant-disconnected`); without one, the participant is closed at the room-ended
//!   (`room-ended`), else still connected (`disconnected_at` and `closed_by` null). A disconnect
//!   without a connect dates the connect `ParticipantDuration` earlier, or leaves it null. The
//!   identity comes from the participant's earliest fact carrying one.
//! - `connected_seconds`: the disconnect's `ParticipantDuration` when it carries one (Twilio's
//!   count wins), else the whole seconds (floored) from `connected_at` to `disconnected_at`, or to
//!   the latest fact while still connected; 0 without `connected_at`, never negative.
//! - `billable_seconds`: `per_started_minute` rounds `connected_seconds` up to whole minutes (0
//!   stays 0), `per_second` keeps them; the room's is their sum, `billable_minutes` that / 60.
//! - `session`, the consult: from the first instant at least two participants were connected to
//!   the last instant, after that, fewer than two were (`ended_at` null while still two or more,
//!   `seconds` then counted to the latest fact); null if never two at once. Each participant is
//!   connected over [connected_at, disconnected_at), half-open, and the count at an instant is
//!   the one after every change at that instant: disconnects go before connects, so someone
//!   leaving as another joins is not "together" with them, and no momentary dip is seen. The
//!   room is not the consult: Twilio ends a REST-created room only once it has been empty for
//!   the empty-room timeout (5 minutes by default).
//! - `participants` are listed by `connected_at` (`disconnected_at` when unknown), then sid.
//!
//! `Ledger` holds the room object of the spec but its `account_sid` and `room_sid`, which the
//! caller knows from the request: `RoomObject` adds them for the JSON, the CSV takes them as
//! arguments.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

/// One Rooms status-callback event as the ledger reads it. Stored as JSON, one per event,
/// hence the short names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomFact {
    /// The event's id: every delivery of one event has the same.
    pub id: String,
    /// `StatusCallbackEvent`.
    #[serde(rename = "e")]
    pub event: String,
    /// Twilio's `Timestamp`.
    #[serde(rename = "t", with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    #[serde(rename = "rn", default, skip_serializing_if = "Option::is_none")]
    pub room_name: Option<String>,
    #[serde(rename = "ps", default, skip_serializing_if = "Option::is_none")]
    pub participant_sid: Option<String>,
    #[serde(rename = "pi", default, skip_serializing_if = "Option::is_none")]
    pub participant_identity: Option<String>,
    /// `ParticipantDuration` (seconds), on participant-disconnected.
    #[serde(rename = "pd", default, skip_serializing_if = "Option::is_none")]
    pub participant_duration: Option<u64>,
    /// `RoomDuration` (seconds), on room-ended.
    #[serde(rename = "rd", default, skip_serializing_if = "Option::is_none")]
    pub room_duration: Option<u64>,
}

impl RoomFact {
    /// From a Rooms status callback's parameters; None when it is no ledger fact: another
    /// event, or no RFC 3339 `Timestamp`. Empty values count as absent, an unreadable duration
    /// too; the time is kept in UTC.
    pub fn from_params(params: &[(String, String)], id: String) -> Option<RoomFact> {
        let value = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let text = |name: &str| value(name).filter(|v| !v.is_empty()).map(str::to_owned);
        let seconds = |name: &str| value(name)?.parse::<u64>().ok();
        let event = value("StatusCallbackEvent")?;
        Kind::parse(event)?;
        let timestamp = OffsetDateTime::parse(value("Timestamp")?, &Rfc3339)
            .ok()?
            .checked_to_offset(UtcOffset::UTC)?;
        Some(RoomFact {
            id,
            event: event.to_owned(),
            timestamp,
            room_name: text("RoomName"),
            participant_sid: text("ParticipantSid"),
            participant_identity: text("ParticipantIdentity"),
            participant_duration: seconds("ParticipantDuration"),
            room_duration: seconds("RoomDuration"),
        })
    }
}

/// The events the ledger reads, in the order they rank at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    RoomCreated,
    ParticipantConnected,
    ParticipantDisconnected,
    RoomEnded,
}

impl Kind {
    fn parse(name: &str) -> Option<Kind> {
        match name {
            "room-created" => Some(Kind::RoomCreated),
            "participant-connected" => Some(Kind::ParticipantConnected),
            "participant-disconnected" => Some(Kind::ParticipantDisconnected),
            "room-ended" => Some(Kind::RoomEnded),
            _ => None,
        }
    }

    fn is_participant(self) -> bool {
        matches!(
            self,
            Kind::ParticipantConnected | Kind::ParticipantDisconnected
        )
    }
}

/// How connected time becomes billable time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingRule {
    /// Every started minute is billed whole.
    PerStartedMinute,
    PerSecond,
}

impl BillingRule {
    pub fn as_str(self) -> &'static str {
        match self {
            BillingRule::PerStartedMinute => "per_started_minute",
            BillingRule::PerSecond => "per_second",
        }
    }

    /// The seconds billed for `seconds` connected.
    pub fn billable(self, seconds: u64) -> u64 {
        match self {
            BillingRule::PerStartedMinute => seconds.div_ceil(60).saturating_mul(60),
            BillingRule::PerSecond => seconds,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoomStatus {
    InProgress,
    Ended,
}

impl RoomStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomStatus::InProgress => "in-progress",
            RoomStatus::Ended => "ended",
        }
    }
}

/// What ended a participant's time in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClosedBy {
    ParticipantDisconnected,
    /// The disconnect never arrived: the room's end closes it.
    RoomEnded,
}

impl ClosedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedBy::ParticipantDisconnected => "participant-disconnected",
            ClosedBy::RoomEnded => "room-ended",
        }
    }
}

/// While at least two participants were connected: the consult.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// None while two or more are still connected.
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Participant {
    pub participant_sid: String,
    pub identity: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub connected_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub disconnected_at: Option<OffsetDateTime>,
    /// None: still connected.
    pub closed_by: Option<ClosedBy>,
    /// Twilio's `ParticipantDuration`, from the disconnect.
    pub participant_duration: Option<u64>,
    pub connected_seconds: u64,
    pub billable_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Billing {
    pub rule: BillingRule,
    pub billable_seconds: u64,
    pub billable_minutes: f64,
}

/// The spec's room object but for `account_sid` and `room_sid` (see `RoomObject`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ledger {
    pub room_name: Option<String>,
    pub status: RoomStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Twilio's `RoomDuration`.
    pub room_duration: Option<u64>,
    pub session: Option<Session>,
    pub participants: Vec<Participant>,
    pub billing: Billing,
    /// The distinct facts the ledger was built from.
    pub events: usize,
}

/// The room object `GET /v1/rooms/{RoomSid}` answers: a ledger and the room it is about.
#[derive(Debug, Serialize)]
pub struct RoomObject<'a> {
    pub account_sid: &'a str,
    pub room_sid: &'a str,
    #[serde(flatten)]
    pub ledger: &'a Ledger,
}

/// The ledger of a room's facts, in any order, duplicates included (rules: module comment).
pub fn ledger(facts: &[RoomFact], rule: BillingRule) -> Ledger {
    let facts = distinct(facts);
    let Some(latest) = facts.last().map(|f| f.at) else {
        return empty(rule);
    };
    let first = |kind: Kind| facts.iter().find(|f| f.kind == kind);
    let created = first(Kind::RoomCreated);
    let ended = first(Kind::RoomEnded);
    let participants = participants(&facts, ended.map(|f| f.at), latest, rule);
    let billable_seconds = participants
        .iter()
        .fold(0u64, |sum, p| sum.saturating_add(p.billable_seconds));
    Ledger {
        room_name: facts.iter().find_map(|f| f.fact.room_name.clone()),
        status: match ended {
            Some(_) => RoomStatus::Ended,
            None => RoomStatus::InProgress,
        },
        created_at: created.map(|f| f.at),
        ended_at: ended.map(|f| f.at),
        room_duration: ended.and_then(|f| f.fact.room_duration),
        session: session(&participants, latest),
        participants,
        billing: billing(rule, billable_seconds),
        events: facts.len(),
    }
}

fn empty(rule: BillingRule) -> Ledger {
    Ledger {
        room_name: None,
        status: RoomStatus::InProgress,
        created_at: None,
        ended_at: None,
        room_duration: None,
        session: None,
        participants: Vec::new(),
        billing: billing(rule, 0),
        events: 0,
    }
}

fn billing(rule: BillingRule, billable_seconds: u64) -> Billing {
    Billing {
        rule,
        billable_seconds,
        billable_minutes: billable_seconds as f64 / 60.0,
    }
}

/// A fact's place in the canonical order: time, event rank, participant, content, id.
type Key<'a> = (
    OffsetDateTime,
    Kind,
    &'a Option<String>,
    &'a Option<String>,
    &'a Option<String>,
    Option<u64>,
    Option<u64>,
    &'a str,
);

/// A fact the ledger reads: its event known, its time in UTC.
struct Fact<'a> {
    kind: Kind,
    at: OffsetDateTime,
    fact: &'a RoomFact,
}

impl Fact<'_> {
    /// The canonical order. The content goes before the id so that, of several facts counted
    /// once, the one kept never depends on ids: a retry under a new id changes nothing.
    fn key(&self) -> Key<'_> {
        let f = self.fact;
        (
            self.at,
            self.kind,
            &f.participant_sid,
            &f.room_name,
            &f.participant_identity,
            f.participant_duration,
            f.room_duration,
            &f.id,
        )
    }
}

/// The facts that count, each once, in the canonical order.
fn distinct(facts: &[RoomFact]) -> Vec<Fact<'_>> {
    let mut known: Vec<Fact<'_>> = facts
        .iter()
        .filter_map(|fact| {
            let kind = Kind::parse(&fact.event)?;
            if kind.is_participant() && fact.participant_sid.is_none() {
                return None;
            }
            let at = fact.timestamp.checked_to_offset(UtcOffset::UTC)?;
            Some(Fact { kind, at, fact })
        })
        .collect();
    known.sort_by(|a, b| a.key().cmp(&b.key()));
    let mut ids = HashSet::new();
    known.retain(|f| ids.insert(f.fact.id.as_str()));
    let mut seen = HashSet::new();
    known.retain(|f| seen.insert((f.kind, f.fact.participant_sid.as_deref(), f.at)));
    known
}

/// One per `ParticipantSid`, in the listing order.
fn participants(
    facts: &[Fact<'_>],
    room_ended: Option<OffsetDateTime>,
    latest: OffsetDateTime,
    rule: BillingRule,
) -> Vec<Participant> {
    let mut by_sid: BTreeMap<&str, Vec<&Fact<'_>>> = BTreeMap::new();
    for f in facts.iter().filter(|f| f.kind.is_participant()) {
        if let Some(sid) = f.fact.participant_sid.as_deref() {
            by_sid.entry(sid).or_default().push(f);
        }
    }
    let mut list: Vec<Participant> = by_sid
        .into_iter()
        .map(|(sid, facts)| participant(sid, &facts, room_ended, latest, rule))
        .collect();
    let order = |p: &Participant| {
        (
            p.connected_at.or(p.disconnected_at),
            p.participant_sid.clone(),
        )
    };
    list.sort_by_key(order);
    list
}

/// One participant from its facts (canonical order).
fn participant(
    sid: &str,
    facts: &[&Fact<'_>],
    room_ended: Option<OffsetDateTime>,
    latest: OffsetDateTime,
    rule: BillingRule,
) -> Participant {
    let connect = facts
        .iter()
        .find(|f| f.kind == Kind::ParticipantConnected)
        .map(|f| f.at);
    // A disconnect dated before the connect is not this connection's end.
    let disconnect = facts
        .iter()
        .find(|f| f.kind == Kind::ParticipantDisconnected && connect.is_none_or(|c| f.at >= c));
    let participant_duration = disconnect.and_then(|d| d.fact.participant_duration);
    let (disconnected_at, closed_by) = match (disconnect, room_ended) {
        (Some(d), _) => (Some(d.at), Some(ClosedBy::ParticipantDisconnected)),
        (None, Some(end)) => (Some(end), Some(ClosedBy::RoomEnded)),
        (None, None) => (None, None),
    };
    let connected_at =
        connect.or_else(|| earlier(disconnect?.at, disconnect?.fact.participant_duration?));
    let connected_seconds = match (participant_duration, connected_at) {
        (Some(seconds), _) => seconds,
        (None, Some(from)) => whole_seconds(from, disconnected_at.unwrap_or(latest)),
        (None, None) => 0,
    };
    Participant {
        participant_sid: sid.to_owned(),
        identity: facts
            .iter()
            .find_map(|f| f.fact.participant_identity.clone()),
        connected_at,
        disconnected_at,
        closed_by,
        participant_duration,
        connected_seconds,
        billable_seconds: rule.billable(connected_seconds),
    }
}

/// `seconds` before `at`; None when that has no RFC 3339 form (year 0 to 9999), which only a
/// corrupt duration could reach.
fn earlier(at: OffsetDateTime, seconds: u64) -> Option<OffsetDateTime> {
    let before = at.checked_sub(Duration::seconds(i64::try_from(seconds).ok()?))?;
    (before.year() >= 0).then_some(before)
}

/// Whole seconds from `from` to `to`, floored; 0 when `to` is earlier.
fn whole_seconds(from: OffsetDateTime, to: OffsetDateTime) -> u64 {
    u64::try_from((to - from).whole_seconds()).unwrap_or(0)
}

/// The sweep over connect and disconnect instants (rules: module comment).
fn session(participants: &[Participant], latest: OffsetDateTime) -> Option<Session> {
    // The net change of the count at each instant: changes at one instant are applied together.
    let mut changes: BTreeMap<OffsetDateTime, i64> = BTreeMap::new();
    for p in participants {
        let Some(from) = p.connected_at else { continue };
        // An empty (or backwards) stay is no stay at all.
        if p.disconnected_at.is_some_and(|to| to <= from) {
            continue;
        }
        *changes.entry(from).or_default() += 1;
        if let Some(to) = p.disconnected_at {
            *changes.entry(to).or_default() -= 1;
        }
    }
    let (mut count, mut started_at, mut ended_at) = (0i64, None, None);
    for (at, change) in changes {
        let before = count >= 2;
        count += change;
        if count >= 2 {
            started_at.get_or_insert(at);
            ended_at = None;
        } else if before {
            ended_at = Some(at);
        }
    }
    let started_at = started_at?;
    Some(Session {
        started_at,
        ended_at,
        seconds: whole_seconds(started_at, ended_at.unwrap_or(latest)),
    })
}

/// The CSV's header line, `\r\n` included.
pub fn csv_header() -> &'static str {
    "account_sid,room_sid,room_name,status,created_at,ended_at,room_duration,session_seconds,\
     participant_sid,identity,connected_at,disconnected_at,closed_by,participant_duration,\
     connected_seconds,billable_seconds,rule\r\n"
}

/// Appends the ledger's CSV lines: one per participant, or one with empty participant columns
/// for a room without any. Times as in the JSON, absent values empty.
pub fn csv_rows(account_sid: &str, room_sid: &str, ledger: &Ledger, out: &mut String) {
    let room = [
        account_sid.to_owned(),
        room_sid.to_owned(),
        ledger.room_name.clone().unwrap_or_default(),
        ledger.status.as_str().to_owned(),
        csv_time(ledger.created_at),
        csv_time(ledger.ended_at),
        ledger
            .room_duration
            .map(|d| d.to_string())
            .unwrap_or_default(),
        ledger
            .session
            .as_ref()
            .map(|s| s.seconds.to_string())
            .unwrap_or_default(),
    ];
    let rule = ledger.billing.rule.as_str();
    if ledger.participants.is_empty() {
        csv_line(out, &room, &Default::default(), rule);
    }
    for p in &ledger.participants {
        let columns = [
            p.participant_sid.clone(),
            p.identity.clone().unwrap_or_default(),
            csv_time(p.connected_at),
            csv_time(p.disconnected_at),
            p.closed_by
                .map(ClosedBy::as_str)
                .unwrap_or_default()
                .to_owned(),
            p.participant_duration
                .map(|d| d.to_string())
                .unwrap_or_default(),
            p.connected_seconds.to_string(),
            p.billable_seconds.to_string(),
        ];
        csv_line(out, &room, &columns, rule);
    }
}

fn csv_line(out: &mut String, room: &[String; 8], participant: &[String; 8], rule: &str) {
    for field in room.iter().chain(participant) {
        csv_field(out, field);
        out.push(',');
    }
    csv_field(out, rule);
    out.push_str("\r\n");
}

/// One field, RFC 4180: quoted when it holds a comma, a quote, CR or LF, quotes doubled.
/// Identities and room names come from apps, and a spreadsheet runs a cell starting with `=`,
/// `+`, `-`, `@` (tab and CR too, in some) as a formula: those get a leading `'`.
fn csv_field(out: &mut String, field: &str) {
    let quoted = field.contains([',', '"', '\r', '\n']);
    if quoted {
        out.push('"');
    }
    if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        out.push('\'');
    }
    out.push_str(&field.replace('"', "\"\""));
    if quoted {
        out.push('"');
    }
}

fn csv_time(at: Option<OffsetDateTime>) -> String {
    at.and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    const BASE: OffsetDateTime = datetime!(2026-12-07 17:00:00 UTC);

    /// `seconds` (fractions allowed) after BASE.
    fn at(seconds: f64) -> OffsetDateTime {
        BASE + Duration::milliseconds((seconds * 1000.0).round() as i64)
    }

    fn fact(event: &str, timestamp: OffsetDateTime, participant: Option<&str>) -> RoomFact {
        RoomFact {
            id: format!(
                "{event}/{}/{}",
                participant.unwrap_or("-"),
                timestamp.unix_timestamp_nanos()
            ),
            event: event.to_owned(),
            timestamp,
            room_name: Some("consult-42".to_owned()),
            participant_sid: participant.map(str::to_owned),
            participant_identity: None,
            participant_duration: None,
            room_duration: None,
        }
    }

    fn created(seconds: f64) -> RoomFact {
        fact("room-created", at(seconds), None)
    }

    fn ended(seconds: f64, room_duration: u64) -> RoomFact {
        RoomFact {
            room_duration: Some(room_duration),
            ..fact("room-ended", at(seconds), None)
        }
    }

    fn connect(sid: &str, identity: &str, seconds: f64) -> RoomFact {
        RoomFact {
            participant_identity: Some(identity.to_owned()),
            ..fact("participant-connected", at(seconds), Some(sid))
        }
    }

    fn disconnect(sid: &str, identity: &str, seconds: f64, duration: Option<u64>) -> RoomFact {
        RoomFact {
            participant_identity: Some(identity.to_owned()),
            participant_duration: duration,
            ..fact("participant-disconnected", at(seconds), Some(sid))
        }
    }

    /// Alice waits 30 s for Bob; they talk 5 minutes; Alice leaves 5 s after Bob, and Twilio
    /// ends the room once it has been empty for 5 minutes.
    fn consult() -> Vec<RoomFact> {
        vec![
            created(0.0),
            connect("PA1", "alice", 5.0),
            connect("PA2", "bob", 35.0),
            disconnect("PA2", "bob", 335.0, Some(300)),
            disconnect("PA1", "alice", 340.0, Some(335)),
            ended(640.0, 640),
        ]
    }

    fn value(ledger: &Ledger) -> serde_json::Value {
        serde_json::to_value(ledger).unwrap()
    }

    #[test]
    fn a_consult_bills_each_participant_by_started_minute() {
        let ledger = ledger(&consult(), BillingRule::PerStartedMinute);
        let room = RoomObject {
            account_sid: "AC1",
            room_sid: "RM1",
            ledger: &ledger,
        };
        assert_eq!(
            serde_json::to_value(&room).unwrap(),
            json!({
                "account_sid": "AC1", "room_sid": "RM1", "room_name": "consult-42",
                "status": "ended",
                "created_at": "2026-12-07T17:00:00Z", "ended_at": "2026-12-07T17:10:40Z",
                "room_duration": 640,
                "session": {"started_at": "2026-12-07T17:00:35Z",
                            "ended_at": "2026-12-07T17:05:35Z", "seconds": 300},
                "participants": [
                    {"participant_sid": "PA1", "identity": "alice",
                     "connected_at": "2026-12-07T17:00:05Z",
                     "disconnected_at": "2026-12-07T17:05:40Z",
                     "closed_by": "participant-disconnected", "participant_duration": 335,
                     "connected_seconds": 335, "billable_seconds": 360},
                    {"participant_sid": "PA2", "identity": "bob",
                     "connected_at": "2026-12-07T17:00:35Z",
                     "disconnected_at": "2026-12-07T17:05:35Z",
                     "closed_by": "participant-disconnected", "participant_duration": 300,
                     "connected_seconds": 300, "billable_seconds": 300}
                ],
                "billing": {"rule": "per_started_minute", "billable_seconds": 660,
                            "billable_minutes": 11.0},
                "events": 6
            })
        );
    }

    #[test]
    fn the_session_is_the_consult_not_the_room() {
        let ledger = ledger(&consult(), BillingRule::PerSecond);
        let session = ledger.session.unwrap();
        assert_eq!(session.started_at, at(35.0));
        assert_eq!(session.ended_at, Some(at(335.0)));
        assert_eq!(session.seconds, 300);
        // The room ends five minutes after the last participant left.
        assert_eq!(ledger.ended_at, Some(at(640.0)));
        assert_eq!(ledger.room_duration, Some(640));
    }

    #[test]
    fn per_started_minute_rounds_up_and_per_second_does_not() {
        for (seconds, per_minute) in [(0, 0), (1, 60), (59, 60), (60, 60), (61, 120), (3600, 3600)]
        {
            assert_eq!(BillingRule::PerStartedMinute.billable(seconds), per_minute);
            assert_eq!(BillingRule::PerSecond.billable(seconds), seconds);
        }
        assert_eq!(BillingRule::PerStartedMinute.billable(u64::MAX), u64::MAX);

        let by_second = ledger(&consult(), BillingRule::PerSecond);
        assert_eq!(
            value(&by_second)["billing"],
            json!({"rule": "per_second", "billable_seconds": 635,
                   "billable_minutes": 635.0 / 60.0})
        );
        let seconds: Vec<u64> = by_second
            .participants
            .iter()
            .map(|p| p.billable_seconds)
            .collect();
        assert_eq!(seconds, [335, 300]);
    }

    #[test]
    fn a_participant_whose_disconnect_never_arrives_is_closed_by_the_room_end() {
        let facts = [
            connect("PA1", "alice", 0.5),
            connect("PA2", "bob", 10.0),
            disconnect("PA2", "bob", 70.0, Some(60)),
            ended(180.0, 180),
        ];
        let ledger = ledger(&facts, BillingRule::PerStartedMinute);
        let alice = &ledger.participants[0];
        assert_eq!(alice.participant_sid, "PA1");
        assert_eq!(alice.disconnected_at, Some(at(180.0)));
        assert_eq!(alice.closed_by, Some(ClosedBy::RoomEnded));
        assert_eq!(alice.participant_duration, None);
        assert_eq!(alice.connected_seconds, 179, "179.5 s, floored");
        assert_eq!(alice.billable_seconds, 180);
        assert_eq!(ledger.status, RoomStatus::Ended);
        assert_eq!(ledger.created_at, None);
        let session = ledger.session.unwrap();
        assert_eq!(
            (session.started_at, session.ended_at),
            (at(10.0), Some(at(70.0)))
        );
        assert_eq!(ledger.billing.billable_seconds, 240);
    }

    #[test]
    fn a_room_in_progress_counts_to_its_latest_fact() {
        let facts = [
            connect("PA1", "alice", 0.0),
            connect("PA2", "bob", 30.0),
            connect("PA3", "carol", 90.0),
        ];
        let ledger = ledger(&facts, BillingRule::PerSecond);
        assert_eq!(ledger.status, RoomStatus::InProgress);
        assert_eq!(ledger.ended_at, None);
        let seconds: Vec<u64> = ledger
            .participants
            .iter()
            .map(|p| p.connected_seconds)
            .collect();
        assert_eq!(seconds, [90, 60, 0]);
        assert!(ledger.participants.iter().all(|p| p.closed_by.is_none()));
        assert!(
            ledger
                .participants
                .iter()
                .all(|p| p.disconnected_at.is_none())
        );
        let session = ledger.session.unwrap();
        assert_eq!(
            (session.started_at, session.ended_at, session.seconds),
            (at(30.0), None, 60)
        );
    }

    #[test]
    fn a_disconnect_arriving_before_its_connect_changes_nothing() {
        let connected = connect("PA1", "alice", 5.0);
        let disconnected = disconnect("PA1", "alice", 65.0, Some(60));
        let in_order = ledger(
            &[connected.clone(), disconnected.clone()],
            BillingRule::PerSecond,
        );
        let reversed = ledger(&[disconnected.clone(), connected], BillingRule::PerSecond);
        assert_eq!(in_order, reversed);
        assert_eq!(in_order.participants[0].connected_at, Some(at(5.0)));

        // Only the disconnect so far: ParticipantDuration dates the connect.
        let alone = ledger(&[disconnected], BillingRule::PerSecond);
        let alice = &alone.participants[0];
        assert_eq!(
            (
                alice.connected_at,
                alice.disconnected_at,
                alice.connected_seconds
            ),
            (Some(at(5.0)), Some(at(65.0)), 60)
        );
        assert_eq!(alice.closed_by, Some(ClosedBy::ParticipantDisconnected));

        // Without one, nothing is known of the connection.
        let bare = ledger(
            &[disconnect("PA1", "alice", 65.0, None)],
            BillingRule::PerStartedMinute,
        );
        let alice = &bare.participants[0];
        assert_eq!((alice.connected_at, alice.connected_seconds), (None, 0));
        assert_eq!(alice.billable_seconds, 0);
        assert_eq!(alice.disconnected_at, Some(at(65.0)));

        // A corrupt duration reaching before year 0 leaves the connect unknown, and the
        // ledger still serialises.
        let corrupt = ledger(
            &[disconnect("PA1", "alice", 65.0, Some(u64::MAX))],
            BillingRule::PerStartedMinute,
        );
        assert_eq!(corrupt.participants[0].connected_at, None);
        assert_eq!(corrupt.billing.billable_seconds, u64::MAX);
        assert!(serde_json::to_value(&corrupt).is_ok());
    }

    #[test]
    fn a_disconnect_dated_before_the_connect_does_not_end_it() {
        let facts = [
            disconnect("PA1", "alice", 1.0, None),
            connect("PA1", "alice", 2.0),
            disconnect("PA1", "alice", 62.0, None),
        ];
        let alice = ledger(&facts, BillingRule::PerSecond).participants[0].clone();
        assert_eq!(
            (
                alice.connected_at,
                alice.disconnected_at,
                alice.connected_seconds
            ),
            (Some(at(2.0)), Some(at(62.0)), 60)
        );
    }

    #[test]
    fn the_session_spans_gaps_and_a_hand_off_keeps_it_going() {
        // Bob hands over to Carol at 20 s while Alice stays: two all along from 10 s to 30 s.
        let hand_off = [
            connect("PA1", "alice", 0.0),
            connect("PA2", "bob", 10.0),
            disconnect("PA2", "bob", 20.0, None),
            connect("PA3", "carol", 20.0),
            disconnect("PA3", "carol", 30.0, None),
            disconnect("PA1", "alice", 40.0, None),
        ];
        let session = ledger(&hand_off, BillingRule::PerSecond).session.unwrap();
        assert_eq!(
            (session.started_at, session.ended_at, session.seconds),
            (at(10.0), Some(at(30.0)), 20)
        );

        // Carol joins 5 s after Bob left: the span runs to her leaving, the gap included.
        let gap = [
            connect("PA1", "alice", 0.0),
            connect("PA2", "bob", 10.0),
            disconnect("PA2", "bob", 20.0, None),
            connect("PA3", "carol", 25.0),
            disconnect("PA3", "carol", 30.0, None),
            disconnect("PA1", "alice", 40.0, None),
        ];
        let session = ledger(&gap, BillingRule::PerSecond).session.unwrap();
        assert_eq!(
            (session.started_at, session.ended_at),
            (at(10.0), Some(at(30.0)))
        );

        // Alice leaves as Bob joins: never two at once.
        let relay = [
            connect("PA1", "alice", 0.0),
            disconnect("PA1", "alice", 20.0, None),
            connect("PA2", "bob", 20.0),
            disconnect("PA2", "bob", 40.0, None),
        ];
        assert_eq!(ledger(&relay, BillingRule::PerSecond).session, None);
    }

    #[test]
    fn each_fact_counts_once_and_other_events_are_ignored() {
        let mut facts = consult();
        facts.extend(consult());
        // The same connect under another id (its parameters differed elsewhere).
        facts.push(RoomFact {
            id: "another".to_owned(),
            ..connect("PA1", "alice", 5.0)
        });
        facts.push(fact("track-added", at(900.0), Some("PA1")));
        facts.push(fact("participant-connected", at(900.0), None));
        let ledger = ledger(&facts, BillingRule::PerStartedMinute);
        assert_eq!(ledger.events, 6);
        assert_eq!(
            value(&ledger),
            value(&super::ledger(&consult(), BillingRule::PerStartedMinute))
        );
        assert_eq!(super::ledger(&[], BillingRule::PerSecond).events, 0);
    }

    #[test]
    fn a_room_is_named_by_its_earliest_fact_naming_it() {
        let mut late = connect("PA1", "alice", 10.0);
        late.room_name = Some("later".to_owned());
        let mut early = connect("PA2", "bob", 5.0);
        early.room_name = Some("first".to_owned());
        let mut unnamed = created(0.0);
        unnamed.room_name = None;
        let ledger = ledger(&[late, unnamed, early], BillingRule::PerSecond);
        assert_eq!(ledger.room_name.as_deref(), Some("first"));
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn facts_are_read_from_twilio_parameters() {
        let disconnected = RoomFact::from_params(
            &params(&[
                ("AccountSid", "AC1"),
                ("RoomSid", "RM1"),
                ("RoomName", "consult-42"),
                ("StatusCallbackEvent", "participant-disconnected"),
                ("Timestamp", "2026-12-07T17:05:40.123Z"),
                ("ParticipantSid", "PA1"),
                ("ParticipantIdentity", "alice"),
                ("ParticipantDuration", "335"),
                ("SequenceNumber", "4"),
            ]),
            "SC1".to_owned(),
        )
        .unwrap();
        assert_eq!(disconnected.timestamp, at(340.123));
        assert_eq!(disconnected.participant_duration, Some(335));
        assert_eq!(disconnected.participant_identity.as_deref(), Some("alice"));
        assert_eq!(
            serde_json::to_value(&disconnected).unwrap(),
            json!({"id": "SC1", "e": "participant-disconnected", "t": "2026-12-07T17:05:40.123Z",
                   "rn": "consult-42", "ps": "PA1", "pi": "alice", "pd": 335})
        );
        let json = serde_json::to_string(&disconnected).unwrap();
        assert_eq!(
            serde_json::from_str::<RoomFact>(&json).unwrap(),
            disconnected
        );

        let ended = RoomFact::from_params(
            &params(&[
                ("StatusCallbackEvent", "room-ended"),
                ("Timestamp", "2026-12-07T19:10:40+02:00"),
                ("RoomName", ""),
                ("RoomDuration", "640"),
                ("ParticipantDuration", "soon"),
            ]),
            "SC2".to_owned(),
        )
        .unwrap();
        assert_eq!(ended.timestamp, at(640.0));
        assert_eq!(ended.timestamp.offset(), UtcOffset::UTC);
        assert_eq!(
            (ended.room_duration, ended.participant_duration),
            (Some(640), None)
        );
        assert_eq!(ended.room_name, None);

        for not_a_fact in [
            params(&[
                ("StatusCallbackEvent", "track-added"),
                ("Timestamp", "2026-12-07T17:00:00Z"),
            ]),
            params(&[("StatusCallbackEvent", "room-created")]),
            params(&[
                ("StatusCallbackEvent", "room-created"),
                ("Timestamp", "yesterday"),
            ]),
            params(&[("Timestamp", "2026-12-07T17:00:00Z")]),
        ] {
            assert_eq!(
                RoomFact::from_params(&not_a_fact, "SC".to_owned()),
                None,
                "{not_a_fact:?}"
            );
        }
    }

    #[test]
    fn csv_rows_quote_and_defuse_what_apps_named() {
        let mut facts = consult();
        for f in &mut facts {
            f.room_name = Some("consult, \"42\"".to_owned());
        }
        facts[1].participant_identity = Some("=HYPERLINK(\"x\")".to_owned());
        facts[4].participant_identity = None;
        let ledger = ledger(&facts, BillingRule::PerStartedMinute);
        let mut out = csv_header().to_owned();
        csv_rows("AC1", "RM1", &ledger, &mut out);
        assert_eq!(
            out,
            "account_sid,room_sid,room_name,status,created_at,ended_at,room_duration,\
             session_seconds,participant_sid,identity,connected_at,disconnected_at,closed_by,\
             participant_duration,connected_seconds,billable_seconds,rule\r\n\
             AC1,RM1,\"consult, \"\"42\"\"\",ended,2026-12-07T17:00:00Z,2026-12-07T17:10:40Z,640,300,\
             PA1,\"'=HYPERLINK(\"\"x\"\")\",2026-12-07T17:00:05Z,2026-12-07T17:05:40Z,\
             participant-disconnected,335,335,360,per_started_minute\r\n\
             AC1,RM1,\"consult, \"\"42\"\"\",ended,2026-12-07T17:00:00Z,2026-12-07T17:10:40Z,640,300,\
             PA2,bob,2026-12-07T17:00:35Z,2026-12-07T17:05:35Z,\
             participant-disconnected,300,300,300,per_started_minute\r\n"
        );

        let mut out = String::new();
        csv_rows(
            "AC1",
            "RM1",
            &super::ledger(&[created(0.0)], BillingRule::PerSecond),
            &mut out,
        );
        assert_eq!(
            out,
            "AC1,RM1,consult-42,in-progress,2026-12-07T17:00:00Z,,,,,,,,,,,,per_second\r\n"
        );

        for (field, written) in [
            ("alice", "alice"),
            ("-1+1", "'-1+1"),
            ("+1", "'+1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "\"'\rx\""),
            ("a\nb", "\"a\nb\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            let mut out = String::new();
            csv_field(&mut out, field);
            assert_eq!(out, written, "{field:?}");
        }
    }

    /// An instant of the generated rooms, in half seconds: one of the first two seconds half
    /// the time, so that facts often share one, else any in two minutes.
    fn moment() -> impl Strategy<Value = OffsetDateTime> {
        prop_oneof![0u32..4, 0u32..240].prop_map(|halves| at(f64::from(halves) / 2.0))
    }

    /// Connect times, disconnect times with their `ParticipantDuration`, the identity.
    type ParticipantEvents = (
        Vec<OffsetDateTime>,
        Vec<(OffsetDateTime, Option<u64>)>,
        Option<String>,
    );

    /// A participant's events: up to two connects and two disconnects, any order in time.
    fn participant_events() -> impl Strategy<Value = ParticipantEvents> {
        (
            prop::collection::vec(moment(), 0..3),
            prop::collection::vec((moment(), prop::option::of(0u64..200)), 0..3),
            prop::option::of("[a-z=]{1,5}"),
        )
    }

    /// A fact of a generated room, under the next id.
    fn push<'a>(
        facts: &'a mut Vec<RoomFact>,
        event: &str,
        timestamp: OffsetDateTime,
        participant_sid: Option<String>,
        room_name: Option<String>,
    ) -> &'a mut RoomFact {
        facts.push(RoomFact {
            id: format!("EV{}", facts.len()),
            event: event.to_owned(),
            timestamp,
            room_name,
            participant_sid,
            participant_identity: None,
            participant_duration: None,
            room_duration: None,
        });
        facts.last_mut().expect("just pushed")
    }

    /// A room's facts, each event once under its own id; other events mixed in.
    fn room() -> impl Strategy<Value = Vec<RoomFact>> {
        (
            prop::option::of(moment()),
            prop::collection::vec((moment(), prop::option::of(0u64..400)), 0..2),
            prop::collection::vec(participant_events(), 0..5),
            prop::collection::vec(moment(), 0..3),
            prop::option::of("[a-z-]{1,8}"),
        )
            .prop_map(|(created, ended, participants, others, name)| {
                let mut facts = Vec::new();
                let f = &mut facts;
                if let Some(t) = created {
                    push(f, "room-created", t, None, name.clone());
                }
                for (t, duration) in ended {
                    push(f, "room-ended", t, None, name.clone()).room_duration = duration;
                }
                for (i, (connects, disconnects, identity)) in participants.into_iter().enumerate() {
                    let sid = Some(format!("PA{i}"));
                    for t in connects {
                        let connect =
                            push(f, "participant-connected", t, sid.clone(), name.clone());
                        connect.participant_identity = identity.clone();
                    }
                    for (t, duration) in disconnects {
                        let disconnect =
                            push(f, "participant-disconnected", t, sid.clone(), name.clone());
                        disconnect.participant_identity = identity.clone();
                        disconnect.participant_duration = duration;
                    }
                }
                for t in others {
                    push(f, "track-added", t, Some("PA0".to_owned()), name.clone());
                }
                facts
            })
    }

    /// A room's facts, and the same delivered in any order with retries: under the same id,
    /// or under a new one (Twilio's `SequenceNumber` or another parameter the ledger does not
    /// read may differ).
    fn deliveries() -> impl Strategy<Value = (Vec<RoomFact>, Vec<RoomFact>)> {
        room()
            .prop_flat_map(|facts| {
                let retries = prop::collection::vec(
                    (0..facts.len().max(1), prop::option::of(any::<bool>())),
                    0..10,
                );
                (Just(facts), retries)
            })
            .prop_flat_map(|(facts, retries)| {
                let mut delivered = facts.clone();
                for (n, (i, new_id)) in retries.into_iter().enumerate() {
                    if let Some(f) = facts.get(i) {
                        let mut retry = f.clone();
                        // A new id sorting before every original, or after.
                        if let Some(before) = new_id {
                            retry.id = format!("{}retry{n}", if before { "#" } else { "~" });
                        }
                        delivered.push(retry);
                    }
                }
                (Just(facts), Just(delivered).prop_shuffle())
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The ledger is a function of the set of facts: order and retries change nothing.
        #[test]
        fn any_order_and_any_retries_give_the_same_ledger((facts, delivered) in deliveries()) {
            for rule in [BillingRule::PerStartedMinute, BillingRule::PerSecond] {
                let expected = ledger(&facts, rule);
                let got = ledger(&delivered, rule);
                prop_assert_eq!(value(&expected), value(&got));
                prop_assert_eq!(&expected, &got);
            }
        }

        /// Billing sums its participants; per started minute never bills less than per second.
        #[test]
        fn billing_adds_up(facts in room()) {
            let by_minute = ledger(&facts, BillingRule::PerStartedMinute);
            let by_second = ledger(&facts, BillingRule::PerSecond);
            let sum = |l: &Ledger| l.participants.iter().map(|p| p.billable_seconds).sum::<u64>();
            prop_assert_eq!(by_minute.billing.billable_seconds, sum(&by_minute));
            prop_assert_eq!(by_second.billing.billable_seconds, sum(&by_second));
            prop_assert!(by_minute.billing.billable_seconds.is_multiple_of(60));
            prop_assert!(by_minute.billing.billable_seconds >= by_second.billing.billable_seconds);
            for p in &by_second.participants {
                prop_assert_eq!(p.billable_seconds, p.connected_seconds);
            }
        }
    }
}
