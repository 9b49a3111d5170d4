//! Call notifications kept for the ringing window, so that a client that lost its socket
//! (a network change, a replica restarting) and reconnects while the call still rings is
//! given what it missed. Each copy is `<received Unix ms>\n<Twilio's bytes>`: the time to
//! judge the window by, then the payload exactly as Twilio sent it.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Binding, SocketPresence};

/// A device's push bindings, most recently registered (or refreshed by a delivered push)
/// first: the first is sent to; each next one only if the one before it turned out dead or
/// failed, so one ring per device never becomes no ring.
pub type Chain = Vec<Binding>;

/// A device reached socket first: its sockets get the call at once, its push only if none of
/// them acknowledges in time (`delivery = "prefer_websocket"`).
#[derive(Debug, Clone)]
pub struct SocketFirst {
    pub sockets: Vec<SocketPresence>,
    pub push: Chain,
}

/// Splits a call's targets for `delivery = "prefer_websocket"`: each device chain whose first
/// binding's app or account prefers sockets (`prefers`) and whose `device_id` names at least
/// one socket opened with `ack=1` becomes a `SocketFirst` with those sockets; everything else
/// is delivered at once (the chains and sockets returned).
pub fn socket_first(
    chains: Vec<Chain>,
    mut sockets: Vec<SocketPresence>,
    prefers: impl Fn(&Binding) -> bool,
) -> (Vec<Chain>, Vec<SocketPresence>, Vec<SocketFirst>) {
    let mut direct = Vec::with_capacity(chains.len());
    let mut devices = Vec::new();
    for chain in chains {
        let device = chain[0].device_id.clone();
        // Only a socket that can acknowledge is worth waiting for; a device whose sockets
        // cannot gets its socket and its push at once, as with `all`.
        let mine =
            |s: &SocketPresence| s.takes_acks && s.device_id.is_some() && s.device_id == device;
        if device.is_none() || !prefers(&chain[0]) || !sockets.iter().any(mine) {
            direct.push(chain);
            continue;
        }
        let (of_device, others): (Vec<_>, Vec<_>) = sockets.into_iter().partition(mine);
        sockets = others;
        devices.push(SocketFirst {
            sockets: of_device,
            push: chain,
        });
    }
    (direct, sockets, devices)
}

/// One ring per device: push bindings naming the same `device_id` form one chain, most
/// recently registered (or refreshed) first; a binding without a `device_id` is a chain of
/// its own. Chains come in the order of their first binding's first appearance.
pub fn one_per_device(bindings: Vec<Binding>) -> Vec<Chain> {
    let mut chains: Vec<Chain> = Vec::with_capacity(bindings.len());
    for b in bindings {
        let same = b.device_id.as_deref().and_then(|d| {
            chains
                .iter_mut()
                .find(|c| c[0].device_id.as_deref() == Some(d))
        });
        match same {
            Some(chain) => chain.push(b),
            None => chains.push(vec![b]),
        }
    }
    for chain in &mut chains {
        chain.sort_by(|a, b| {
            (b.updated_at, b.created_at, b.id.as_str()).cmp(&(
                a.updated_at,
                a.created_at,
                a.id.as_str(),
            ))
        });
    }
    chains
}

/// A kept copy of `raw`, received at `received_ms`.
pub fn entry(received_ms: i64, raw: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(raw.len() + 14);
    out.put_slice(received_ms.to_string().as_bytes());
    out.put_u8(b'\n');
    out.put_slice(raw);
    out.freeze()
}

/// When a copy was received, and its payload; `None` for bytes that are not a copy.
pub fn read(entry: &Bytes) -> Option<(i64, Bytes)> {
    let newline = entry.iter().position(|&b| b == b'\n')?;
    let ms = std::str::from_utf8(&entry[..newline]).ok()?.parse().ok()?;
    Some((ms, entry.slice(newline + 1..)))
}

/// The payloads to replay to a client that was last connected at `since_ms`: those received
/// after it and within `window` of `now_ms`, oldest first.
pub fn missed(entries: &[Bytes], since_ms: i64, now_ms: i64, window: Duration) -> Vec<Bytes> {
    let oldest = now_ms - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let mut kept: Vec<(i64, Bytes)> = entries
        .iter()
        .filter_map(read)
        .filter(|(at, _)| *at > since_ms && *at >= oldest)
        .collect();
    kept.sort_by_key(|(at, _)| *at);
    kept.into_iter().map(|(_, raw)| raw).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BindingId, PushChannel};
    use time::OffsetDateTime;

    fn binding(id: &str, device: Option<&str>, registered: i64) -> Binding {
        let at = OffsetDateTime::from_unix_timestamp(registered).unwrap();
        Binding {
            id: BindingId::parse(id).unwrap(),
            device_id: device.map(str::to_owned),
            ..Binding::example(PushChannel::Apns, "ios", "ab", at)
        }
    }

    fn ids(bindings: &[Binding]) -> Vec<&str> {
        bindings.iter().map(|b| b.id.as_str()).collect()
    }

    #[test]
    fn a_device_with_several_bindings_is_one_chain_most_recently_registered_first() {
        let chains = one_per_device(vec![
            binding("stale", Some("phone"), 100),
            binding("tablet", Some("tablet"), 50),
            binding("fresh", Some("phone"), 200),
            binding("anon1", None, 10),
            binding("anon2", None, 20),
            binding("middle", Some("phone"), 150),
        ]);
        let chains: Vec<Vec<&str>> = chains.iter().map(|c| ids(c)).collect();
        assert_eq!(
            chains,
            [
                vec!["fresh", "middle", "stale"],
                vec!["tablet"],
                vec!["anon1"],
                vec!["anon2"]
            ]
        );
    }

    fn socket(id: &str, device: Option<&str>) -> SocketPresence {
        SocketPresence {
            takes_acks: true,
            ..plain_socket(id, device)
        }
    }

    fn plain_socket(id: &str, device: Option<&str>) -> SocketPresence {
        SocketPresence {
            conn_id: id.into(),
            account_sid: crate::domain::AccountSid::parse("AC0123456789abcdef0123456789abcdef")
                .unwrap(),
            identity: crate::domain::Identity::parse("bob").unwrap(),
            node: "n1".into(),
            device_id: device.map(str::to_owned),
            takes_acks: false,
            connected_at: OffsetDateTime::UNIX_EPOCH,
            lease: Duration::from_secs(15),
        }
    }

    #[test]
    fn a_preferring_device_with_a_socket_is_reached_socket_first_and_the_rest_at_once() {
        let bindings = one_per_device(vec![
            binding("phone-push", Some("phone"), 1),
            binding("laptop-push", Some("laptop"), 1),
            binding("tablet-push", Some("tablet"), 1),
            binding("anon-push", None, 1),
        ]);
        let sockets = vec![
            socket("phone-ws", Some("phone")),
            socket("laptop-ws", Some("laptop")),
            socket("phone-ws-2", Some("phone")),
            socket("anon-ws", None),
            // The tablet's socket cannot acknowledge: nothing would come to wait for.
            plain_socket("tablet-ws", Some("tablet")),
        ];
        // The laptop's app delivers to all; the others prefer sockets.
        let (direct, rest, first) =
            socket_first(bindings, sockets, |b| b.id.as_str() != "laptop-push");
        let direct: Vec<&str> = direct.iter().map(|c| c[0].id.as_str()).collect();
        assert_eq!(direct, ["laptop-push", "tablet-push", "anon-push"]);
        let conns = |s: &[SocketPresence]| s.iter().map(|s| s.conn_id.clone()).collect::<Vec<_>>();
        assert_eq!(conns(&rest), ["laptop-ws", "anon-ws", "tablet-ws"]);
        assert_eq!(first.len(), 1);
        assert_eq!(ids(&first[0].push), ["phone-push"]);
        assert_eq!(conns(&first[0].sockets), ["phone-ws", "phone-ws-2"]);
    }

    #[test]
    fn a_copy_reads_back_byte_for_byte_even_with_newlines_in_the_payload() {
        let raw = b"{\n  \"twi_message_id\": \"RM1\"\n}";
        assert_eq!(
            read(&entry(1_700_000_000_123, raw)),
            Some((1_700_000_000_123, Bytes::from_static(raw)))
        );
        assert_eq!(read(&Bytes::from_static(b"not a copy")), None);
        assert_eq!(read(&Bytes::from_static(b"12x\n{}")), None);
    }

    #[test]
    fn only_what_arrived_after_the_client_left_and_within_the_window_is_replayed_oldest_first() {
        let window = Duration::from_secs(30);
        let now = 100_000;
        let entries = [
            entry(now - 31_000, b"too old"),
            entry(now - 5_000, b"second"),
            entry(now - 20_000, b"before the client left"),
            entry(now - 10_000, b"first"),
            Bytes::from_static(b"garbage"),
        ];
        let since = now - 15_000;
        assert_eq!(
            missed(&entries, since, now, window),
            [Bytes::from_static(b"first"), Bytes::from_static(b"second")]
        );
        assert!(missed(&entries, now, now, window).is_empty());
    }
}
