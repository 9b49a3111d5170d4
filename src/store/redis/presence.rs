//! Socket presence in Redis, judged by Redis's clock.
//!
//! A presence is a field of the identity's sockets hash (`<p>:{AC…:bob}:sockets`, connection
//! id → JSON). The holder says how long its lease is (`lease_ms`); the `STAMP_PRESENCES`
//! script reads Redis's `TIME` and appends the lease's end to the JSON (`lease_end_ms`, Unix
//! milliseconds by Redis's clock). No replica's wall clock is involved, so a replica whose
//! clock is minutes off can neither write leases that others think long lapsed, nor, reading,
//! think (and sweep away) other replicas' live leases lapsed.
//!
//! Reading needs Redis's clock too, in the webhook's one round trip, from the node that holds
//! the hash (on Redis Cluster a command without a key may go to any node, whose clock is
//! another one). The script therefore also keeps, in the hash itself, the instant at which the
//! hash expires (field `~expires_ms`) and sets exactly that expiry (`PEXPIREAT`). A reader
//! sends `PTTL` on the hash next to its `HGETALL`: Redis's time at the read is
//! `~expires_ms − PTTL`. `PTTL` costs Redis a fraction of what a script returning `TIME`
//! would, on every webhook (see docs/decisions.md, "Presence by Redis's clock").
//!
//! The expiry only ever moves later, and every lease in the hash ends before it: a hash whose
//! replicas all died disappears by itself. `lease_until` (the writer's clock plus the lease)
//! is still written for replicas of earlier versions during a rolling upgrade, and is what a
//! presence that such a replica wrote (no `lease_end_ms`) is judged by.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::SocketPresence;
use crate::domain::{AccountSid, Identity};

/// The hash field holding the hash's own expiry, in Unix milliseconds by Redis's clock. Not a
/// connection id: those are 32 hexadecimal digits.
pub const CLOCK_FIELD: &str = "~expires_ms";

/// A presence as written; `STAMP_PRESENCES` appends `lease_end_ms`.
#[derive(Serialize)]
struct Written<'a> {
    conn_id: &'a str,
    account_sid: &'a AccountSid,
    identity: &'a Identity,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    takes_acks: bool,
    #[serde(with = "time::serde::rfc3339")]
    connected_at: OffsetDateTime,
    lease_ms: u64,
    /// For replicas of earlier versions only.
    #[serde(with = "time::serde::rfc3339")]
    lease_until: OffsetDateTime,
}

#[derive(Deserialize)]
struct Stored {
    conn_id: String,
    account_sid: AccountSid,
    identity: Identity,
    node: String,
    #[serde(default)]
    device_id: Option<String>,
    /// Absent in presences written by earlier versions: they took no acknowledgements.
    #[serde(default)]
    takes_acks: bool,
    #[serde(with = "time::serde::rfc3339")]
    connected_at: OffsetDateTime,
    #[serde(default)]
    lease_ms: u64,
    #[serde(with = "time::serde::rfc3339")]
    lease_until: OffsetDateTime,
    #[serde(default)]
    lease_end_ms: Option<i64>,
}

fn lease_ms(p: &SocketPresence) -> u64 {
    u64::try_from(p.lease.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The JSON a presence is written as (before the script stamps it). `writer_now` only dates
/// `lease_until`, for earlier versions.
pub fn written(p: &SocketPresence, writer_now: OffsetDateTime) -> String {
    serde_json::to_string(&Written {
        conn_id: &p.conn_id,
        account_sid: &p.account_sid,
        identity: &p.identity,
        node: &p.node,
        device_id: p.device_id.as_deref(),
        takes_acks: p.takes_acks,
        connected_at: p.connected_at,
        lease_ms: lease_ms(p),
        lease_until: writer_now + p.lease,
    })
    .expect("presences serialise")
}

/// One presence as `STAMP_PRESENCES` takes it: connection id, JSON, lease in milliseconds.
pub type StampArgs<'a> = (&'a str, String, u64);

/// The arguments of one `STAMP_PRESENCES` call per sockets hash, in the order given.
pub fn stamp_batches<'a>(
    presences: &'a [SocketPresence],
    key_of: impl Fn(&SocketPresence) -> String,
    writer_now: OffsetDateTime,
) -> Vec<(String, Vec<StampArgs<'a>>)> {
    let mut order: Vec<String> = Vec::new();
    let mut by_key: HashMap<String, Vec<StampArgs<'a>>> = HashMap::new();
    for p in presences {
        let key = key_of(p);
        let entry = by_key.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            Vec::new()
        });
        entry.push((p.conn_id.as_str(), written(p, writer_now), lease_ms(p)));
    }
    order
        .into_iter()
        .map(|key| {
            let batch = by_key.remove(&key).unwrap_or_default();
            (key, batch)
        })
        .collect()
}

/// What a read of one sockets hash found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    pub live: Vec<SocketPresence>,
    /// Lapsed or unreadable entries (field, value), to delete if they did not change.
    pub lapsed: Vec<(String, String)>,
}

/// Sorts the hash's entries into live and lapsed presences. `pttl` is the `PTTL` of the hash
/// read in the same round trip; `reader_now` (the reader's clock) judges only presences
/// written by earlier versions.
pub fn read(entries: Vec<(String, String)>, pttl: i64, reader_now: OffsetDateTime) -> Read {
    let redis_now = entries
        .iter()
        .find(|(field, _)| field == CLOCK_FIELD)
        .and_then(|(_, expires)| expires.parse::<i64>().ok())
        .filter(|_| pttl >= 0)
        .map(|expires| expires - pttl);
    let mut out = Read::default();
    for (field, text) in entries {
        if field == CLOCK_FIELD {
            continue;
        }
        let stored = match serde_json::from_str::<Stored>(&text) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(field, error = %e, "skipping unreadable presence");
                continue;
            }
        };
        let live = match (stored.lease_end_ms, redis_now) {
            (Some(end), Some(now)) => end > now,
            // Written by an earlier version, or the hash lost its clock field: the old rule.
            _ => stored.lease_until > reader_now,
        };
        if live {
            out.live.push(SocketPresence {
                conn_id: stored.conn_id,
                account_sid: stored.account_sid,
                identity: stored.identity,
                node: stored.node,
                device_id: stored.device_id,
                takes_acks: stored.takes_acks,
                connected_at: stored.connected_at,
                lease: Duration::from_millis(stored.lease_ms),
            });
        } else {
            out.lapsed.push((field, text));
        }
    }
    out.live.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(conn: &str) -> SocketPresence {
        SocketPresence {
            conn_id: conn.into(),
            account_sid: AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap(),
            identity: Identity::parse("bob").unwrap(),
            node: "n1".into(),
            device_id: None,
            takes_acks: false,
            connected_at: OffsetDateTime::UNIX_EPOCH,
            lease: Duration::from_secs(15),
        }
    }

    /// What the script writes: the JSON with `lease_end_ms` appended.
    fn stamped(p: &SocketPresence, writer_now: OffsetDateTime, end_ms: i64) -> String {
        let json = written(p, writer_now);
        format!("{},\"lease_end_ms\":{end_ms}}}", &json[..json.len() - 1])
    }

    #[test]
    fn leases_are_judged_by_redis_time_not_the_readers_or_writers_clock() {
        let expires = 1_000_000_i64;
        let pttl = 30_000; // Redis's clock reads 970 000 ms.
        let far_past = OffsetDateTime::UNIX_EPOCH;
        let far_future = OffsetDateTime::now_utc() + Duration::from_secs(86_400 * 365);
        let entries = vec![
            (CLOCK_FIELD.to_owned(), expires.to_string()),
            // The writer's clock was far behind; Redis stamped it to end after its now.
            ("a".to_owned(), stamped(&presence("a"), far_past, 971_000)),
            ("b".to_owned(), stamped(&presence("b"), far_future, 969_000)),
        ];
        for reader_now in [far_past, far_future] {
            let read = read(entries.clone(), pttl, reader_now);
            assert_eq!(read.live, vec![presence("a")], "reader at {reader_now}");
            assert_eq!(read.lapsed.len(), 1);
            assert_eq!(read.lapsed[0].0, "b");
        }
    }

    #[test]
    fn presences_from_earlier_versions_keep_the_old_rule() {
        let now = OffsetDateTime::now_utc();
        let old = |p: &SocketPresence, until: OffsetDateTime| {
            serde_json::json!({
                "conn_id": p.conn_id, "account_sid": p.account_sid.as_str(),
                "identity": p.identity.as_str(), "node": p.node,
                "connected_at": "1970-01-01T00:00:00Z",
                "lease_until": until.format(&time::format_description::well_known::Rfc3339).unwrap(),
            })
            .to_string()
        };
        let entries = vec![
            (
                "a".to_owned(),
                old(&presence("a"), now + Duration::from_secs(5)),
            ),
            (
                "b".to_owned(),
                old(&presence("b"), now - Duration::from_secs(5)),
            ),
            ("c".to_owned(), "not json".to_owned()),
        ];
        let read = read(entries, -1, now);
        assert_eq!(read.live.len(), 1);
        assert_eq!(read.live[0].conn_id, "a");
        assert_eq!(
            read.lapsed.len(),
            1,
            "unreadable entries are skipped, not swept"
        );
    }

    #[test]
    fn batches_group_presences_by_hash_in_order() {
        let mut p2 = presence("c2");
        p2.identity = Identity::parse("alice").unwrap();
        let ps = [presence("c1"), p2, presence("c3")];
        let batches = stamp_batches(&ps, |p| p.identity.to_string(), OffsetDateTime::UNIX_EPOCH);
        let shape: Vec<(String, Vec<&str>)> = batches
            .iter()
            .map(|(k, b)| (k.clone(), b.iter().map(|(c, _, _)| *c).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("bob".to_owned(), vec!["c1", "c3"]),
                ("alice".to_owned(), vec!["c2"])
            ]
        );
        assert_eq!(batches[0].1[0].2, 15_000);
        assert!(batches[0].1[0].1.ends_with('}'));
    }
}
