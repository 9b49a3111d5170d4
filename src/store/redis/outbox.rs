//! Replica messages, published in batches. Under load many delivery requests (and many
//! acknowledgements) leave a replica for the same replica at once; one `PUBLISH` carrying all
//! of them costs Redis one command and one message to the subscriber instead of one each, and
//! costs both replicas one round trip and one pushed message to parse.
//!
//! One writer per store sends a batch, waits for its answer, then sends everything that was
//! queued meanwhile: an idle replica's message goes out at once, alone and unframed; a busy
//! replica's messages wait at most one round trip. Messages for one channel keep their order.
//! Each caller learns the receivers of the `PUBLISH` that carried its message, as it would of
//! its own. While Redis does not answer, a batch waits up to the command timeout and the
//! messages queued behind it wait for it first; a delivery gives up at its webhook's deadline
//! whichever way (`relay/notify.rs`).
//!
//! A batch is framed so that the subscriber can split it (`unpack`):
//!
//! ```text
//! \0B\n<length>\n<message><length>\n<message>...
//! ```
//!
//! The leading NUL byte is reserved by the store: replica messages never start with it.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::bounded;
use super::link::Link;
use crate::store::StoreError;

/// The envelope's opening bytes.
const BATCH: &[u8] = b"\0B\n";
/// The most messages one writer cycle carries.
const MAX_BATCH: usize = 128;
/// Messages waiting for the writer before `publish` fails at once: far more than a replica's
/// concurrent deliveries (`limits.max_connections`), reached only while Redis is slow.
const QUEUE_CAPACITY: usize = 8192;

struct Letter {
    channel: String,
    message: Bytes,
    done: oneshot::Sender<Result<usize, StoreError>>,
}

pub struct Outbox {
    tx: mpsc::Sender<Letter>,
}

impl Outbox {
    /// Starts the writer; `command` is `PUBLISH` or `SPUBLISH`. It stops with the `Outbox`.
    pub fn start(conn: Link, timeout: Duration, command: &'static str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_batches(conn, timeout, command, rx));
        Self { tx }
    }

    /// Publishes `message` on `channel`; how many subscribers received it.
    pub async fn publish(&self, channel: String, message: Bytes) -> Result<usize, StoreError> {
        let (done, result) = oneshot::channel();
        let letter = Letter {
            channel,
            message,
            done,
        };
        match self.tx.try_send(letter) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(StoreError::Unavailable(
                    "too many replica messages wait for Redis".into(),
                ));
            }
            Err(TrySendError::Closed(_)) => {
                return Err(StoreError::Unavailable("the store is shutting down".into()));
            }
        }
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the message was dropped".into())))
    }
}

async fn write_batches(
    mut conn: Link,
    timeout: Duration,
    command: &'static str,
    mut rx: mpsc::Receiver<Letter>,
) {
    let mut letters = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut letters, 1).await > 0 {
        // Let the deliveries that are running finish first: their messages join this batch.
        tokio::task::yield_now().await;
        while letters.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(letter) => letters.push(letter),
                Err(_) => break,
            }
        }
        // Channels in order of first appearance, each with its letters in order.
        let mut channels: Vec<(String, Vec<Letter>)> = Vec::new();
        for letter in letters.drain(..) {
            match channels.iter_mut().find(|(c, _)| *c == letter.channel) {
                Some((_, group)) => group.push(letter),
                None => channels.push((letter.channel.clone(), vec![letter])),
            }
        }
        let mut pipe = redis::pipe();
        for (channel, group) in &channels {
            let messages: Vec<&[u8]> = group.iter().map(|l| l.message.as_ref()).collect();
            pipe.cmd(command).arg(channel).arg(pack(&messages).as_ref());
        }
        // On Redis Cluster the link sends one pipeline per slot (each channel's own shard).
        let link = conn.clone();
        let answer: Result<Vec<i64>, StoreError> =
            bounded(&link, timeout, pipe.query_async(&mut conn)).await;
        for (i, (_, group)) in channels.into_iter().enumerate() {
            let result = match &answer {
                Ok(counts) => Ok(counts
                    .get(i)
                    .map_or(0, |n| usize::try_from(*n).unwrap_or(0))),
                Err(e) => Err(e.clone()),
            };
            for letter in group {
                let _ = letter.done.send(result.clone());
            }
        }
    }
}

/// One message as it is, several in an envelope.
fn pack(messages: &[&[u8]]) -> Bytes {
    if let [one] = messages {
        return Bytes::copy_from_slice(one);
    }
    let size = BATCH.len() + messages.iter().map(|m| m.len() + 12).sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(BATCH);
    for m in messages {
        out.put_slice(m.len().to_string().as_bytes());
        out.put_u8(b'\n');
        out.put_slice(m);
    }
    out.freeze()
}

/// The messages a published payload carries: itself, or those of its envelope. `None` for
/// an envelope that does not parse.
pub fn unpack(payload: Bytes) -> Option<Vec<Bytes>> {
    if !payload.starts_with(BATCH) {
        return Some(vec![payload]);
    }
    let mut messages = Vec::new();
    let mut at = BATCH.len();
    while at < payload.len() {
        let newline = at + payload[at..].iter().position(|b| *b == b'\n')?;
        let len: usize = std::str::from_utf8(&payload[at..newline])
            .ok()?
            .parse()
            .ok()?;
        let end = (newline + 1).checked_add(len)?;
        if end > payload.len() {
            return None;
        }
        messages.push(payload.slice(newline + 1..end));
        at = end;
    }
    Some(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_message_travels_unframed() {
        let packed = pack(&[b"D 1 a b\n{}"]);
        assert_eq!(packed.as_ref(), b"D 1 a b\n{}");
        assert_eq!(
            unpack(packed).unwrap(),
            vec![Bytes::from_static(b"D 1 a b\n{}")]
        );
    }

    #[test]
    fn an_envelope_gives_back_every_message_byte_for_byte_in_order() {
        let messages: [&[u8]; 4] = [
            b"D 1 a b\n{\"x\":\"1\n2\"}",
            b"",
            b"A 7 queued",
            b"\0B\n3\nabc",
        ];
        let unpacked = unpack(pack(&messages)).unwrap();
        let unpacked: Vec<&[u8]> = unpacked.iter().map(|b| b.as_ref()).collect();
        assert_eq!(unpacked, messages);
    }

    #[test]
    fn a_broken_envelope_is_refused() {
        for broken in [&b"\0B\n5\nabc"[..], b"\0B\nx\nabc", b"\0B\n3"] {
            assert_eq!(unpack(Bytes::from_static(broken)), None, "{broken:?}");
        }
    }
}
