//! `GET /v1/events/ws`'s session: an app backend's live feed of one account's events. It
//! reads the account's event log from where the subscriber left off (`after`, the position of
//! the last event it saw) and then follows it, sending each event the filter matches as one
//! text frame `{"position": "…", "event": <envelope>}`. A subscriber that reconnects with the
//! last position it saw gets every event kept since, in order, and none twice; events past
//! the retention are gone.
//!
//! The log is read, not pushed: the session asks for what follows its position every
//! `POLL` while idle, and at once when this replica keeps an event, so any replica can serve
//! any subscriber and nothing but the store is shared (an event kept by another replica
//! arrives within a poll). Generic over the socket, so it is tested with an in-memory pair.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::{Sink, Stream, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::session::send;
use crate::domain::{AccountSid, type_matches};
use crate::relay::Relay;
use crate::store::{LoggedEvent, StoreError};

/// Where a feed reads events from: the relay, or a stand-in in the tests.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync {
    async fn after(
        &self,
        account: &AccountSid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError>;
}

#[async_trait::async_trait]
impl EventLog for Relay {
    async fn after(
        &self,
        account: &AccountSid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        self.events_after(account, after, limit).await
    }
}

/// How often an idle feed asks the log for new events.
pub const POLL: Duration = Duration::from_millis(100);
/// Events read from the log at once.
const PAGE: usize = 200;
/// How long to wait before asking a store that failed again.
const STORE_RETRY: Duration = Duration::from_secs(1);
const GOING_AWAY: u16 = 1001;

/// Which events a subscriber wants: types (`*` matches any run of characters, so
/// `participant-*` or `com.twilio.voice.insights.*`), and a resource SID the event names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub types: Vec<String>,
    pub resource: Option<String>,
}

#[derive(Deserialize)]
struct Matched<'a> {
    #[serde(borrow, rename = "type")]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    resources: std::collections::BTreeMap<String, String>,
}

impl Filter {
    fn matches(&self, envelope: &[u8]) -> bool {
        if self.types.is_empty() && self.resource.is_none() {
            return true;
        }
        let Ok(event) = serde_json::from_slice::<Matched>(envelope) else {
            return false;
        };
        let type_ok =
            self.types.is_empty() || self.types.iter().any(|p| type_matches(p, &event.kind));
        let resource_ok = self
            .resource
            .as_ref()
            .is_none_or(|sid| event.resources.values().any(|v| v == sid));
        type_ok && resource_ok
    }
}

/// A position as the log gives them (`<ms>-<seq>`).
pub fn valid_position(text: &str) -> bool {
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    text.split_once('-').is_some_and(|(ms, seq)| {
        digits(ms)
            && digits(seq)
            && ms.parse::<u64>().is_ok()
            // The sequence after it must exist for the next read to start there.
            && seq.parse::<u64>().is_ok_and(|seq| seq < u64::MAX)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    ClientClosed,
    Unresponsive,
    ShuttingDown,
    WriteFailed,
    ReadFailed,
}

pub struct Feed {
    pub log: Arc<dyn EventLog>,
    pub account: AccountSid,
    pub filter: Filter,
    pub after: Option<String>,
    pub ping_interval: Duration,
    /// Woken when this replica keeps an event.
    pub kept: Arc<tokio::sync::Notify>,
}

impl Feed {
    pub async fn run<S, E>(mut self, mut socket: S, shutdown: CancellationToken) -> End
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
    {
        let mut ping =
            tokio::time::interval_at(Instant::now() + self.ping_interval, self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let mut next_read = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = &mut cancelled => {
                    let close = Message::Close(Some(CloseFrame {
                        code: GOING_AWAY,
                        reason: Utf8Bytes::from_static("callrelay is shutting down"),
                    }));
                    send(&mut socket, close).await;
                    return End::ShuttingDown;
                }
                incoming = socket.next() => match incoming {
                    Some(Ok(Message::Close(_))) | None => return End::ClientClosed,
                    Some(Ok(_)) => last_heard = Instant::now(),
                    Some(Err(_)) => return End::ReadFailed,
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() >= self.ping_interval * 2 {
                        return End::Unresponsive;
                    }
                    if !send(&mut socket, Message::Ping(Bytes::new())).await {
                        return End::WriteFailed;
                    }
                }
                _ = self.kept.notified() => next_read = Instant::now(),
                _ = tokio::time::sleep_until(next_read) => {
                    match self.read_and_send(&mut socket).await {
                        Ok(true) => next_read = Instant::now(),
                        Ok(false) => next_read = Instant::now() + POLL,
                        Err(Failed::Write) => return End::WriteFailed,
                        Err(Failed::Store) => next_read = Instant::now() + STORE_RETRY,
                    }
                }
            }
        }
    }

    /// Sends the next page of matching events; `true` when the page was full (more wait).
    async fn read_and_send<S, E>(&mut self, socket: &mut S) -> Result<bool, Failed>
    where
        S: Sink<Message, Error = E> + Unpin,
    {
        let page = match self
            .log
            .after(&self.account, self.after.as_deref(), PAGE)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(account = %self.account, error = %e, "event feed: the store did not answer; trying again");
                return Err(Failed::Store);
            }
        };
        let full = page.len() == PAGE;
        for event in page {
            // An entry without an envelope (not callrelay's) is passed over.
            let wanted = !event.envelope.is_empty() && self.filter.matches(&event.envelope);
            if wanted && !send(socket, frame(&event)).await {
                return Err(Failed::Write);
            }
            self.after = Some(event.position);
        }
        Ok(full)
    }
}

enum Failed {
    Write,
    Store,
}

/// `{"position":"…","event":<envelope>}`, the envelope as kept (it is JSON already).
fn frame(event: &LoggedEvent) -> Message {
    let mut text = String::with_capacity(event.envelope.len() + 48);
    text.push_str("{\"position\":\"");
    text.push_str(&event.position);
    text.push_str("\",\"event\":");
    text.push_str(std::str::from_utf8(&event.envelope).unwrap_or("null"));
    text.push('}');
    Message::Text(Utf8Bytes::from(text))
}

#[cfg(test)]
mod tests {
    use super::super::test_socket::pair;
    use super::*;
    use crate::config::EventRetention;
    use crate::store::Store;
    use crate::store::memory::MemoryStore;

    #[async_trait::async_trait]
    impl EventLog for MemoryStore {
        async fn after(
            &self,
            account: &AccountSid,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<LoggedEvent>, StoreError> {
            self.read_events(account, after, limit).await
        }
    }

    const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
    const KEEP: EventRetention = EventRetention {
        max_age: Duration::from_secs(600),
        max_events: 1000,
    };

    fn envelope(n: usize, kind: &str, room: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"id":"E{n}","type":"{kind}","resources":{{"RoomSid":"{room}"}}}}"#
        ))
    }

    async fn append(store: &MemoryStore, n: usize, kind: &str, room: &str) -> String {
        let account = AccountSid::parse(ACCOUNT).unwrap();
        match store
            .append_event(&account, &format!("E{n}"), envelope(n, kind, room), KEEP)
            .await
            .unwrap()
        {
            crate::store::Appended::New(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn ids(frames: &[Message]) -> Vec<String> {
        frames
            .iter()
            .filter_map(|m| match m {
                Message::Text(t) => Some(t.to_string()),
                _ => None,
            })
            .map(|t| {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                v["event"]["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn globs_and_filters() {
        assert!(type_matches("participant-*", "participant-connected"));
        assert!(type_matches("*", ""));
        assert!(type_matches(
            "com.twilio.*.complete",
            "com.twilio.voice.insights.call-summary.complete"
        ));
        assert!(!type_matches("participant-*", "room-ended"));
        assert!(!type_matches("room-ended", "room-ended-x"));
        assert!(
            type_matches("a*b*c", "abc")
                && type_matches("a*b*c", "axxbyyc")
                && !type_matches("a*b*c", "acb")
        );
        let filter = Filter {
            types: vec!["participant-*".into()],
            resource: Some("RM1".into()),
        };
        assert!(filter.matches(&envelope(1, "participant-connected", "RM1")));
        assert!(!filter.matches(&envelope(1, "participant-connected", "RM2")));
        assert!(!filter.matches(&envelope(1, "room-ended", "RM1")));
        assert!(Filter::default().matches(b"not even json"));
    }

    #[test]
    fn positions_are_checked() {
        assert!(valid_position("1765100000000-0"));
        assert!(!valid_position("1765100000000"));
        assert!(!valid_position("-1"));
        assert!(!valid_position("1-2-3"));
        assert!(!valid_position("a-1"));
        assert!(!valid_position("99999999999999999999-0"), "past u64");
        assert!(
            !valid_position("1-18446744073709551615"),
            "no sequence after it"
        );
        assert!(valid_position("1-18446744073709551614"));
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_backlog_after_its_position_then_what_arrives() {
        let store = MemoryStore::new();
        let first = append(&store, 1, "participant-connected", "RM1").await;
        append(&store, 2, "room-ended", "RM1").await;
        append(&store, 3, "participant-connected", "RM2").await;
        let (socket, to_feed, mut from_feed) = pair();
        let shutdown = CancellationToken::new();
        let feed = Feed {
            log: Arc::new(store.clone()),
            account: AccountSid::parse(ACCOUNT).unwrap(),
            filter: Filter {
                types: vec!["participant-*".into()],
                resource: None,
            },
            after: Some(first),
            ping_interval: Duration::from_secs(60),
            kept: Arc::new(tokio::sync::Notify::new()),
        };
        let task = tokio::spawn(feed.run(socket, shutdown.clone()));
        let mut frames = vec![from_feed.recv().await.unwrap()];
        append(&store, 4, "participant-disconnected", "RM1").await;
        frames.push(from_feed.recv().await.unwrap());
        assert_eq!(ids(&frames), ["E3", "E4"]);
        shutdown.cancel();
        assert_eq!(task.await.unwrap(), End::ShuttingDown);
        assert!(matches!(
            from_feed.recv().await,
            Some(Message::Close(Some(CloseFrame {
                code: GOING_AWAY,
                ..
            })))
        ));
        drop(to_feed);
    }

    #[tokio::test]
    async fn a_backlog_larger_than_a_page_arrives_whole_and_in_order() {
        let store = MemoryStore::new();
        for n in 0..(PAGE * 2 + 5) {
            append(&store, n, "room-created", "RM1").await;
        }
        let (socket, _to_feed, mut from_feed) = pair();
        let feed = Feed {
            log: Arc::new(store),
            account: AccountSid::parse(ACCOUNT).unwrap(),
            filter: Filter::default(),
            after: None,
            ping_interval: Duration::from_secs(60),
            kept: Arc::new(tokio::sync::Notify::new()),
        };
        let _task = tokio::spawn(feed.run(socket, CancellationToken::new()));
        let mut frames = Vec::new();
        while frames.len() < PAGE * 2 + 5 {
            frames.push(from_feed.recv().await.unwrap());
        }
        let expected: Vec<String> = (0..(PAGE * 2 + 5)).map(|n| format!("E{n}")).collect();
        assert_eq!(ids(&frames), expected);
    }
}
