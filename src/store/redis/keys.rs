//! The Redis key layout. Everything about one (account, identity) shares the hash tag
//! `{AC…:identity}`, so one round trip answers a webhook and the layout works unchanged on
//! Redis Cluster.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:{AC…:bob}:b` | string | the identity's bindings, one line each (`lines.rs`), expiring with the longest-lived |
//! | `<p>:{AC…:bob}:sockets` | hash | connection id → socket presence JSON |
//! | `<p>:tok:{AC…:<00-ff>}` | hash | the device-token index, in 256 buckets per account: digest of a token → who may hold it and who owns it, with its expiry (`binding_scripts.rs`, `index.rs`) |
//! | `<p>:layout` | string | `2` once nothing of the earlier layout is left (`legacy.rs`) |
//! | `<p>:{AC…:bob}:msg:<twi_message_id>` | string | `pending:<owner>` (a claim, expiring) or `delivered` (for the dedupe window) |
//! | `<p>:{AC…:events}:log` | stream | the account's events (field `e`: the envelope JSON), trimmed by `events.retention_secs` and `events.max_per_account` |
//! | `<p>:{AC…:events}:id:<event id>` | string | the stream position of an event id seen within the retention (dedupe) |
//! | `<p>:{AC…:events}:targets` | hash | forwarding targets added through the admin API: name → JSON (url, types, secret) |
//! | `<p>:{AC…:events}:fwd:<target>:lease` | string | the node forwarding the account's events to a target (expiring) |
//! | `<p>:{AC…:events}:fwd:<target>:cursor` | string | the position of the last event handed to the target |
//! | `<p>:{AC…:events}:fwd:<target>:replay` | list | failed positions an admin asked to send again, oldest first |
//! | `<p>:{AC…:events}:fwd:<target>:failed` | list | positions of events the target did not take within the retry budget (the most recent 10,000) |
//! | `<p>:trace:{AC…:CA…}` | string | the call's trace entries, one JSON line each, the most recent 64, expiring `calls.retention_secs` after the last (`records.rs`) |
//! | `<p>:{AC…:bob}:calls` | list | `<ms>:<call SID>` per notification recorded: the identity's calls; readers take the most recent `calls.max_per_identity`, and the list is trimmed to that number once longer by more than an eighth plus one; each entry kept at least the retention (`appends.rs`) |
//! | `<p>:{AC…:bob}:ringing` | list | `<ms>\n<payload>` per call notification for the identity: readers take the most recent 32; each kept at least `websocket.ringing_window_secs` (`appends.rs`); replayed to clients reconnecting with `replay_since` |
//! | `<p>:room:{AC…:RM…}` | hash | fact id → room-ledger fact (JSON), expiring after `rooms.retention_secs` |
//! | `<p>:{AC…:rooms}:index` | sorted set | room SID → its earliest fact's `Timestamp` (ms) |
//! | `<p>:node:<node id>` | pub/sub channel | messages for one replica (sharded on a cluster) |
//! | `<p>:{…}:replicated` | string | written before `WAIT` when `store.min_replica_acks` is set |
//!
//! Left by versions before 0.2 and moved by `legacy.rs` (lazily, or by `callrelay migrate`):
//!
//! | key | type | held |
//! |---|---|---|
//! | `<p>:{AC…:bob}:bindings` | hash | binding id → binding JSON |
//! | `<p>:addr:{AC…:apns:<token>}` | string | `["identity","binding id"]`: who owned the token |
//! | `<p>:addr:{AC…:apns:<token>}:claims` | hash | owner JSON → claim number; `#seq` → the last claim number |
//!
//! Left by versions before 0.2.1, read until the retention has passed, never written:
//!
//! | key | type | held |
//! |---|---|---|
//! | `<p>:call:{AC…:CA…}` | list | the call's trace entries (JSON) |

use sha2::{Digest, Sha256};

use crate::domain::{AccountSid, CallSid, Identity, PushChannel, RoomSid};

/// Bytes of a token's digest that name it in the index: 96 bits, so that an accidental
/// collision among a billion tokens has odds of about 2^-37, in a field of 16 bytes in
/// Redis's allocator (a 16-byte digest would take 32). A deliberate collision would need the
/// victim's token, and whoever has that can register it anyway.
const TOKEN_DIGEST_LEN: usize = 12;

/// A key of the layout of versions before 0.2 (`legacy.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyKey {
    /// An identity's hash of bindings.
    Identity(AccountSid, Identity),
    /// A token's owner or claims in the old index.
    Token(AccountSid, PushChannel, String),
}

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What a key of the earlier layout is about; `None` for any other key.
    pub fn parse_legacy(&self, key: &str) -> Option<LegacyKey> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix(':')?;
        if let Some(token) = rest.strip_prefix("addr:{") {
            let inner = token
                .strip_suffix("}:claims")
                .or_else(|| token.strip_suffix('}'))?;
            let (account, rest) = inner.split_once(':')?;
            let (channel, address) = rest.split_once(':')?;
            let channel = match channel {
                "apns" => PushChannel::Apns,
                "fcm" => PushChannel::Fcm,
                _ => return None,
            };
            return Some(LegacyKey::Token(
                AccountSid::parse(account).ok()?,
                channel,
                address.to_owned(),
            ));
        }
        let inner = rest.strip_prefix('{')?.strip_suffix("}:bindings")?;
        let (account, identity) = inner.split_once(':')?;
        Some(LegacyKey::Identity(
            AccountSid::parse(account).ok()?,
            Identity::parse(identity).ok()?,
        ))
    }

    /// An identity's bindings, one line each (`lines.rs`).
    pub fn bindings(&self, account: &AccountSid, identity: &Identity) -> String {
        format!("{}:{{{account}:{identity}}}:b", self.prefix)
    }

    /// An identity's bindings as versions before 0.2 kept them (a hash of JSON), beside the
    /// new string: the scripts that change the string check it in the same slot.
    pub fn legacy_bindings(&self, account: &AccountSid, identity: &Identity) -> String {
        format!("{}:{{{account}:{identity}}}:bindings", self.prefix)
    }

    /// Where the index keeps a device token: its bucket (one of 256 per account, by the
    /// digest's first byte) and its field there (the digest). The token itself is only in its
    /// binding's line.
    pub fn token(
        &self,
        account: &AccountSid,
        channel: PushChannel,
        address: &str,
    ) -> (String, Vec<u8>) {
        let mut hash = Sha256::new();
        hash.update(channel.as_str().as_bytes());
        hash.update(b":");
        hash.update(address.as_bytes());
        let digest = hash.finalize();
        let bucket = format!("{}:tok:{{{account}:{:02x}}}", self.prefix, digest[0]);
        (bucket, digest[..TOKEN_DIGEST_LEN].to_vec())
    }

    /// `2` once nothing of the earlier layout is left.
    pub fn layout(&self) -> String {
        format!("{}:layout", self.prefix)
    }

    pub fn sockets(&self, account: &AccountSid, identity: &Identity) -> String {
        format!("{}:{{{account}:{identity}}}:sockets", self.prefix)
    }

    /// Who owned a device token, in the earlier layout.
    pub fn legacy_address(
        &self,
        account: &AccountSid,
        channel: PushChannel,
        address: &str,
    ) -> String {
        format!(
            "{}:addr:{{{account}:{}:{address}}}",
            self.prefix,
            channel.as_str()
        )
    }

    /// Who may hold a device token, in the earlier layout (beside `legacy_address`).
    pub fn legacy_claims(
        &self,
        account: &AccountSid,
        channel: PushChannel,
        address: &str,
    ) -> String {
        format!("{}:claims", self.legacy_address(account, channel, address))
    }

    /// Under the callee's hash tag, so that one pipeline looks up the targets and claims the
    /// notification, and works unchanged on Redis Cluster.
    pub fn message(&self, account: &AccountSid, identity: &Identity, message_id: &str) -> String {
        format!("{}:{{{account}:{identity}}}:msg:{message_id}", self.prefix)
    }

    /// An account's event log, under the hash tag `{AC…:events}` with its id markers. An
    /// identity named `events` shares that tag, and so the slot, but none of its keys
    /// (`:bindings`, `:sockets`, `:msg:…`) is one of these.
    pub fn event_log(&self, account: &AccountSid) -> String {
        format!("{}:{{{account}:events}}:log", self.prefix)
    }

    /// The marker of an event id seen, beside its account's log.
    pub fn event_id(&self, account: &AccountSid, event_id: &str) -> String {
        format!("{}:{{{account}:events}}:id:{event_id}", self.prefix)
    }

    /// The forwarding targets added through the admin API.
    pub fn event_targets(&self, account: &AccountSid) -> String {
        format!("{}:{{{account}:events}}:targets", self.prefix)
    }

    /// Forwarding state of one target (`lease`, `cursor`, `failed`, `replay`), beside the log.
    pub fn forwarder(&self, account: &AccountSid, target: &str, what: &str) -> String {
        format!("{}:{{{account}:events}}:fwd:{target}:{what}", self.prefix)
    }

    /// A call's trace, under a tag of its own: calls spread over a cluster's slots.
    pub fn call(&self, account: &AccountSid, call_sid: &CallSid) -> String {
        format!("{}:trace:{{{account}:{call_sid}}}", self.prefix)
    }

    /// A call's trace as versions before 0.2.1 kept it (a list), in the same slot.
    pub fn legacy_call(&self, account: &AccountSid, call_sid: &CallSid) -> String {
        format!("{}:call:{{{account}:{call_sid}}}", self.prefix)
    }

    /// The calls recorded for an identity, beside its bindings.
    pub fn identity_calls(&self, account: &AccountSid, identity: &Identity) -> String {
        format!("{}:{{{account}:{identity}}}:calls", self.prefix)
    }

    /// Copies of an identity's recent call notifications, for replay, beside its bindings.
    pub fn ringing(&self, account: &AccountSid, identity: &Identity) -> String {
        format!("{}:{{{account}:{identity}}}:ringing", self.prefix)
    }

    /// A room's ledger facts, under a tag of their own.
    pub fn room(&self, account: &AccountSid, room_sid: &RoomSid) -> String {
        format!("{}:room:{{{account}:{room_sid}}}", self.prefix)
    }

    /// An account's rooms by their earliest fact. An identity named `rooms` shares the tag but
    /// none of these keys.
    pub fn room_index(&self, account: &AccountSid) -> String {
        format!("{}:{{{account}:rooms}}:index", self.prefix)
    }

    pub fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// A key in the same hash slot as `key` (it shares `key`'s hash tag), written to learn
    /// when replicas have caught up with that slot's node.
    pub fn replication_marker(&self, key: &str) -> String {
        let tag = key
            .find('{')
            .and_then(|open| {
                let close = open + key[open..].find('}')?;
                Some(&key[open..=close])
            })
            .unwrap_or("{}");
        format!("{}:{tag}:replicated", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_used_together_share_one_hash_tag() {
        let keys = Keys::new("callrelay");
        let a = AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap();
        let bob = Identity::parse("team:bob").unwrap();
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        assert_eq!(
            keys.bindings(&a, &bob),
            "callrelay:{AC0123456789abcdef0123456789abcdef:team:bob}:b"
        );
        assert_eq!(
            tag(&keys.bindings(&a, &bob)),
            tag(&keys.legacy_bindings(&a, &bob))
        );
        assert_eq!(tag(&keys.bindings(&a, &bob)), tag(&keys.sockets(&a, &bob)));
        assert_eq!(
            tag(&keys.bindings(&a, &bob)),
            tag(&keys.message(&a, &bob, "RM1"))
        );
        let marker = keys.replication_marker(&keys.bindings(&a, &bob));
        assert_eq!(tag(&marker), tag(&keys.bindings(&a, &bob)));
        let (bucket, _) = keys.token(&a, PushChannel::Apns, "ab12");
        assert_eq!(tag(&keys.replication_marker(&bucket)), tag(&bucket));
        let token = |k: String| tag(&k);
        assert_eq!(
            token(keys.legacy_address(&a, PushChannel::Apns, "ab12")),
            token(keys.legacy_claims(&a, PushChannel::Apns, "ab12"))
        );
        // A call's trace and a room's facts have tags of their own (calls and rooms spread
        // over the slots); an identity's list of calls sits beside its bindings.
        assert_eq!(
            tag(&keys.identity_calls(&a, &bob)),
            tag(&keys.bindings(&a, &bob))
        );
        assert_eq!(tag(&keys.ringing(&a, &bob)), tag(&keys.bindings(&a, &bob)));
        let call = CallSid::parse("CA1").unwrap();
        assert_eq!(
            keys.call(&a, &call),
            "callrelay:trace:{AC0123456789abcdef0123456789abcdef:CA1}"
        );
        assert_eq!(
            tag(&keys.legacy_call(&a, &call)),
            tag(&keys.call(&a, &call))
        );
        assert_eq!(
            keys.room(&a, &RoomSid::parse("RM1").unwrap()),
            "callrelay:room:{AC0123456789abcdef0123456789abcdef:RM1}"
        );
        assert_eq!(
            keys.legacy_claims(&a, PushChannel::Apns, "ab12"),
            "callrelay:addr:{AC0123456789abcdef0123456789abcdef:apns:ab12}:claims"
        );
    }

    #[test]
    fn keys_of_the_earlier_layout_are_recognised_and_no_others() {
        let keys = Keys::new("cr");
        let a = AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap();
        let bob = Identity::parse("team:bob").unwrap();
        assert_eq!(
            keys.parse_legacy(&keys.legacy_bindings(&a, &bob)),
            Some(LegacyKey::Identity(a.clone(), bob.clone()))
        );
        for key in [
            keys.legacy_address(&a, PushChannel::Fcm, "x:APA91b-1"),
            keys.legacy_claims(&a, PushChannel::Fcm, "x:APA91b-1"),
        ] {
            assert_eq!(
                keys.parse_legacy(&key),
                Some(LegacyKey::Token(
                    a.clone(),
                    PushChannel::Fcm,
                    "x:APA91b-1".into()
                ))
            );
        }
        for other in [
            keys.bindings(&a, &bob),
            keys.sockets(&a, &bob),
            keys.token(&a, PushChannel::Fcm, "t").0,
            keys.layout(),
            keys.identity_calls(&a, &bob),
            "other:{AC0123456789abcdef0123456789abcdef:bob}:bindings".into(),
        ] {
            assert_eq!(keys.parse_legacy(&other), None, "{other}");
        }
    }

    #[test]
    fn a_token_is_named_by_a_digest_in_one_of_256_buckets_per_account() {
        let keys = Keys::new("callrelay");
        let a = AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap();
        let token = "a".repeat(152);
        let (bucket, field) = keys.token(&a, PushChannel::Fcm, &token);
        assert_eq!(field.len(), TOKEN_DIGEST_LEN);
        assert_eq!(
            bucket,
            format!(
                "callrelay:tok:{{AC0123456789abcdef0123456789abcdef:{:02x}}}",
                field[0]
            )
        );
        assert!(!bucket.contains(&token));
        // The channel is part of the name: the same text on APNs and FCM is two tokens.
        assert_ne!(keys.token(&a, PushChannel::Apns, &token).1, field);
        let mut buckets = std::collections::BTreeSet::new();
        for i in 0..4096 {
            buckets.insert(keys.token(&a, PushChannel::Fcm, &format!("t{i}")).0);
        }
        assert_eq!(buckets.len(), 256);
    }
}
