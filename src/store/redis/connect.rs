//! How connections to Redis are made: one server (`redis_url`), the master that Redis Sentinel
//! names (`sentinel_urls`), or a Redis Cluster (`redis_cluster_urls`). Every connection speaks
//! RESP3 (a disconnect is noticed at once, pub/sub shares the connection), over rustls when
//! the URLs say `rediss://`, with TCP keepalive and a user timeout so that a peer that vanished
//! without a reset (a VM gone, an address moved by a failover) is given up by the kernel
//! instead of holding the connection for the many minutes of TCP's own retransmissions.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, ClientTlsConfig, Cmd, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, RedisResult,
    TlsCertificates, TlsMode, Value,
};
use tokio::sync::Mutex;

use crate::config::{RedisConfig, TlsFiles, Topology};
use crate::store::StoreError;

/// Idle time before the first keepalive probe, then the interval between probes: a silent
/// peer of an idle connection is given up after about 15 + 3 × 5 seconds.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 3;

/// Pushed messages (pub/sub) of a connection go to one of these.
pub type PushSink = Arc<dyn AsyncPushSender>;

/// A connection commands run on. Both kinds multiplex every caller over their sockets and
/// reconnect by themselves after a disconnect; what they cannot notice (a connection that
/// stalls without closing, a master that moved) is `Link`'s business.
#[derive(Clone)]
pub enum Conn {
    /// One server: standalone, or the master Sentinel named (`addr` says which).
    Single {
        conn: ConnectionManager,
        addr: String,
    },
    Cluster(ClusterConnection),
}

impl Conn {
    /// Sends `cmd` to the node that holds `key` (the master of its slot on a cluster).
    pub async fn send_near(&mut self, key: &str, cmd: Cmd) -> RedisResult<Value> {
        match self {
            Conn::Single { conn, .. } => cmd.query_async(conn).await,
            Conn::Cluster(conn) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                    key.as_bytes(),
                    SlotAddr::Master,
                ));
                conn.route_command(cmd, RoutingInfo::SingleNode(route))
                    .await
            }
        }
    }
}

/// Makes connections for one configured Redis. Cheap to share; every `Link` and the replica
/// bus dial through the same one, so Sentinel is asked about the master in one place.
pub struct Dialer {
    target: Target,
    manager_config: ConnectionManagerConfig,
    timeout: Duration,
}

enum Target {
    Standalone(Client),
    Sentinel {
        client: Mutex<SentinelClient>,
        master: String,
    },
    Cluster(ClusterClient),
}

impl Dialer {
    /// Checks the configuration and prepares the clients; connects to nothing yet.
    pub fn new(config: &RedisConfig, timeout: Duration) -> Result<Self, StoreError> {
        let tcp = tcp_settings(timeout);
        let certs = certificates(&config.tls);
        // redis-rs errors name a category and a description, never the URL or password.
        let invalid = |what: &str, e: redis::RedisError| {
            StoreError::Unavailable(format!("invalid {what}: {e}"))
        };
        let target = match &config.topology {
            Topology::Standalone { url } => {
                let info = url
                    .expose()
                    .into_connection_info()
                    .map_err(|e| invalid("store.redis_url", e))?;
                let mut redis = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                if let Some(user) = &config.username {
                    redis = redis.set_username(user);
                }
                if let Some(password) = &config.password {
                    redis = redis.set_password(password.expose());
                }
                let info = info.set_redis_settings(redis).set_tcp_settings(tcp);
                let client = match (&certs, info.addr()) {
                    (Some(certs), ConnectionAddr::TcpTls { .. }) => {
                        Client::build_with_tls(info, certs.clone())
                    }
                    _ => Client::open(info),
                }
                .map_err(|e| invalid("store.redis_url", e))?;
                Target::Standalone(client)
            }
            Topology::Sentinel {
                urls,
                master,
                username,
                password,
                master_tls,
            } => {
                let mut addrs = Vec::with_capacity(urls.len());
                for url in urls {
                    let info = url
                        .as_str()
                        .into_connection_info()
                        .map_err(|e| invalid("store.sentinel_urls", e))?;
                    addrs.push(info.addr().clone());
                }
                let sentinels_tls = matches!(addrs.first(), Some(ConnectionAddr::TcpTls { .. }));
                let mut builder =
                    SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
                        .map_err(|e| invalid("store.sentinel_urls", e))?
                        .set_client_to_sentinel_tcp_settings(tcp.clone())
                        .set_client_to_redis_tcp_settings(tcp)
                        .set_client_to_redis_protocol(ProtocolVersion::RESP3);
                if let Some(user) = username {
                    builder = builder.set_client_to_sentinel_username(user);
                }
                if let Some(password) = password {
                    builder = builder.set_client_to_sentinel_password(password.expose());
                }
                if let Some(user) = &config.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(password) = &config.password {
                    builder = builder.set_client_to_redis_password(password.expose());
                }
                if sentinels_tls && let Some(certs) = &certs {
                    builder = builder.set_client_to_sentinel_certificates(certs.clone());
                }
                if *master_tls {
                    builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
                    if let Some(certs) = &certs {
                        builder = builder.set_client_to_redis_certificates(certs.clone());
                    }
                }
                let client = builder
                    .build()
                    .map_err(|e| invalid("store.sentinel_urls", e))?;
                Target::Sentinel {
                    client: Mutex::new(client),
                    master: master.clone(),
                }
            }
            Topology::Cluster { urls } => {
                let mut builder = ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    .use_protocol(ProtocolVersion::RESP3)
                    .tcp_settings(tcp)
                    .connection_timeout(timeout)
                    // `Link` bounds every call; the cluster client's own retries (MOVED, ASK,
                    // TRYAGAIN, a node reconnecting) run inside that bound, at a pace that
                    // fits in it.
                    .overall_response_timeout(None)
                    .retries(8)
                    .min_retry_wait(20)
                    .max_retry_wait(200)
                    .retry_wait_formula(20, 2);
                if let Some(user) = &config.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &config.password {
                    builder = builder.password(password.expose());
                }
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let client = builder
                    .build()
                    .map_err(|e| invalid("store.redis_cluster_urls", e))?;
                Target::Cluster(client)
            }
        };
        // No response timeout of the client's own: `Link` bounds every call (one timer per
        // call, not two).
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            target,
            manager_config,
            timeout,
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Whether the master can move (Sentinel): then every connection dialled is to whichever
    /// server Sentinel names master at that moment.
    pub fn follows_master(&self) -> bool {
        matches!(self.target, Target::Sentinel { .. })
    }

    /// `standalone`, `sentinel` or `cluster`.
    pub fn mode(&self) -> &'static str {
        match self.target {
            Target::Standalone(_) => "standalone",
            Target::Sentinel { .. } => "sentinel",
            Target::Cluster(_) => "cluster",
        }
    }

    /// A new connection, connected lazily (on first use), except that under Sentinel the
    /// master is looked up first. `push` receives pub/sub messages, and the subscriptions
    /// are renewed after each reconnect.
    pub async fn dial(&self, push: Option<PushSink>) -> Result<Conn, StoreError> {
        match &self.target {
            Target::Standalone(client) => self.manager(client.clone(), push),
            Target::Sentinel { client, master } => {
                let lookup = async { client.lock().await.async_get_client().await };
                let client = match tokio::time::timeout(self.timeout, lookup).await {
                    Ok(Ok(client)) => client,
                    Ok(Err(e)) => {
                        return Err(StoreError::Unavailable(format!(
                            "Sentinel gave no master `{master}`: {e}"
                        )));
                    }
                    Err(_) => {
                        return Err(StoreError::Unavailable(format!(
                            "Sentinel gave no master `{master}` within {} ms",
                            self.timeout.as_millis()
                        )));
                    }
                };
                self.manager(client, push)
            }
            Target::Cluster(client) => {
                // No response timeout of the client's own, as for one server.
                let mut config = ClusterConfig::new().set_connection_timeout(self.timeout);
                if let Some(push) = push {
                    config = config.set_push_sender(push);
                }
                Ok(Conn::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }

    /// A client for one of the sentinels (the first that answers), with the configured
    /// credentials and TLS; an error unless this is Sentinel.
    pub async fn sentinel_client(&self) -> RedisResult<Client> {
        match &self.target {
            Target::Sentinel { client, .. } => {
                client.lock().await.async_get_sentinel_client().await
            }
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a Sentinel configuration",
            ))),
        }
    }

    /// The master's name under Sentinel.
    pub fn master_name(&self) -> Option<&str> {
        match &self.target {
            Target::Sentinel { master, .. } => Some(master),
            _ => None,
        }
    }

    fn manager(&self, client: Client, push: Option<PushSink>) -> Result<Conn, StoreError> {
        let addr = client.get_connection_info().addr().to_string();
        let mut config = self.manager_config.clone();
        if let Some(push) = push {
            config = config.set_push_sender(push).set_automatic_resubscription();
        }
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Conn::Single { conn, addr })
    }
}

/// Keepalive for idle connections; `TCP_USER_TIMEOUT` for busy ones: data unacknowledged for
/// that long (at least 5 s, four command timeouts when those are longer) closes the
/// connection, so a command to a vanished host fails instead of waiting on retransmissions.
fn tcp_settings(command_timeout: Duration) -> TcpSettings {
    let keepalive = TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    #[cfg(not(target_os = "linux"))]
    let _ = (KEEPALIVE_INTERVAL, KEEPALIVE_PROBES);
    // Commands are small and many share a connection: do not hold one back for Nagle.
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout((command_timeout * 4).max(Duration::from_secs(5)));
    #[cfg(not(target_os = "linux"))]
    let _ = command_timeout;
    settings
}

fn certificates(tls: &TlsFiles) -> Option<TlsCertificates> {
    if !tls.is_set() {
        return None;
    }
    Some(TlsCertificates {
        client_tls: tls.client.as_ref().map(|(cert, key)| ClientTlsConfig {
            client_cert: cert.clone(),
            client_key: key.expose().as_bytes().to_vec(),
        }),
        root_cert: tls.ca.clone(),
    })
}
