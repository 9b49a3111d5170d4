//! Starting and stopping callrelay: one entry point that takes the configuration and,
//! optionally, listeners already bound (tests bind port 0), and one shutdown path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::channels::websocket::WebSocketChannel;
use crate::channels::{self, Channels};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http::{self, AppState, Shared};
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::store::{self, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Channel(#[from] crate::config::apps::AppErrors),
    #[error("{0}")]
    Forwarding(String),
}

/// Listeners bound by the caller.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

/// A running callrelay.
pub struct App {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// This replica's id on the replica bus.
    pub node: String,
    shutdown: CancellationToken,
    finished: JoinHandle<()>,
}

impl App {
    /// Begins a graceful shutdown: no new connections; in-flight webhooks finish; sockets get
    /// a close frame and their presence is withdrawn.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until everything has stopped.
    pub async fn stopped(self) {
        let _ = self.finished.await;
    }
}

/// What an embedder (or a test) may supply instead of what the configuration says.
#[derive(Default)]
pub struct Options {
    /// Listeners already bound (tests bind port 0); default: bind the configured addresses.
    pub listeners: Option<Listeners>,
    /// A store to use instead of opening the configured one (several instances may share a
    /// memory store).
    pub store: Option<Arc<dyn Store>>,
    /// Channels for push apps, by app name, used instead of building them from the
    /// configuration.
    pub push_channels: HashMap<String, Arc<dyn channels::PushApp>>,
    /// The replica's wall clock; default: the system's. (Tests run replicas whose clock is
    /// wrong.)
    pub clock: Option<Arc<dyn Clock>>,
}

/// Starts callrelay: binds, opens the store, starts the listeners and background tasks.
pub async fn start(config: Config, options: Options) -> Result<App, StartError> {
    channels::push_client::install_crypto_provider();
    let metrics = Arc::new(Metrics::new());
    let store = match options.store {
        Some(s) => s,
        None => store::open(&config.store).await?,
    };
    // Every store call, whoever makes it, is timed and its errors counted.
    let store: Arc<dyn Store> = Arc::new(store::metered::MeteredStore::new(store, &metrics));
    let listeners = match options.listeners {
        Some(l) => l,
        None => Listeners {
            public: bind(config.server.listen).await?,
            admin: bind(config.server.admin_listen).await?,
        },
    };
    let public_addr = listeners
        .public
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.server.listen,
            source,
        })?;
    let admin_addr = listeners
        .admin
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.server.admin_listen,
            source,
        })?;

    let config = Arc::new(config);
    let node = uuid::Uuid::new_v4().simple().to_string();
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    metrics
        .webhook_deadline
        .set(config.server.webhook_deadline.as_secs_f64());
    metrics
        .http_connections_limit
        .set(config.limits.max_connections as i64);
    metrics
        .websocket_connections_limit
        .set(config.limits.max_sockets as i64);

    let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
    let apps = channels::push_channels(&config, options.push_channels, &metrics)?;
    let sockets = WebSocketChannel::new(
        node.clone(),
        store.clone(),
        clock.clone(),
        config.websocket.clone(),
        &config.limits,
        tasks.clone(),
        metrics.clone(),
    );
    sockets.start(shutdown.clone()).await?;
    let listening = sockets.clone();
    let relay = Arc::new(Relay::new(
        config.clone(),
        store.clone(),
        Channels {
            websocket: sockets.clone(),
            apps,
        },
        metrics.clone(),
        tasks.clone(),
        clock,
        node.clone(),
    ));
    let finished_relay = relay.clone();
    crate::forward::start(
        config.clone(),
        store.clone(),
        node.clone(),
        metrics.clone(),
        &tasks,
        shutdown.clone(),
    )
    .map_err(StartError::Forwarding)?;
    let state = AppState::new(Shared {
        config: config.clone(),
        relay,
        auth: Arc::new(Authenticator::new(&config)),
        sockets,
        metrics,
        store: store.clone(),
        limiter: Arc::new(http::RateLimiter::new(
            config.limits.binding_requests_per_minute,
        )),
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
    });

    match &config.store.redis {
        None => tracing::warn!(
            "using the embedded memory store: bindings are lost on restart and replicas share nothing; set store.redis_url (or sentinel_urls, redis_cluster_urls) for production"
        ),
        Some(redis) => tracing::info!(
            mode = redis.topology.mode(),
            min_replica_acks = redis.min_replica_acks,
            "using Redis"
        ),
    }
    if config.server.trust_forwarded_headers && !config.accounts.is_empty() {
        tracing::warn!(
            "server.trust_forwarded_headers is on: webhook signatures are checked against each request's Host and X-Forwarded-Proto, so a request signed for another host verifies too; set server.public_url instead when you can"
        );
    }
    tracing::info!(%public_addr, %admin_addr, node, store = store.engine(), accounts = config.accounts.len(), "callrelay listening");

    if let Some(warning) =
        http::descriptors::warning(&config.limits, http::descriptors::open_files_limit())
    {
        tracing::warn!("{warning}");
    }
    let public = http::server::serve(
        listeners.public,
        http::public_router(state.clone()),
        config.limits.clone(),
        state.metrics.http_connections.clone(),
        shutdown.clone(),
    );
    let admin_stop = CancellationToken::new();
    let admin = axum::serve(listeners.admin, http::admin_router(state))
        .with_graceful_shutdown(admin_stop.clone().cancelled_owned());
    let admin_task = tokio::spawn(async move {
        if let Err(e) = admin.await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    let grace = config.server.shutdown_grace;
    let finished_store = store.clone();
    let finished = tokio::spawn(async move {
        public.await;
        // The public listener has drained its in-flight requests; sessions are closing and
        // withdrawing their presence.
        tasks.close();
        let drained = async {
            tasks.wait().await;
            // The last notifications' dedupe outcomes and trace entries, written in the
            // background.
            finished_store.flush().await;
            finished_relay.flush_records().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("shutdown grace period over; stopping with work in flight");
        }
        listening.stop_listening();
        admin_stop.cancel();
        let _ = admin_task.await;
        tracing::info!("callrelay stopped");
    });
    Ok(App {
        public_addr,
        admin_addr,
        node,
        shutdown,
        finished,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
