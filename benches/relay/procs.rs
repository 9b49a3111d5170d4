//! The processes a benchmark runs against: a private `redis-server`, callrelay replicas built
//! from this tree, and the reference webhook under gunicorn. Each is killed when dropped, so a
//! failed scenario leaves nothing running.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The account every scenario uses: the one the baseline's seed command writes bindings for.
pub const ACCOUNT: &str = "AC00000000000000000000000000000000";
pub const AUTH_TOKEN: &str = "bench-auth-token";
pub const API_KEY: &str = "SK00000000000000000000000000000000";
pub const API_SECRET: &str = "bench-api-key-secret";
pub const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdef";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A directory of its own for one process's configuration and log, removed on drop.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "callrelay-bench-{}-{what}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop; its output goes to `log`.
struct Managed {
    child: Child,
    log: PathBuf,
}

impl Managed {
    fn spawn(command: &mut Command, log: PathBuf) -> Result<Self, Error> {
        let out = fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        Ok(Self { child, log })
    }

    /// Waits until `ready` holds, failing early when the process exits.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), Error> {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("{what} exited ({status}): {}", self.tail()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("{what} did not become ready: {}", self.tail()).into())
    }

    fn tail(&self) -> String {
        let bytes = fs::read(&self.log).unwrap_or_default();
        let start = bytes.len().saturating_sub(2000);
        String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Managed {
    /// SIGTERM first, so that callrelay shuts down as in production (and a profiler wrapping
    /// it writes its report); SIGKILL after a grace period.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one raw request and returns the whole answer, or `None` when nothing answers.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

fn http_get_ok(addr: SocketAddr, path: &str) -> bool {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    raw_exchange(addr, request.as_bytes()).is_some_and(|a| a.starts_with("HTTP/1.1 200"))
}

pub struct Redis {
    pub port: u16,
    process: Managed,
    _dir: WorkDir,
}

impl Redis {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// A private server on a free port that keeps nothing on disk.
    pub fn start() -> Result<Self, Error> {
        Self::start_on(free_port(), &[])
    }

    fn start_on(port: u16, args: &[&str]) -> Result<Self, Error> {
        let dir = WorkDir::new("redis");
        let mut process = Managed::spawn(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .args(args)
                .arg("--dir")
                .arg(&dir.0),
            dir.file("redis.log"),
        )
        .map_err(|e| format!("{e} (install it: apt-get install redis-server)"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        process.wait_until("redis-server", || {
            raw_exchange(addr, b"PING\r\nQUIT\r\n").is_some_and(|a| a.starts_with("+PONG"))
        })?;
        Ok(Self {
            port,
            process,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Memory the server uses for data (`used_memory` of `INFO memory`), in bytes.
    pub fn used_memory(&self) -> Result<u64, Error> {
        let info = self.cli(&["INFO", "memory"]);
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("INFO memory has no used_memory: {info}").into())
    }

    /// One command through `redis-cli`; its output.
    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// A Redis Cluster of masters only (no replicas: the benchmark measures the shards that
/// serve), created with `redis-cli --cluster create` as an operator would.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

/// A port for a cluster node: its cluster bus listens 10,000 above it, so it must be at most
/// 55,535 and both must be free.
fn free_cluster_port() -> Result<u16, Error> {
    for attempt in 0..500u32 {
        let seed = std::process::id()
            .wrapping_mul(2_654_435_761)
            .wrapping_add(attempt.wrapping_mul(40_503));
        let port = 20_000 + (seed % 35_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return Ok(port);
        }
    }
    Err("no free port pair for a cluster node".into())
}

impl Cluster {
    pub fn start(masters: usize) -> Result<Self, Error> {
        let mut nodes: Vec<Redis> = Vec::with_capacity(masters);
        for _ in 0..masters {
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ];
            // Another process may take the port between the check and the bind: try again.
            let mut started = Err(Error::from("no cluster node started"));
            for _ in 0..5 {
                started = Redis::start_on(free_cluster_port()?, &args);
                if started.is_ok() {
                    break;
                }
            }
            nodes.push(started?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e} (apt-get install redis-tools)"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let until = Instant::now() + Duration::from_secs(30);
        while !nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            if Instant::now() > until {
                return Err("the cluster did not reach cluster_state:ok in 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { nodes })
    }
}

/// Where a callrelay deployment keeps its state.
pub trait Backend {
    /// The `[store]` keys that point callrelay at it.
    fn store_toml(&self) -> String;
    /// The Redis processes whose CPU time a run counts.
    fn pids(&self) -> Vec<u32>;
}

impl Backend for Redis {
    fn store_toml(&self) -> String {
        format!("redis_url = \"{}\"", self.url())
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.pid()]
    }
}

impl Backend for Cluster {
    fn store_toml(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("redis_cluster_urls = [{}]", seeds.join(", "))
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(Redis::pid).collect()
    }
}

/// `redis-benchmark` GET at `concurrency`, `requests` of them: what Redis alone answers on
/// this machine. Returns GETs per second and the servers' CPU microseconds per GET.
pub fn redis_benchmark_get(
    target: &dyn Backend,
    port: u16,
    cluster: bool,
    concurrency: usize,
    requests: usize,
) -> Result<(f64, f64), Error> {
    let pids = target.pids();
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let before = cpu(&pids);
    let mut command = Command::new("redis-benchmark");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &concurrency.to_string(), "-n", &requests.to_string()])
        .args(["-t", "get", "--csv"]);
    if cluster {
        command.arg("--cluster");
    }
    let out = command
        .output()
        .map_err(|e| format!("cannot run redis-benchmark: {e} (apt-get install redis-tools)"))?;
    let used = cpu(&pids) - before;
    let text = String::from_utf8_lossy(&out.stdout);
    // `"GET","<requests per second>",...`, after a header line.
    let rate = text
        .lines()
        .find(|l| l.starts_with("\"GET\""))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse::<f64>().ok())
        .ok_or_else(|| {
            format!(
                "redis-benchmark printed no GET figure: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok((rate, used * 1e6 / requests as f64))
}

/// One callrelay replica, started from the binary this benchmark was built with.
pub struct Callrelay {
    pub addr: SocketAddr,
    admin: SocketAddr,
    process: Managed,
    _dir: WorkDir,
}

/// HTTP connections a replica accepts in the benchmark: the load generator's, with room.
const MAX_CONNECTIONS: u64 = 1024;

/// The sockets a replica may hold within the open-files limit it inherits, so that its
/// descriptor-budget check (which the harness would report as a warning) holds.
pub fn socket_budget() -> u64 {
    use callrelay::http::descriptors::{RESERVED, open_files_limit};
    open_files_limit()
        .unwrap_or(100_000)
        .saturating_sub(MAX_CONNECTIONS + RESERVED)
        .max(1)
}

impl Callrelay {
    /// `extra` is appended to the generated configuration (push apps, limits).
    pub fn start(store: &dyn Backend, prefix: &str, extra: &str) -> Result<Self, Error> {
        let dir = WorkDir::new("callrelay");
        let (port, admin_port) = (free_port(), free_port());
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
public_url = "http://127.0.0.1:{port}"

[store]
{store}
key_prefix = "{prefix}"

[limits]
# As many sockets as this machine's open-files limit leaves room for (the socket scenarios),
# bindings registered in bulk by the push scenario; everything else keeps its default.
max_sockets = {max_sockets}
max_connections = {max_connections}
binding_requests_per_minute = 0

[[accounts]]
sid = "{ACCOUNT}"
auth_token = "{AUTH_TOKEN}"
api_keys = [{{ sid = "{API_KEY}", secret = "{API_SECRET}" }}]

[admin]
api_keys = ["{ADMIN_KEY}"]
{extra}
"#,
            store = store.store_toml(),
            max_sockets = socket_budget(),
            max_connections = MAX_CONNECTIONS,
        );
        let path = dir.file("callrelay.toml");
        fs::write(&path, config)?;
        // A profiler may wrap the replica (`valgrind --tool=massif`, `perf record --`).
        let mut command = match std::env::var("CALLRELAY_BENCH_WRAPPER") {
            Ok(wrapper) if !wrapper.trim().is_empty() => {
                let mut words = wrapper.split_whitespace();
                let mut c = Command::new(words.next().expect("not empty"));
                c.args(words).arg(env!("CARGO_BIN_EXE_callrelay"));
                c
            }
            _ => Command::new(env!("CARGO_BIN_EXE_callrelay")),
        };
        let mut process = Managed::spawn(
            command
                .arg("serve")
                .arg("--config")
                .arg(&path)
                .env_remove("RUST_LOG"),
            dir.file("callrelay.log"),
        )?;
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        process.wait_until("callrelay", || http_get_ok(admin, "/readyz"))?;
        Ok(Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin,
            process,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The replica's Prometheus metrics, the lines that start with `prefix`.
    pub fn metrics(&self, prefix: &str) -> Vec<String> {
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.admin
        );
        raw_exchange(self.admin, request.as_bytes())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    /// Log lines at warn level or above; a clean run has none.
    pub fn complaints(&self) -> Vec<String> {
        fs::read_to_string(&self.process.log)
            .unwrap_or_default()
            .lines()
            .map(strip_ansi)
            .filter(|l| {
                // `<timestamp> <LEVEL> <target>: ...`, the default text format.
                matches!(l.split_whitespace().nth(1), Some("WARN" | "ERROR"))
            })
            .collect()
    }
}

/// The line without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The reference webhook (`../shared/baseline/app.py`) under gunicorn, as its README runs it.
pub struct Baseline {
    pub addr: SocketAddr,
    process: Managed,
    _dir: WorkDir,
}

pub struct BaselineSetup {
    /// The directory holding `app.py`.
    pub app_dir: PathBuf,
    /// A virtual environment with flask, redis and gunicorn.
    pub venv: PathBuf,
}

impl Baseline {
    /// Seeds `identities` identities with one binding each, then starts two gunicorn workers.
    pub fn start(
        setup: &BaselineSetup,
        redis: &Redis,
        prefix: &str,
        identities: usize,
    ) -> Result<Self, Error> {
        let dir = WorkDir::new("baseline");
        let bin = |name: &str| setup.venv.join("bin").join(name);
        let seed = Command::new(bin("python"))
            .arg(setup.app_dir.join("app.py"))
            .args(["seed", "--identities", &identities.to_string()])
            .args(["--bindings", "1"])
            .env("REDIS_URL", redis.url())
            .env("BASELINE_PREFIX", prefix)
            .output()
            .map_err(|e| format!("cannot run the baseline's seed command: {e}"))?;
        if !seed.status.success() {
            return Err(format!(
                "the baseline's seed command failed: {}",
                String::from_utf8_lossy(&seed.stderr)
            )
            .into());
        }
        let port = free_port();
        let mut process = Managed::spawn(
            Command::new(bin("gunicorn"))
                .args(["-w", "2", "-b", &format!("127.0.0.1:{port}")])
                .arg("--chdir")
                .arg(&setup.app_dir)
                .arg("app:app")
                .env("REDIS_URL", redis.url())
                .env("BASELINE_PREFIX", prefix),
            dir.file("gunicorn.log"),
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let probe = format!(
            "POST /v1/twilio/call-notifications HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]"
        );
        process.wait_until("the baseline", || {
            raw_exchange(addr, probe.as_bytes()).is_some_and(|a| a.starts_with("HTTP/1.1 400"))
        })?;
        Ok(Self {
            addr,
            process,
            _dir: dir,
        })
    }

    /// The gunicorn master's pid; its workers are its children.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// CPU time (user and system) a process and its children used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    // Fields 14 and 15 of /proc/<pid>/stat, in clock ticks; the comm field may hold spaces,
    // so count from the closing parenthesis. Ticks are 1/100 s on Linux.
    let own = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
            Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
        })
        .unwrap_or(0.0);
    let children: f64 = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(cpu_seconds)
        .sum();
    own + children
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, Error> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmRSS line")?;
    Ok(kib * 1024)
}

/// How many files this process may open (the socket scenarios are bounded by it).
pub fn open_files_limit() -> u64 {
    fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(1024)
}
