//! Twilio's events other than call notifications, parsed once at the edge: status callbacks
//! (Video Rooms, Recordings, Compositions and Composition Hooks, Media Processors and Player
//! Streamers; form parameters) and Event Streams (CloudEvents 1.0 in a JSON array).
//!
//! Twilio adds events and parameters when it likes, so nothing here rejects what it does not
//! know: an unknown event name is `StatusEvent::Other`, an unknown parameter is kept with the
//! rest, and every event keeps what Twilio sent (`Original`) for the envelope relayed to
//! consumers. Only what callrelay needs to accept an event at all is required: the account it
//! belongs to.
//!
//! Each event gets an id: a CloudEvent's own `id`; for a status callback, which has none, a
//! digest of its parameters, so that the same callback delivered twice (Twilio may) has the
//! same id and is kept once.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::AccountSid;

/// Parameters whose values name the resources an event concerns; the envelope lists those
/// present, so consumers can filter by room, participant, call… without knowing each event.
pub const RESOURCE_PARAMETERS: &[&str] = &[
    "RoomSid",
    "ParticipantSid",
    "TrackSid",
    "RecordingSid",
    "SourceSid",
    "CompositionSid",
    "HookSid",
    "MediaProcessorSid",
    "PlayerStreamerSid",
    "CallSid",
];

/// The longest event id callrelay keeps (CloudEvent ids are Twilio's `EZ…` SIDs).
pub const MAX_EVENT_ID_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("AccountSid is required: {0}")]
    AccountSid(String),
    #[error("the body is not form-encoded UTF-8")]
    NotForm,
    #[error("the body is not a JSON array of CloudEvents: {0}")]
    NotCloudEvents(String),
    #[error("event {index}: {why}")]
    CloudEvent { index: usize, why: String },
    #[error("the events name more than one account, or another than the URL's AccountSid")]
    MixedAccounts,
}

/// What kind of resource an event is about, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Room,
    Participant,
    Track,
    Recording,
    Composition,
    CompositionHook,
    MediaProcessor,
    PlayerStreamer,
    EventStreams,
    Unknown,
}

/// Every status-callback event Twilio documents, and the rest by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusEvent {
    RoomCreated,
    RoomEnded,
    ParticipantConnected,
    ParticipantDisconnected,
    TrackAdded,
    TrackRemoved,
    TrackEnabled,
    TrackDisabled,
    RecordingStarted,
    RecordingCompleted,
    RecordingFailed,
    CompositionEnqueued,
    CompositionHookFailed,
    CompositionStarted,
    CompositionAvailable,
    CompositionProgress,
    CompositionFailed,
    MediaProcessorStarted,
    MediaProcessorEnded,
    MediaProcessorFailed,
    /// `stream-started`.
    StreamStarted,
    /// `stream-ended`, or `player-streamer-ended` as one of Twilio's tables names it.
    StreamEnded,
    /// `stream-failed`, or `player-streamer-failed`.
    StreamFailed,
    /// Not (yet) documented; kept and relayed by its name.
    Other(String),
}

impl StatusEvent {
    /// The known events by name, aliases included.
    const KNOWN: &[(&str, StatusEvent)] = &[
        ("room-created", Self::RoomCreated),
        ("room-ended", Self::RoomEnded),
        ("participant-connected", Self::ParticipantConnected),
        ("participant-disconnected", Self::ParticipantDisconnected),
        ("track-added", Self::TrackAdded),
        ("track-removed", Self::TrackRemoved),
        ("track-enabled", Self::TrackEnabled),
        ("track-disabled", Self::TrackDisabled),
        ("recording-started", Self::RecordingStarted),
        ("recording-completed", Self::RecordingCompleted),
        ("recording-failed", Self::RecordingFailed),
        ("composition-enqueued", Self::CompositionEnqueued),
        ("composition-hook-failed", Self::CompositionHookFailed),
        ("composition-started", Self::CompositionStarted),
        ("composition-available", Self::CompositionAvailable),
        ("composition-progress", Self::CompositionProgress),
        ("composition-failed", Self::CompositionFailed),
        ("media-processor-started", Self::MediaProcessorStarted),
        ("media-processor-ended", Self::MediaProcessorEnded),
        ("media-processor-failed", Self::MediaProcessorFailed),
        ("stream-started", Self::StreamStarted),
        ("stream-ended", Self::StreamEnded),
        ("stream-failed", Self::StreamFailed),
        ("player-streamer-ended", Self::StreamEnded),
        ("player-streamer-failed", Self::StreamFailed),
    ];

    pub fn parse(name: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|(known, _)| *known == name)
            .map_or_else(|| Self::Other(name.to_owned()), |(_, e)| e.clone())
    }

    pub fn family(&self) -> Family {
        use StatusEvent::*;
        match self {
            RoomCreated | RoomEnded => Family::Room,
            ParticipantConnected | ParticipantDisconnected => Family::Participant,
            TrackAdded | TrackRemoved | TrackEnabled | TrackDisabled => Family::Track,
            RecordingStarted | RecordingCompleted | RecordingFailed => Family::Recording,
            CompositionEnqueued | CompositionStarted | CompositionAvailable
            | CompositionProgress | CompositionFailed => Family::Composition,
            CompositionHookFailed => Family::CompositionHook,
            MediaProcessorStarted | MediaProcessorEnded | MediaProcessorFailed => {
                Family::MediaProcessor
            }
            StreamStarted | StreamEnded | StreamFailed => Family::PlayerStreamer,
            Other(_) => Family::Unknown,
        }
    }
}

/// A status callback: its parameters as sent (order kept), and what callrelay reads of them.
#[derive(Debug, Clone)]
pub struct StatusCallback {
    pub account_sid: AccountSid,
    /// `StatusCallbackEvent`; `Other("")` when Twilio sent none.
    pub event: StatusEvent,
    /// The event's name as Twilio sent it (an alias stays an alias).
    pub event_name: String,
    pub params: Vec<(String, String)>,
}

impl StatusCallback {
    /// From decoded form or query parameters.
    pub fn parse(params: Vec<(String, String)>) -> Result<Self, InvalidEvent> {
        let value = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let account =
            value("AccountSid").ok_or_else(|| InvalidEvent::AccountSid("missing".into()))?;
        let account_sid =
            AccountSid::parse(account).map_err(|e| InvalidEvent::AccountSid(e.to_string()))?;
        let event_name = value("StatusCallbackEvent").unwrap_or_default().to_owned();
        Ok(Self {
            account_sid,
            event: StatusEvent::parse(&event_name),
            event_name,
            params,
        })
    }

    /// Decodes an `application/x-www-form-urlencoded` body or query string.
    pub fn decode(text: &[u8]) -> Result<Vec<(String, String)>, InvalidEvent> {
        std::str::from_utf8(text).map_err(|_| InvalidEvent::NotForm)?;
        Ok(form_urlencoded::parse(text).into_owned().collect())
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Same parameters, same id: a digest over the parameters in name order.
    pub fn id(&self) -> String {
        let mut sorted: Vec<&(String, String)> = self.params.iter().collect();
        sorted.sort();
        let mut hash = Sha256::new();
        for (k, v) in sorted {
            for part in [k, v] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part.as_bytes());
            }
        }
        format!("SC{}", &hex::encode(hash.finalize())[..32])
    }

    pub fn envelope(&self, received_at: OffsetDateTime) -> Envelope<'_> {
        let mut params: BTreeMap<&str, ParamValue<'_>> = BTreeMap::new();
        for (k, v) in &self.params {
            params
                .entry(k)
                .and_modify(|existing| existing.push(v))
                .or_insert(ParamValue::One(v));
        }
        Envelope {
            id: self.id(),
            account_sid: &self.account_sid,
            source: "status-callback",
            kind: self.event_name.clone(),
            family: self.event.family(),
            resources: RESOURCE_PARAMETERS
                .iter()
                .filter_map(|name| Some((*name, self.value(name)?.to_owned())))
                .collect(),
            timestamp: self.value("Timestamp").map(str::to_owned),
            received_at: rfc3339(received_at),
            params: Some(params),
            cloudevent: None,
        }
    }
}

/// Whether an event type matches a subscriber's or a target's pattern: `*` matches any run
/// of characters (none included); everything else itself.
pub fn type_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// One form parameter's value, or several when the name was repeated.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ParamValue<'a> {
    One(&'a str),
    Many(Vec<&'a str>),
}

impl<'a> ParamValue<'a> {
    fn push(&mut self, v: &'a str) {
        *self = match std::mem::replace(self, ParamValue::Many(Vec::new())) {
            ParamValue::One(first) => ParamValue::Many(vec![first, v]),
            ParamValue::Many(mut all) => {
                all.push(v);
                ParamValue::Many(all)
            }
        };
    }
}

/// One CloudEvent of an Event Streams delivery: the members callrelay reads, and the event
/// exactly as sent.
#[derive(Debug, Clone)]
pub struct CloudEvent {
    pub id: String,
    pub kind: String,
    pub source: String,
    pub time: Option<String>,
    /// The account, from `data.account_sid` (`data` may be a JSON document in a string).
    pub account_sid: Option<AccountSid>,
    pub call_sid: Option<String>,
    /// `data`, read (from its string when it is one): the call trace takes Voice Insights
    /// summaries from it.
    pub data: Option<serde_json::Value>,
    pub raw: Box<RawValue>,
}

impl CloudEvent {
    /// Every element of an Event Streams body, in order.
    pub fn parse_batch(body: &[u8]) -> Result<Vec<CloudEvent>, InvalidEvent> {
        let elements: Vec<Box<RawValue>> = serde_json::from_slice(body)
            .map_err(|e| InvalidEvent::NotCloudEvents(e.to_string()))?;
        elements
            .into_iter()
            .enumerate()
            .map(|(index, raw)| {
                Self::parse(raw).map_err(|why| InvalidEvent::CloudEvent { index, why })
            })
            .collect()
    }

    fn parse(raw: Box<RawValue>) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        let object = value.as_object().ok_or("not a JSON object")?;
        let text = |name: &str| object.get(name).and_then(|v| v.as_str());
        let id = text("id").ok_or("id is required and must be a string")?;
        // Forwarded as the `webhook-id` header: visible ASCII only.
        if id.is_empty() || id.len() > MAX_EVENT_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "id must be 1 to {MAX_EVENT_ID_LEN} visible ASCII characters"
            ));
        }
        let kind = text("type").ok_or("type is required and must be a string")?;
        // `data` as sent: an object, or a JSON document in a string.
        let data = match object.get("data") {
            Some(serde_json::Value::String(s)) => serde_json::from_str(s).ok(),
            Some(other) => Some(other.clone()),
            None => None,
        };
        let data_text = |name: &str| {
            data.as_ref()
                .and_then(|d| d.get(name))
                .and_then(|v| v.as_str())
        };
        let account_sid = data_text("account_sid").and_then(|s| AccountSid::parse(s).ok());
        let call_sid = data_text("call_sid").map(str::to_owned);
        Ok(Self {
            id: id.to_owned(),
            kind: kind.to_owned(),
            source: text("source").unwrap_or_default().to_owned(),
            time: text("time").map(str::to_owned),
            account_sid,
            call_sid,
            data,
            raw,
        })
    }

    pub fn envelope<'a>(
        &'a self,
        account_sid: &'a AccountSid,
        received_at: OffsetDateTime,
    ) -> Envelope<'a> {
        let mut resources = BTreeMap::new();
        if let Some(call) = &self.call_sid {
            resources.insert("CallSid", call.clone());
        }
        Envelope {
            id: self.id.clone(),
            account_sid,
            source: "event-streams",
            kind: self.kind.clone(),
            family: Family::EventStreams,
            resources,
            timestamp: self.time.clone(),
            received_at: rfc3339(received_at),
            params: None,
            cloudevent: Some(&self.raw),
        }
    }
}

/// The one form every event is kept and relayed in (`bindings-schema/event-envelope.schema.json`).
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub id: String,
    pub account_sid: &'a AccountSid,
    /// `status-callback` or `event-streams`.
    pub source: &'static str,
    /// `StatusCallbackEvent`, or the CloudEvent's `type`.
    #[serde(rename = "type")]
    pub kind: String,
    pub family: Family,
    /// The resource SIDs the event names (`RoomSid`, `ParticipantSid`, `CallSid`…).
    pub resources: BTreeMap<&'static str, String>,
    /// Twilio's time for the event (`Timestamp`, or the CloudEvent's `time`), as sent.
    pub timestamp: Option<String>,
    pub received_at: String,
    /// A status callback's parameters, every one, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<&'a str, ParamValue<'a>>>,
    /// An Event Streams event, verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloudevent: Option<&'a RawValue>,
}

impl Envelope<'_> {
    pub fn to_json(&self) -> bytes::Bytes {
        serde_json::to_vec(self)
            .expect("an envelope serialises")
            .into()
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_documented_event_has_its_family_and_unknown_ones_are_kept() {
        for (name, family) in [
            ("room-created", Family::Room),
            ("participant-disconnected", Family::Participant),
            ("track-disabled", Family::Track),
            ("recording-failed", Family::Recording),
            ("composition-progress", Family::Composition),
            ("composition-hook-failed", Family::CompositionHook),
            ("media-processor-ended", Family::MediaProcessor),
            ("stream-ended", Family::PlayerStreamer),
            ("player-streamer-failed", Family::PlayerStreamer),
        ] {
            assert_eq!(StatusEvent::parse(name).family(), family, "{name}");
        }
        assert_eq!(StatusEvent::KNOWN.len(), 25);
        let other = StatusEvent::parse("room-renamed");
        assert_eq!(other, StatusEvent::Other("room-renamed".into()));
        assert_eq!(other.family(), Family::Unknown);
    }

    #[test]
    fn a_callback_keeps_every_parameter_and_names_its_resources() {
        let callback = StatusCallback::parse(params(&[
            ("AccountSid", ACCOUNT),
            ("RoomSid", "RM1"),
            ("ParticipantSid", "PA1"),
            ("StatusCallbackEvent", "participant-connected"),
            ("Timestamp", "2026-12-07T10:00:00.000Z"),
            ("SomethingNew", "kept"),
            ("SomethingNew", "twice"),
        ]))
        .unwrap();
        let envelope: serde_json::Value =
            serde_json::from_slice(&callback.envelope(OffsetDateTime::UNIX_EPOCH).to_json())
                .unwrap();
        assert_eq!(envelope["type"], "participant-connected");
        assert_eq!(envelope["family"], "participant");
        assert_eq!(envelope["source"], "status-callback");
        assert_eq!(envelope["resources"]["RoomSid"], "RM1");
        assert_eq!(envelope["resources"]["ParticipantSid"], "PA1");
        assert_eq!(envelope["timestamp"], "2026-12-07T10:00:00.000Z");
        assert_eq!(envelope["received_at"], "1970-01-01T00:00:00Z");
        assert_eq!(
            envelope["params"]["SomethingNew"],
            serde_json::json!(["kept", "twice"])
        );
        assert!(envelope.get("cloudevent").is_none());
    }

    #[test]
    fn the_same_parameters_in_any_order_have_the_same_id() {
        let a = StatusCallback::parse(params(&[("AccountSid", ACCOUNT), ("A", "1"), ("B", "2")]))
            .unwrap();
        let b = StatusCallback::parse(params(&[("B", "2"), ("A", "1"), ("AccountSid", ACCOUNT)]))
            .unwrap();
        let c = StatusCallback::parse(params(&[("AccountSid", ACCOUNT), ("A", "12"), ("B", "")]))
            .unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id(), "values are delimited, not concatenated");
        assert!(a.id().starts_with("SC") && a.id().len() == 34);
    }

    #[test]
    fn a_callback_needs_its_account() {
        assert!(matches!(
            StatusCallback::parse(params(&[("StatusCallbackEvent", "room-ended")])),
            Err(InvalidEvent::AccountSid(_))
        ));
        assert!(matches!(
            StatusCallback::parse(params(&[("AccountSid", "ACnope")])),
            Err(InvalidEvent::AccountSid(_))
        ));
    }

    #[test]
    fn cloud_events_keep_their_data_exactly_and_find_the_account_inside_a_string() {
        let body = format!(
            r#"[{{"specversion":"1.0","type":"com.twilio.voice.insights.call-summary.complete","source":"/v1/Voice/CA1/Summary","id":"EZ1","time":"2026-12-07T10:00:00Z","data":"{{\"call_sid\":\"CA1\",\"account_sid\":\"{ACCOUNT}\"}}"}},
               {{"specversion":"1.0","type":"x.y","source":"/s","id":"EZ2","data":{{"account_sid":"{ACCOUNT}"}}}}]"#
        );
        let events = CloudEvent::parse_batch(body.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].account_sid.as_ref().unwrap().as_str(), ACCOUNT);
        assert_eq!(events[0].call_sid.as_deref(), Some("CA1"));
        assert_eq!(events[1].account_sid.as_ref().unwrap().as_str(), ACCOUNT);

        let account = AccountSid::parse(ACCOUNT).unwrap();
        let json = events[0]
            .envelope(&account, OffsetDateTime::UNIX_EPOCH)
            .to_json();
        let envelope: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(envelope["family"], "event-streams");
        assert_eq!(envelope["resources"]["CallSid"], "CA1");
        // The CloudEvent verbatim: `data` is still a string.
        assert!(envelope["cloudevent"]["data"].is_string());
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(events[0].raw.get()), "{text}");
    }

    #[test]
    fn a_cloud_event_needs_an_id_and_a_type() {
        for body in [
            r#"{"id":"EZ1"}"#,
            r#"[{"type":"t"}]"#,
            r#"[{"id":"","type":"t"}]"#,
            r#"[{"id":"EZ 1","type":"t"}]"#,
            r#"[1]"#,
        ] {
            assert!(CloudEvent::parse_batch(body.as_bytes()).is_err(), "{body}");
        }
        assert!(CloudEvent::parse_batch(b"[]").unwrap().is_empty());
    }
}
