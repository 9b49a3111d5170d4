//! What a device's socket tells callrelay: acknowledgements, from clients that opened it with
//! `ack=1` (`{"type":"ack","twi_message_id":"…"}`), counted and recorded in the call's trace;
//! and the session's own news (a frame dropped as late), counted.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::session::Listener;
use crate::channels::websocket::{Ack, LocalSocket, WebSocketChannel};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::relay::Relay;

/// The message id an acknowledgement names; `None` for any other text.
pub fn acknowledged(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Frame {
        #[serde(rename = "type")]
        kind: String,
        twi_message_id: String,
    }
    let frame: Frame = serde_json::from_str(text).ok()?;
    (frame.kind == "ack" && !frame.twi_message_id.is_empty()).then_some(frame.twi_message_id)
}

/// The listener of one device's session.
pub struct SocketEvents {
    pub socket: Arc<LocalSocket>,
    pub channel: Arc<WebSocketChannel>,
    pub relay: Arc<Relay>,
    pub metrics: Arc<Metrics>,
    pub ringing_window: Duration,
    /// This replica, as the trace names it.
    pub node: String,
}

impl SocketEvents {
    fn count(&self, outcome: &'static str) {
        self.metrics
            .websocket_acks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

impl Listener for SocketEvents {
    fn late(&self) {
        self.metrics.websocket_late_frames.inc();
        tracing::debug!(
            conn_id = self.socket.conn_id,
            "dropped a frame that waited past the ringing window"
        );
    }

    fn text(&self, text: &str) {
        // A socket opened without `ack=1` may say anything: it only proves it is alive.
        if !self.socket.takes_acks {
            return;
        }
        let Some(message_id) = acknowledged(text) else {
            self.count("invalid");
            return;
        };
        let ack = self
            .channel
            .acknowledge(&self.socket, &message_id, self.ringing_window);
        self.count(ack.label());
        if let Ack::Acknowledged {
            call_sid: Some(call_sid),
            after,
        } = ack
        {
            self.relay
                .socket_acknowledged(&self.socket, &message_id, &call_sid, after, &self.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_ack_frame_with_a_message_id_is_an_acknowledgement() {
        assert_eq!(
            acknowledged(r#"{"type":"ack","twi_message_id":"RM1"}"#).as_deref(),
            Some("RM1")
        );
        assert_eq!(
            acknowledged(r#"{"twi_message_id":"RM1","type":"ack","extra":true}"#).as_deref(),
            Some("RM1")
        );
        for other in [
            r#"{"type":"ack"}"#,
            r#"{"type":"ack","twi_message_id":""}"#,
            r#"{"type":"hello","twi_message_id":"RM1"}"#,
            r#"{"type":"ack","twi_message_id":1}"#,
            "ack RM1",
            "",
        ] {
            assert_eq!(acknowledged(other), None, "{other}");
        }
    }
}
