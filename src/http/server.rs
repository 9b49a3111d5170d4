//! The public listener's HTTP/1.1 server. axum's `serve` leaves hyper without a timer, so a
//! client could take forever to send its headers or keep an idle connection open without end;
//! this loop bounds both, caps the head size and the number of open connections, and drains
//! connections gracefully at shutdown. (HTTP/1.1 only: Twilio and WebSocket clients speak it,
//! and a TLS-terminating proxy sits in front.)
//!
//! A connection holds its slot of `limits.max_connections` until hyper is done with it, which
//! for a WebSocket is the upgrade: from then on the socket counts against `limits.max_sockets`
//! (its lease took a slot there before the `101` went out), so a descriptor always counts
//! against one cap or the other (`descriptors.rs`).

use std::pin::pin;
use std::sync::Arc;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;

/// A connection's slot: counted in `open` (`callrelay_http_connections`) while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Serves `router` until `shutdown`, then lets in-flight requests finish. `open` counts the
/// connections being served.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    open: Gauge,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        // At the connection cap, new clients wait in the accept queue rather than being served
        // with no resources left.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        open.inc();
        let slot = Slot {
            _permit: permit,
            open: open.clone(),
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes);
        connections.spawn(async move {
            // Released when hyper lets go of the connection: closed, or upgraded.
            let _slot = slot;
            let mut conn = pin!(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
            );
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = shutdown.cancelled() => {}
            }
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error during shutdown");
            }
        });
    }
    connections.close();
    connections.wait().await;
}
