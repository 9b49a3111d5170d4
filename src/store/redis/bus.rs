//! The replica bus: each replica listens on a channel of its own. On one server (standalone or
//! Sentinel) that is classic pub/sub; on Redis Cluster it is sharded pub/sub (`SSUBSCRIBE`,
//! `SPUBLISH`, Redis 7.0+), so a delivery request travels to the one shard that owns the
//! channel's slot instead of being broadcast over the whole cluster bus.
//!
//! Each subscription has a dedicated RESP3 connection whose pushed messages go straight to the
//! subscriber's inbox, and a keeper task that checks it every second (every 100 ms from the
//! moment the connection reports a disconnect or a check fails, until one passes: after Redis
//! restarts the subscription is back as soon as the commands are), each check bounded by the
//! command timeout:
//! - a `PING` on the subscription's own connection: two in a row unanswered and the connection
//!   is replaced (it may be stalled without having closed);
//! - the number of subscribers the publishing side sees (`PUBSUB NUMSUB`/`SHARDNUMSUB` on the
//!   store's connection, so on the current master, the slot's current owner): none, and the
//!   channel is subscribed again; none twice in a row, and the connection is replaced (a
//!   failover or a slot move left the subscription on a node that no longer owns it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::{Notify, mpsc};

use super::connect::{Conn, Dialer, PushSink};
use super::link::Link;
use crate::store::StoreError;

/// How many messages wait for a replica's dispatcher before new ones are dropped (and the
/// sender, seeing no acknowledgement, reports the delivery failed).
const INBOX_CAPACITY: usize = 4096;
const KEEPALIVE: Duration = Duration::from_secs(1);
/// The pace of checks while the subscription is in doubt.
const RECHECK: Duration = Duration::from_millis(100);
/// Checks in a row that fail before the subscription's connection is replaced.
const FAILURES_BEFORE_REBUILD: u32 = 2;

pub struct Bus {
    dialer: Arc<Dialer>,
    /// The store's own connection: it publishes, so it says who would receive.
    publisher: Link,
    timeout: Duration,
}

impl Bus {
    pub fn new(dialer: Arc<Dialer>, publisher: Link, timeout: Duration) -> Self {
        Self {
            dialer,
            publisher,
            timeout,
        }
    }

    /// `PUBLISH` or, on a cluster, `SPUBLISH`.
    pub fn publish_command(&self) -> &'static str {
        if self.dialer.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    pub async fn subscribe(&self, channel: String) -> Result<mpsc::Receiver<Bytes>, StoreError> {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let keeper = Keeper {
            dialer: self.dialer.clone(),
            publisher: self.publisher.clone(),
            timeout: self.timeout,
            sharded: self.dialer.is_cluster(),
            channel,
            tx,
            lost: Arc::new(Notify::new()),
        };
        // Subscribing waits for Redis; until it answers, nothing can reach this replica anyway.
        tokio::spawn(keeper.run());
        Ok(rx)
    }
}

struct Keeper {
    dialer: Arc<Dialer>,
    publisher: Link,
    timeout: Duration,
    sharded: bool,
    channel: String,
    tx: mpsc::Sender<Bytes>,
    /// Woken by the connection's disconnect notice, so the keeper need not wait for its next
    /// check to learn of it.
    lost: Arc<Notify>,
}

impl Keeper {
    async fn run(self) {
        let mut conn: Option<Conn> = None;
        let (mut dead_pings, mut unseen) = (0u32, 0u32);
        let mut attempts = 0u32;
        // The first check (which subscribes) runs at once.
        let mut wait = Duration::ZERO;
        while !self.tx.is_closed() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.lost.notified() => {}
            }
            wait = RECHECK;
            if conn.is_none() {
                match self.connect().await {
                    Ok(c) => {
                        tracing::debug!(
                            channel = self.channel,
                            "subscribed to the replica channel"
                        );
                        conn = Some(c);
                        (dead_pings, unseen, attempts) = (0, 0, 0);
                    }
                    Err(e) => {
                        // Said once loudly; `/readyz` keeps reporting the outage meanwhile.
                        if attempts == 0 {
                            tracing::warn!(error = %e, "cannot subscribe to the replica channel yet; retrying");
                        } else {
                            tracing::debug!(error = %e, attempts, "still cannot subscribe to the replica channel");
                        }
                        attempts += 1;
                    }
                }
            }
            // Through the store's connection, which learns from it as from any call: on an
            // idle replica this check is what finds that connection stalled.
            let seen = super::bounded(&self.publisher, self.timeout, self.subscribers());
            let Some(c) = conn.as_mut() else {
                let _ = seen.await;
                continue;
            };
            let ping = self.bounded(c.send_near(&self.channel, redis::cmd("PING")));
            let (ping, seen) = tokio::join!(ping, seen);
            dead_pings = if ping.is_ok() { 0 } else { dead_pings + 1 };
            if ping.is_ok() && matches!(seen, Ok(n) if n > 0) {
                wait = KEEPALIVE;
            }
            match seen {
                Ok(n) if n > 0 => unseen = 0,
                Ok(_) => {
                    unseen += 1;
                    let _ = self.bounded(subscribe(c, &self.channel)).await;
                }
                // The store's connection is in trouble: nothing to learn about this
                // subscription.
                Err(_) => {}
            }
            if dead_pings >= FAILURES_BEFORE_REBUILD || unseen >= FAILURES_BEFORE_REBUILD {
                tracing::warn!(
                    channel = self.channel,
                    unanswered_pings = dead_pings,
                    "the replica channel's subscription is not reachable; subscribing on a new connection"
                );
                conn = None;
            }
        }
        if let Some(c) = conn.as_mut() {
            let command = if self.sharded {
                "SUNSUBSCRIBE"
            } else {
                "UNSUBSCRIBE"
            };
            let mut cmd = redis::cmd(command);
            cmd.arg(&self.channel);
            let _ = self.bounded(c.send_near(&self.channel, cmd)).await;
        }
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T, ()> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            _ => Err(()),
        }
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let tx = self.tx.clone();
        let channel = self.channel.clone();
        let lost = self.lost.clone();
        let sink: PushSink = Arc::new(move |push: PushInfo| {
            if push.kind == PushKind::Disconnection {
                lost.notify_one();
            } else {
                route(&tx, &channel, push);
            }
            Ok::<(), redis::aio::SendError>(())
        });
        let mut conn = self.dialer.dial(Some(sink)).await?;
        match tokio::time::timeout(self.timeout, subscribe(&mut conn, &self.channel)).await {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// How many subscribers a publish to the channel reaches now.
    async fn subscribers(&self) -> RedisResult<i64> {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg(if self.sharded {
            "SHARDNUMSUB"
        } else {
            "NUMSUB"
        })
        .arg(&self.channel);
        let reply = self.publisher.send_near(&self.channel, cmd).await?;
        let counts: HashMap<String, i64> = redis::from_redis_value(reply)?;
        Ok(counts.get(&self.channel).copied().unwrap_or(0))
    }
}

/// `SUBSCRIBE` on one server, `SSUBSCRIBE` on a cluster.
async fn subscribe(conn: &mut Conn, channel: &str) -> RedisResult<()> {
    match conn {
        Conn::Single { conn, .. } => conn.subscribe(channel).await,
        Conn::Cluster(conn) => conn.ssubscribe(channel).await,
    }
}

fn route(tx: &mpsc::Sender<Bytes>, channel: &str, push: PushInfo) {
    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(name), Some(payload)) = (data.next(), data.next()) else {
        return;
    };
    let same = match &name {
        Value::BulkString(b) => b.as_slice() == channel.as_bytes(),
        Value::SimpleString(s) => s == channel,
        _ => false,
    };
    let Value::BulkString(payload) = payload else {
        return;
    };
    if !same {
        return;
    }
    // One publish may carry several messages (`outbox.rs`).
    let Some(messages) = super::outbox::unpack(Bytes::from(payload)) else {
        tracing::warn!(channel, "ignoring an unreadable batch of replica messages");
        return;
    };
    for message in messages {
        match tx.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(channel, "replica inbox full; dropping a message");
            }
            // The replica has stopped listening (shut down): the sender gets no
            // acknowledgement.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!(channel, "replica inbox closed; dropping a message");
            }
        }
    }
}
