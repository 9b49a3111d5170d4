//! The replica bus over Redis pub/sub: a dedicated RESP3 connection whose pushed messages are
//! routed to the subscriber of each channel. The connection resubscribes by itself after a
//! reconnect; a keep-alive ping makes sure a reconnect is attempted even when nothing else is
//! sent on it.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::{Routes, unavailable};
use crate::store::StoreError;

/// How many messages wait for a replica's dispatcher before new ones are dropped (and the
/// sender, seeing no acknowledgement, reports the delivery failed).
const INBOX_CAPACITY: usize = 4096;
const KEEPALIVE: Duration = Duration::from_secs(1);

pub struct Bus {
    conn: ConnectionManager,
    routes: Routes,
}

impl Bus {
    pub fn new(client: Client, config: ConnectionManagerConfig) -> Result<Self, StoreError> {
        let routes = Routes::default();
        let routing = routes.clone();
        let config = config
            .set_push_sender(move |push: PushInfo| {
                route(&routing, push);
                Ok::<(), redis::aio::SendError>(())
            })
            .set_automatic_resubscription();
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self { conn, routes })
    }

    pub async fn subscribe(&self, channel: String) -> Result<mpsc::Receiver<Bytes>, StoreError> {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.clone(), tx.clone());
        let conn = self.conn.clone();
        // Subscribing waits for Redis; until it answers, nothing can reach this replica anyway.
        tokio::spawn(async move {
            let mut conn = conn;
            let mut attempts = 0u32;
            loop {
                match conn.subscribe(&channel).await {
                    Ok(()) => break,
                    Err(e) => {
                        // Said once loudly; `/readyz` keeps reporting the outage meanwhile.
                        if attempts == 0 {
                            tracing::warn!(error = %e, "cannot subscribe to the replica channel yet; retrying every second");
                        } else {
                            tracing::debug!(error = %e, attempts, "still cannot subscribe to the replica channel");
                        }
                        attempts += 1;
                        if tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(KEEPALIVE).await;
                    }
                }
            }
            tracing::debug!(channel, "subscribed to the replica channel");
            let mut tick = tokio::time::interval(KEEPALIVE);
            while !tx.is_closed() {
                tick.tick().await;
                let _ = redis::cmd("PING").query_async::<Value>(&mut conn).await;
            }
            let _ = conn.unsubscribe(&channel).await;
        });
        Ok(rx)
    }
}

fn route(routes: &Routes, push: PushInfo) {
    if push.kind != PushKind::Message {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
        return;
    };
    let channel = match channel {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::SimpleString(s) => s,
        _ => return,
    };
    let payload = match payload {
        Value::BulkString(b) => Bytes::from(b),
        _ => return,
    };
    let sender = routes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&channel)
        .cloned();
    if let Some(tx) = sender
        && tx.try_send(payload).is_err()
    {
        tracing::warn!(channel, "replica inbox full; dropping a message");
    }
}
