//! Messages between replicas on the bus. A delivery request names the socket and where to send
//! the acknowledgement; the holder answers with what became of the hand-off. Text headers
//! keep the format readable in `redis-cli monitor`; the payload follows unchanged.
//!
//! ```text
//! D <request id> <reply node> <connection id> [<twi_message_id>]\n<payload bytes>
//! W <request id> <reply node> <connection id> <twi_message_id>\n<payload bytes>
//! A <request id> <queued|full|gone>
//! K <request id>
//! ```
//!
//! `W` is `D` from a webhook that also waits for the client's acknowledgement
//! (`delivery = "prefer_websocket"`): the holder answers `A` at once, as for `D`, and `K` when
//! the client acknowledges. A replica that does not know `W` ignores it; the asker then hears
//! nothing and pushes, as if the client were silent.
//!
//! The message id lets the holder recognise a retry of what its socket already has
//! (`registry.rs`); it is left out when the notification has none, or one that is not a
//! plain token (Twilio's are `RM` and 32 hex digits).

use bytes::{BufMut, Bytes, BytesMut};

use super::registry::Handoff;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireMessage {
    Deliver {
        request: u64,
        reply_to: String,
        conn_id: String,
        message_id: Option<String>,
        payload: Bytes,
        /// The asker waits for the client's acknowledgement (`W`).
        await_ack: bool,
    },
    Ack {
        request: u64,
        handoff: Handoff,
    },
    /// The client acknowledged what request `request` handed to its socket.
    ClientAck {
        request: u64,
    },
}

impl WireMessage {
    pub fn encode(&self) -> Bytes {
        match self {
            WireMessage::Deliver {
                request,
                reply_to,
                conn_id,
                message_id,
                payload,
                await_ack,
            } => {
                let header = match message_id.as_deref().filter(|id| is_token(id)) {
                    Some(id) if *await_ack => format!("W {request} {reply_to} {conn_id} {id}\n"),
                    Some(id) => format!("D {request} {reply_to} {conn_id} {id}\n"),
                    None => format!("D {request} {reply_to} {conn_id}\n"),
                };
                let mut out = BytesMut::with_capacity(header.len() + payload.len());
                out.put_slice(header.as_bytes());
                out.put_slice(payload);
                out.freeze()
            }
            WireMessage::Ack { request, handoff } => {
                // A repeat is `queued`: the asker needs only to know the socket has it.
                Bytes::from(format!("A {request} {}", handoff.label()))
            }
            WireMessage::ClientAck { request } => Bytes::from(format!("K {request}")),
        }
    }

    pub fn decode(message: Bytes) -> Option<Self> {
        match message.first()? {
            kind @ (b'D' | b'W') => {
                let await_ack = *kind == b'W';
                let newline = message.iter().position(|b| *b == b'\n')?;
                let header = std::str::from_utf8(&message[..newline]).ok()?;
                let mut parts = header.split(' ');
                let (_, request, reply_to, conn_id) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                let message_id = parts.next();
                if parts.next().is_some()
                    || message_id.is_some_and(|id| !is_token(id))
                    || (await_ack && message_id.is_none())
                {
                    return None;
                }
                Some(WireMessage::Deliver {
                    request: request.parse().ok()?,
                    reply_to: reply_to.to_owned(),
                    conn_id: conn_id.to_owned(),
                    message_id: message_id.map(str::to_owned),
                    payload: message.slice(newline + 1..),
                    await_ack,
                })
            }
            b'K' => {
                let text = std::str::from_utf8(&message).ok()?;
                let request = text.strip_prefix("K ")?.parse().ok()?;
                Some(WireMessage::ClientAck { request })
            }
            b'A' => {
                let text = std::str::from_utf8(&message).ok()?;
                let mut parts = text.split(' ');
                let (_, request, status) = (parts.next()?, parts.next()?, parts.next()?);
                let handoff = match status {
                    "queued" => Handoff::Queued,
                    "full" => Handoff::Full,
                    "gone" => Handoff::Gone,
                    _ => return None,
                };
                Some(WireMessage::Ack {
                    request: request.parse().ok()?,
                    handoff,
                })
            }
            _ => None,
        }
    }
}

/// Whether `id` can stand as a header field: non-empty, letters, digits, `-` and `_` only.
fn is_token(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_keep_payload_bytes() {
        let payload = Bytes::from_static(b"{\"twi_to\":\"client:bob\"}\n\x00tail");
        let m = WireMessage::Deliver {
            request: 42,
            reply_to: "node-a".into(),
            conn_id: "c1".into(),
            message_id: None,
            payload: payload.clone(),
            await_ack: false,
        };
        assert_eq!(WireMessage::decode(m.encode()), Some(m));
        let with_id = WireMessage::Deliver {
            request: 43,
            reply_to: "node-a".into(),
            conn_id: "c1".into(),
            message_id: Some("RM0123456789abcdef0123456789abcdef".into()),
            payload: payload.clone(),
            await_ack: false,
        };
        assert_eq!(WireMessage::decode(with_id.encode()), Some(with_id));
        let awaiting = WireMessage::Deliver {
            request: 44,
            reply_to: "node-a".into(),
            conn_id: "c1".into(),
            message_id: Some("RM0123456789abcdef0123456789abcdef".into()),
            payload: payload.clone(),
            await_ack: true,
        };
        assert!(awaiting.encode().starts_with(b"W 44 "));
        assert_eq!(WireMessage::decode(awaiting.encode()), Some(awaiting));
        let k = WireMessage::ClientAck { request: 9 };
        assert_eq!(WireMessage::decode(k.encode()), Some(k));
        for handoff in [Handoff::Queued, Handoff::Full, Handoff::Gone] {
            let a = WireMessage::Ack {
                request: 7,
                handoff,
            };
            assert_eq!(WireMessage::decode(a.encode()), Some(a));
        }
    }

    #[test]
    fn a_message_id_that_is_not_a_token_is_left_out() {
        let m = WireMessage::Deliver {
            request: 1,
            reply_to: "a".into(),
            conn_id: "c".into(),
            message_id: Some("RM 1\nX".into()),
            payload: Bytes::from_static(b"{}"),
            await_ack: false,
        };
        let Some(WireMessage::Deliver {
            message_id,
            payload,
            ..
        }) = WireMessage::decode(m.encode())
        else {
            panic!("unreadable");
        };
        assert_eq!(message_id, None);
        assert_eq!(payload, Bytes::from_static(b"{}"));
    }

    #[test]
    fn garbage_is_ignored() {
        for m in [
            "",
            "X",
            "D 1 a\n",
            "D x a b\n",
            "D 1 a b c d\n",
            "A 1 maybe",
            "A 1",
            "W 1 a c\n",
            "K",
            "K x",
        ] {
            assert_eq!(WireMessage::decode(Bytes::from(m)), None, "{m:?}");
        }
    }
}
