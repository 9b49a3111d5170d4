//! Highly available Redis setups on loopback, as production runs them: a master and a replica
//! watched by three sentinels, and a Redis Cluster of three masters with a replica each. Tests
//! that only read and write share one of each per test process; tests that kill a master start
//! their own.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::redis::{RedisServer, ServerOptions, free_cluster_port};

pub const MASTER_NAME: &str = "callrelay-master";

/// Polls `check` every 50 ms until it is true; panics with `what` after `within`.
fn wait_for(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A master, its replica and three sentinels (quorum 2) that fail over after a second.
pub struct SentinelSet {
    pub nodes: Vec<RedisServer>,
    pub sentinels: Vec<RedisServer>,
}

impl SentinelSet {
    pub fn start() -> Self {
        let master = RedisServer::start_with(ServerOptions::default());
        let replica = RedisServer::start_with(ServerOptions {
            args: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ],
            ..ServerOptions::default()
        });
        wait_for(Duration::from_secs(10), "the replica to sync", || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(ServerOptions {
                    config_file: Some(format!(
                        "sentinel monitor {MASTER_NAME} 127.0.0.1 {port} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 2000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        port = master.port
                    )),
                    args: vec!["--sentinel".into()],
                    ..ServerOptions::default()
                })
            })
            .collect();
        let set = Self {
            nodes: vec![master, replica],
            sentinels,
        };
        set.wait_until_ready_to_fail_over(Duration::from_secs(20));
        set
    }

    /// Waits until every sentinel knows the two others (they meet through the master's
    /// pub/sub) and one replica in sync: what a failover needs.
    pub fn wait_until_ready_to_fail_over(&self, within: Duration) {
        wait_for(within, "the sentinels to be ready for a failover", || {
            let master = self.master_port();
            let replica_in_sync = self.nodes.iter().any(|n| {
                n.port != master
                    && n.is_running()
                    && n.cli(&["INFO", "replication"])
                        .contains("master_link_status:up")
            });
            replica_in_sync
                && self.sentinels.iter().all(|s| {
                    let info = s.cli(&["SENTINEL", "MASTER", MASTER_NAME]);
                    let after = |name: &str| {
                        let mut lines = info.lines();
                        while let Some(l) = lines.next() {
                            if l == name {
                                return lines.next().map(str::to_owned);
                            }
                        }
                        None
                    };
                    after("num-other-sentinels").as_deref() == Some("2")
                        && after("num-slaves").as_deref() == Some("1")
                        && after("flags").as_deref() == Some("master")
                })
        });
    }

    /// The `[store]` keys that point callrelay at this set.
    pub fn store_toml(&self) -> String {
        let urls: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"redis://{}\"", s.addr()))
            .collect();
        format!(
            "sentinel_urls = [{}]\nsentinel_master = \"{MASTER_NAME}\"\n",
            urls.join(", ")
        )
    }

    /// The port of the server the sentinels currently call master.
    pub fn master_port(&self) -> u16 {
        let out = self.sentinels[0].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap()
    }

    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    /// Waits until every sentinel names a master other than `old_port` and that server says
    /// it is a master.
    pub fn wait_for_promotion(&self, old_port: u16, within: Duration) -> u16 {
        let mut new_port = 0;
        wait_for(within, "a replica to be promoted", || {
            let ports: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .map(|s| {
                    let out = s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
                    out.lines().nth(1).and_then(|p| p.trim().parse().ok())
                })
                .collect();
            let Some(Some(port)) = ports.first().copied() else {
                return false;
            };
            if port == old_port || ports.iter().any(|p| *p != Some(port)) {
                return false;
            }
            new_port = port;
            self.nodes
                .iter()
                .find(|n| n.port == port)
                .is_some_and(|n| n.cli(&["ROLE"]).starts_with("master"))
        });
        new_port
    }
}

/// The sentinel set shared by the tests that do not kill anything.
pub fn shared_sentinels() -> &'static SentinelSet {
    static SET: OnceLock<SentinelSet> = OnceLock::new();
    SET.get_or_init(SentinelSet::start)
}

/// Three masters, one replica each, created with `redis-cli --cluster create`.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(ServerOptions {
                    port: Some(free_cluster_port()),
                    args: [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        // A master that stops answering for a second is failed over.
                        "--cluster-node-timeout",
                        "1000",
                        // Sharded channels and keys stay served while a shard is down.
                        "--cluster-require-full-coverage",
                        "no",
                    ]
                    .map(String::from)
                    .to_vec(),
                    ..ServerOptions::default()
                })
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        let out = std::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until_healthy(Duration::from_secs(30));
        cluster
    }

    /// Every node sees the cluster `ok` with six nodes, and every replica is in sync.
    pub fn wait_until_healthy(&self, within: Duration) {
        wait_for(within, "the cluster to be healthy", || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                let ok = info.contains("cluster_state:ok");
                let role = n.cli(&["ROLE"]);
                ok && (role.starts_with("master")
                    || n.cli(&["INFO", "replication"])
                        .contains("master_link_status:up"))
            })
        });
    }

    /// `[store]` keys that point callrelay at this cluster (two seed nodes, as a deployment
    /// would list a few).
    pub fn store_toml(&self) -> String {
        format!(
            "redis_cluster_urls = [\"redis://{}\", \"redis://{}\"]\n",
            self.nodes[0].addr(),
            self.nodes[1].addr()
        )
    }

    /// Ports of the nodes that are masters now.
    pub fn master_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running() && n.cli(&["ROLE"]).starts_with("master"))
            .map(|n| n.port)
            .collect()
    }

    fn any_node(&self) -> &RedisServer {
        self.nodes.iter().find(|n| n.is_running()).unwrap()
    }

    pub fn slot_of(&self, key: &str) -> u16 {
        self.any_node()
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap()
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        self.master_of_slot(self.slot_of(key))
    }

    /// The port of the master serving `slot`, as the running nodes see it. Right after a
    /// failover a node's table may not name the promoted replica yet: ask each running node,
    /// again for a while, before giving up.
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        let started = Instant::now();
        loop {
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                if let Some(port) = Self::master_in(&node.cli(&["CLUSTER", "NODES"]), slot) {
                    return port;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no master serves slot {slot}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The master serving `slot` in one node's `CLUSTER NODES` answer.
    fn master_in(nodes: &str, slot: u16) -> Option<u16> {
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            for range in &fields[8..] {
                let (lo, hi) = match range.split_once('-') {
                    Some((lo, hi)) => (lo.parse::<u16>(), hi.parse::<u16>()),
                    None => (range.parse::<u16>(), range.parse::<u16>()),
                };
                if let (Ok(lo), Ok(hi)) = (lo, hi)
                    && (lo..=hi).contains(&slot)
                {
                    let addr = fields[1].split('@').next().unwrap();
                    return addr.rsplit(':').next().unwrap().parse().ok();
                }
            }
        }
        None
    }

    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    fn by_port(&self, port: u16) -> &RedisServer {
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    /// Moves `slot` and its keys to the master on `to`, as `redis-cli --cluster reshard`
    /// does: the target imports, the source migrates key by key (clients meanwhile get `ASK`
    /// for the keys already moved), then every master learns the new owner.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let from = self.master_of_slot(slot);
        if from == to {
            return;
        }
        let (source, target) = (self.by_port(from), self.by_port(to));
        let id = |n: &RedisServer| n.cli(&["CLUSTER", "MYID"]).trim().to_owned();
        let (source_id, target_id) = (id(source), id(target));
        let slot_text = slot.to_string();
        let ok = |out: String| assert!(out.trim() == "OK", "{out}");
        ok(target.cli(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source_id]));
        ok(source.cli(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target_id]));
        loop {
            let keys = source.cli(&["CLUSTER", "GETKEYSINSLOT", &slot_text, "10"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            let out = source.cli(&args);
            assert!(matches!(out.trim(), "OK" | "NOKEY"), "MIGRATE: {out}");
        }
        ok(target.cli(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &target_id]));
        ok(source.cli(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &target_id]));
        for port in self.master_ports() {
            if port != from && port != to {
                let _ = self
                    .by_port(port)
                    .cli(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &target_id]);
            }
        }
    }
}

/// The cluster shared by the tests that do not kill anything.
pub fn shared_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}
