//! Sentinel's announcements of a new master. After a failover, a master that was only cut off
//! (or demoted by `SENTINEL FAILOVER`) keeps accepting writes until Sentinel reconfigures it,
//! which can take seconds; whatever it accepts meanwhile is lost when it becomes a replica.
//! So, as Sentinel's client guidelines advise, callrelay listens for `+switch-master` on a
//! sentinel and moves its connections at once, instead of waiting for an error.
//!
//! The watcher holds a plain pub/sub connection to one sentinel (the first that answers) and a
//! bounded `PING` on it every few seconds; when that connection ends or stalls it connects to
//! a sentinel again. It stops when the store is dropped.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::connect::Dialer;
use super::link::WeakLink;

const CHANNEL: &str = "+switch-master";
const PING_EVERY: Duration = Duration::from_secs(5);

pub async fn watch(dialer: Arc<Dialer>, master: String, links: Vec<WeakLink>, timeout: Duration) {
    let mut failures = 0u32;
    let mut first = true;
    while links.iter().any(|l| l.upgrade().is_some()) {
        let subscribed = tokio::time::timeout(timeout, async {
            let client = dialer.sentinel_client().await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "cannot listen to Sentinel for master switches yet");
                }
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => {
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        failures = 0;
        // A switch announced while this watcher was not listening would be missed: look now.
        if !std::mem::take(&mut first) {
            for link in links.iter().filter_map(WeakLink::upgrade) {
                link.master_switched();
            }
        }
        let (mut sink, mut stream) = pubsub.split();
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    // `<name> <old ip> <old port> <new ip> <new port>`
                    let payload: String = message.get_payload().unwrap_or_default();
                    if payload.split(' ').next() == Some(master.as_str()) {
                        tracing::info!(announcement = payload, "Sentinel switched the master");
                        for link in links.iter().filter_map(WeakLink::upgrade) {
                            link.master_switched();
                        }
                    }
                }
                _ = tokio::time::sleep(PING_EVERY) => {
                    if links.iter().all(|l| l.upgrade().is_none()) {
                        return;
                    }
                    let ping = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(ping, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
    }
}
