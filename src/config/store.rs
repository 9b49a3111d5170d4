//! `[store]`: which engine holds callrelay's state and how to reach it. Exactly one of
//! `redis_url` (one server), `sentinel_urls` (a master found through Redis Sentinel) or
//! `redis_cluster_urls` (Redis Cluster seed nodes); none of them: the embedded memory store.

use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::raw::RawStore;
use super::{ConfigError, Secret, millis, secret};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `None`: the embedded memory store.
    pub redis: Option<RedisConfig>,
    pub key_prefix: String,
    pub command_timeout: Duration,
}

/// How to reach Redis, validated: the URLs are well formed, the certificates parse.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub topology: Topology,
    /// Credentials for the data nodes (a standalone server, the master, cluster nodes). For
    /// `redis_url` they may instead be part of the URL.
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: TlsFiles,
    /// Replicas that must acknowledge a binding write before it is acknowledged (`WAIT`);
    /// 0: replication stays asynchronous.
    pub min_replica_acks: u32,
}

#[derive(Debug, Clone)]
pub enum Topology {
    /// A `redis://`, `rediss://` or `unix://` URL. A secret: it may carry a password.
    Standalone { url: Secret },
    /// The master named `master`, as the sentinels at `urls` report it.
    Sentinel {
        urls: Vec<String>,
        master: String,
        username: Option<String>,
        password: Option<Secret>,
        /// Whether the master and replicas speak TLS (by default: as the sentinels do).
        master_tls: bool,
    },
    /// Seed nodes; the rest of the cluster is discovered from them.
    Cluster { urls: Vec<String> },
}

impl Topology {
    /// `standalone`, `sentinel` or `cluster`, as logs and `check-config` name it.
    pub fn mode(&self) -> &'static str {
        match self {
            Topology::Standalone { .. } => "standalone",
            Topology::Sentinel { .. } => "sentinel",
            Topology::Cluster { .. } => "cluster",
        }
    }
}

/// TLS material for Redis connections, read and checked at start-up.
#[derive(Clone, Default)]
pub struct TlsFiles {
    /// PEM certificates that sign the servers' certificates, instead of the system roots.
    pub ca: Option<Vec<u8>>,
    /// Client certificate chain and key (PEM) for mutual TLS.
    pub client: Option<(Vec<u8>, Secret)>,
}

impl TlsFiles {
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }

    /// The key an error about TLS files names.
    fn key_name(&self) -> &'static str {
        if self.ca.is_some() {
            "store.tls_ca_file"
        } else {
            "store.tls_cert_file"
        }
    }
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.as_ref().map(|_| "set"))
            .field("client", &self.client.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

pub fn validate(raw: RawStore) -> Result<StoreConfig, ConfigError> {
    let key_prefix = raw.key_prefix.unwrap_or_else(|| "callrelay".into());
    if key_prefix.is_empty()
        || !key_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(ConfigError::invalid(
            "store.key_prefix",
            "use letters, digits and - _ . : only",
        ));
    }
    let command_timeout = millis(
        "store.command_timeout_ms",
        raw.command_timeout_ms,
        1000,
        10..=60_000,
    )?;
    let redis_url = secret("store.redis_url", raw.redis_url, raw.redis_url_file)?;
    let username = raw.username.filter(|u| !u.is_empty());
    let password = secret("store.password", raw.password, raw.password_file)?;
    let tls = tls_files(
        secret("store.tls_ca", raw.tls_ca, raw.tls_ca_file)?,
        secret("store.tls_cert", raw.tls_cert, raw.tls_cert_file)?,
        secret("store.tls_key", raw.tls_key, raw.tls_key_file)?,
    )?;
    let sentinel_password = secret(
        "store.sentinel_password",
        raw.sentinel_password,
        raw.sentinel_password_file,
    )?;

    let chosen: Vec<&str> = [
        ("redis_url", redis_url.is_some()),
        ("sentinel_urls", raw.sentinel_urls.is_some()),
        ("redis_cluster_urls", raw.redis_cluster_urls.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    if chosen.len() > 1 {
        return Err(ConfigError::invalid(
            "store",
            format!(
                "set only one of redis_url, sentinel_urls, redis_cluster_urls (found {})",
                chosen.join(" and ")
            ),
        ));
    }
    let sentinel_only = [
        ("sentinel_master", raw.sentinel_master.is_some()),
        ("sentinel_username", raw.sentinel_username.is_some()),
        ("sentinel_password", sentinel_password.is_some()),
        ("sentinel_master_tls", raw.sentinel_master_tls.is_some()),
    ];
    if raw.sentinel_urls.is_none()
        && let Some((key, _)) = sentinel_only.iter().find(|(_, set)| *set)
    {
        return Err(ConfigError::invalid(
            format!("store.{key}"),
            "is set but store.sentinel_urls is not",
        ));
    }

    let topology = if let Some(url) = redis_url {
        check_standalone_url(url.expose(), password.is_some(), &tls)?;
        Topology::Standalone { url }
    } else if let Some(urls) = raw.sentinel_urls {
        let sentinels_tls = node_urls("store.sentinel_urls", &urls)?;
        let master = raw
            .sentinel_master
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ConfigError::invalid(
                    "store.sentinel_master",
                    "is required with store.sentinel_urls (the name the sentinels monitor)",
                )
            })?;
        let master_tls = raw.sentinel_master_tls.unwrap_or(sentinels_tls);
        if tls.is_set() && !master_tls && !sentinels_tls {
            return Err(ConfigError::invalid(
                tls.key_name(),
                "TLS files are set but neither the sentinels (rediss://) nor the master \
                 (sentinel_master_tls) use TLS",
            ));
        }
        Topology::Sentinel {
            urls,
            master,
            username: raw.sentinel_username.filter(|u| !u.is_empty()),
            password: sentinel_password,
            master_tls,
        }
    } else if let Some(urls) = raw.redis_cluster_urls {
        let cluster_tls = node_urls("store.redis_cluster_urls", &urls)?;
        if tls.is_set() && !cluster_tls {
            return Err(ConfigError::invalid(
                tls.key_name(),
                "TLS files are set but store.redis_cluster_urls are not rediss:// URLs",
            ));
        }
        Topology::Cluster { urls }
    } else {
        let redis_only = [
            ("username", username.is_some()),
            ("password", password.is_some()),
            ("tls_ca", tls.ca.is_some()),
            ("tls_cert", tls.client.is_some()),
            ("min_replica_acks", raw.min_replica_acks.is_some()),
        ];
        if let Some((key, _)) = redis_only.iter().find(|(_, set)| *set) {
            return Err(ConfigError::invalid(
                format!("store.{key}"),
                "is set but no Redis is configured (redis_url, sentinel_urls or redis_cluster_urls)",
            ));
        }
        return Ok(StoreConfig {
            redis: None,
            key_prefix,
            command_timeout,
        });
    };

    let min_replica_acks = match raw.min_replica_acks.unwrap_or(0) {
        n @ 0..=16 => n as u32,
        n => {
            return Err(ConfigError::invalid(
                "store.min_replica_acks",
                format!("{n} is out of range (0..=16)"),
            ));
        }
    };
    Ok(StoreConfig {
        redis: Some(RedisConfig {
            topology,
            username,
            password,
            tls,
            min_replica_acks,
        }),
        key_prefix,
        command_timeout,
    })
}

fn check_standalone_url(url: &str, password_set: bool, tls: &TlsFiles) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::invalid("store.redis_url", why.to_owned());
    let rest = ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| bad("must start with redis://, rediss://, redis+unix:// or unix://"))?;
    if url.contains("#insecure") {
        return Err(bad(
            "asks for TLS without certificate checks, which callrelay does not do; set \
             store.tls_ca_file to the CA that signed the server's certificate",
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if password_set && authority.contains('@') {
        return Err(bad(
            "carries credentials and store.password is set too; keep one of them",
        ));
    }
    if tls.is_set() && !url.starts_with("rediss://") {
        return Err(ConfigError::invalid(
            tls.key_name(),
            "TLS files are set but store.redis_url is not a rediss:// URL",
        ));
    }
    Ok(())
}

/// Checks sentinel or cluster node URLs: `redis://host:port` or `rediss://host:port`, all with
/// the same scheme, no credentials (those have keys of their own, read as secrets). Returns
/// whether they use TLS.
fn node_urls(key: &str, urls: &[String]) -> Result<bool, ConfigError> {
    if urls.is_empty() {
        return Err(ConfigError::invalid(key, "lists no URL"));
    }
    let mut tls = None;
    for (i, url) in urls.iter().enumerate() {
        let bad = |why: &str| ConfigError::invalid(format!("{key}[{i}]"), why.to_owned());
        let (is_tls, rest) = if let Some(rest) = url.strip_prefix("rediss://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("redis://") {
            (false, rest)
        } else {
            return Err(bad("must start with redis:// or rediss://"));
        };
        if *tls.get_or_insert(is_tls) != is_tls {
            return Err(bad(
                "mixes redis:// and rediss://; use one scheme for every node",
            ));
        }
        let authority = rest.trim_end_matches('/');
        if authority.contains('@') {
            return Err(bad(
                "must not carry credentials; use store.password (or store.sentinel_password for sentinels)",
            ));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(bad("must be host:port only"));
        }
        let Some((host, port)) = authority.rsplit_once(':') else {
            return Err(bad("needs a port (host:port)"));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("must be host:port"));
        }
    }
    Ok(tls.unwrap_or(false))
}

fn tls_files(
    ca: Option<Secret>,
    cert: Option<Secret>,
    key: Option<Secret>,
) -> Result<TlsFiles, ConfigError> {
    let ca = match ca {
        None => None,
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem.expose().as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::invalid("store.tls_ca_file", format!("not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(ConfigError::invalid(
                    "store.tls_ca_file",
                    "holds no PEM certificate",
                ));
            }
            Some(pem.expose().as_bytes().to_vec())
        }
    };
    let client = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.expose().as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    ConfigError::invalid("store.tls_cert_file", format!("not PEM: {e}"))
                })?;
            if chain.is_empty() {
                return Err(ConfigError::invalid(
                    "store.tls_cert_file",
                    "holds no PEM certificate",
                ));
            }
            // The parse error names the problem, never the key's bytes.
            PrivateKeyDer::from_pem_slice(key.expose().as_bytes()).map_err(|_| {
                ConfigError::invalid(
                    "store.tls_key_file",
                    "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                )
            })?;
            Some((cert.expose().as_bytes().to_vec(), key))
        }
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "store.tls_key_file",
                "is required with store.tls_cert_file (mutual TLS needs both)",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                "store.tls_cert_file",
                "is required with store.tls_key_file (mutual TLS needs both)",
            ));
        }
    };
    Ok(TlsFiles { ca, client })
}
