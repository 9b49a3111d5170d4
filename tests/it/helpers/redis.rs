//! Private `redis-server`s for the tests, on free ports. Never the machine's shared one.
//! Plain servers, TLS servers (certificates from the tests' own CA), Sentinel-managed pairs and
//! Redis Clusters (`topology.rs`) are all started through [`RedisServer::start_with`].

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempPath;

use callrelay_testkit::tls::TestCa;

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    pub dir: PathBuf,
    options: ServerOptions,
}

/// How to start a server.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// `--requirepass`.
    pub password: Option<String>,
    /// Serve TLS only, with a certificate for 127.0.0.1 and localhost.
    pub tls: Option<TlsOptions>,
    /// Keep data in an append-only file fsynced on every write (a restart keeps what was
    /// acknowledged); otherwise no persistence at all.
    pub durable: bool,
    /// A configuration file (written to the server's directory) given before the arguments;
    /// Sentinel needs one it can rewrite.
    pub config_file: Option<String>,
    /// Extra arguments, e.g. `["--replicaof", "127.0.0.1", "6379"]` or `["--sentinel"]`.
    pub args: Vec<String>,
    /// A fixed port (Redis Cluster needs port + 10000 free as well).
    pub port: Option<u16>,
    /// Files removed with the server's directory when the test process goes away: what a
    /// server kept in a static needs (its certificates), which no destructor removes.
    pub leftovers: Vec<PathBuf>,
}

/// Certificate and key files of a TLS server, and whether clients must present a
/// certificate of the same CA.
#[derive(Clone)]
pub struct TlsOptions {
    pub ca_file: PathBuf,
    /// Shared by the options' clones; removed when the last goes.
    pub cert_file: Arc<TempPath>,
    pub key_file: Arc<TempPath>,
    pub require_client_cert: bool,
}

impl TlsOptions {
    /// A server certificate from `ca` for 127.0.0.1 and localhost.
    pub fn issued_by(ca: &TestCa, require_client_cert: bool) -> Self {
        let issued = ca.issue(&["127.0.0.1", "localhost"], "redis");
        Self {
            ca_file: ca.ca_file.to_path_buf(),
            cert_file: Arc::new(callrelay_testkit::tls::temp_file(
                "redis.crt",
                &issued.cert_pem,
            )),
            key_file: Arc::new(callrelay_testkit::tls::temp_file(
                "redis.key",
                &issued.key_pem,
            )),
            require_client_cert,
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port `p` with `p + 10000` free too (Redis Cluster's bus port), at most 55535.
pub fn free_cluster_port() -> u16 {
    for _ in 0..200 {
        let p = 20_000 + (uuid::Uuid::new_v4().as_u128() % 30_000) as u16;
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port pair for a cluster node");
}

impl RedisServer {
    /// Starts a server that keeps its data in an append-only file, so a restart on the same
    /// port keeps what was written.
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    /// A server that requires `AUTH` with this password.
    pub fn start_with_password(password: Option<&str>) -> Self {
        Self::start_with(ServerOptions {
            password: password.map(str::to_owned),
            durable: true,
            ..ServerOptions::default()
        })
    }

    pub fn start_with(options: ServerOptions) -> Self {
        let dir = std::env::temp_dir().join(format!("callrelay-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port: options.port.unwrap_or_else(free_port),
            child: None,
            dir,
            options,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let o = &self.options;
        let mut args: Vec<String> = Vec::new();
        if let Some(text) = &o.config_file {
            let path = self.dir.join("redis.conf");
            if !path.exists() {
                std::fs::write(&path, text).unwrap();
            }
            args.push(path.display().to_string());
        }
        args.extend(o.args.iter().cloned());
        match &o.tls {
            None => args.extend(["--port".into(), self.port.to_string()]),
            Some(tls) => args.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                self.port.to_string(),
                "--tls-cert-file".into(),
                tls.cert_file.display().to_string(),
                "--tls-key-file".into(),
                tls.key_file.display().to_string(),
                "--tls-ca-cert-file".into(),
                tls.ca_file.display().to_string(),
                "--tls-auth-clients".into(),
                if tls.require_client_cert { "yes" } else { "no" }.into(),
            ]),
        }
        args.extend(["--bind".into(), "127.0.0.1".into()]);
        args.extend(["--dir".into(), self.dir.display().to_string()]);
        args.extend(["--logfile".into(), "redis.log".into()]);
        if !o.args.iter().any(|a| a == "--sentinel") {
            args.extend(["--save".into(), "''".into()]);
            if o.durable {
                args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
            } else {
                args.extend(["--appendonly".into(), "no".into()]);
            }
        }
        if let Some(p) = &o.password {
            args.extend(["--requirepass".into(), p.clone()]);
        }
        // The wrapper stops redis-server when the test process goes away, even if it is
        // killed before any destructor runs, and then removes the server's directory (the
        // servers shared by a test process live in statics, which are never dropped). It
        // records redis-server's pid so that `kill`, `pause` and `resume` can signal the
        // server itself.
        let script = format!(
            "redis-server {args} & r=$!; echo $r > {dir}/redis-server.pid; \
             trap 'kill $r 2>/dev/null; exit 0' TERM INT; \
             while kill -0 {parent} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.2; done; \
             kill $r 2>/dev/null; wait $r; \
             kill -0 {parent} 2>/dev/null || rm -rf {dir} {leftovers}",
            args = args.join(" "),
            dir = self.dir.display(),
            parent = std::process::id(),
            leftovers = o
                .leftovers
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run redis-server: install it (apt-get install redis-server)");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start on port {} (is redis-server installed?): {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.options.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// `host:port`, as Redis names its nodes.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this (plain TCP) server and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.arg("-p").arg(self.port.to_string());
        if let Some(p) = &self.options.password {
            command.arg("--no-auth-warning").arg("-a").arg(p);
        }
        let out = command.args(args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Stops the server (SIGTERM: it shuts down cleanly; its data stays on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server would not act on SIGTERM.
            let _ = self.signal("CONT");
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        self.wait_until_closed();
    }

    /// Kills the server with SIGKILL, as the kernel or an orchestrator would: no shutdown, no
    /// last write. What it acknowledged is in its append-only file (fsynced on every write).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            assert!(self.signal("KILL"), "kill -KILL redis-server failed");
            // The wrapper notices within 0.2 s and exits.
            let _ = child.wait();
        }
        self.wait_until_closed();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Freezes the server (SIGSTOP): connections stay open and every command hangs.
    pub fn pause(&self) {
        assert!(self.signal("STOP"), "kill -STOP redis-server failed");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        assert!(self.signal("CONT"), "kill -CONT redis-server failed");
    }

    /// Sends `SIG<name>` to redis-server (not the wrapper); whether it was delivered.
    fn signal(&self, name: &str) -> bool {
        let pid_file = self.dir.join("redis-server.pid");
        let started = Instant::now();
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break pid;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no redis-server pid in {}",
                pid_file.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_until_closed(&self) {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("redis-server.pid"));
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One server shared by the tests of this process; each test uses its own key prefix.
pub fn shared() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

/// A TLS server shared by the tests of this process, and the CA that signed its certificate
/// (clients need it: the server's certificate is not from a public CA). It asks for no
/// client certificate; `tests/it/redis_tls.rs` starts one that does.
pub fn shared_tls() -> &'static (TestCa, RedisServer) {
    static SERVER: OnceLock<(TestCa, RedisServer)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let ca = TestCa::new("redis");
        let tls = TlsOptions::issued_by(&ca, false);
        let leftovers = vec![
            ca.ca_file.to_path_buf(),
            tls.cert_file.to_path_buf(),
            tls.key_file.to_path_buf(),
        ];
        let server = RedisServer::start_with(ServerOptions {
            tls: Some(tls),
            leftovers,
            ..ServerOptions::default()
        });
        (ca, server)
    })
}

/// A plain connection to the server at `url`, for tests that read or write keys directly.
pub async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
