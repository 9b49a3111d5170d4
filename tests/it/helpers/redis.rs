//! A private `redis-server` for the tests, on a free port. Never the machine's shared one.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
    password: Option<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts a server that keeps its data in an append-only file, so a restart on the same
    /// port keeps what was written.
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    /// A server that requires `AUTH` with this password.
    pub fn start_with_password(password: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(format!("callrelay-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port: free_port(),
            child: None,
            dir,
            password: password.map(str::to_owned),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        // The wrapper stops redis-server when the test process goes away, even if it is
        // killed before any destructor runs. It records redis-server's pid so that `kill`,
        // `pause` and `resume` can signal the server itself.
        let script = format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
             --dir {dir} --logfile redis.log {auth} & r=$!; echo $r > {dir}/redis-server.pid; \
             trap 'kill $r 2>/dev/null; exit 0' TERM INT; \
             while kill -0 {parent} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.2; done; \
             kill $r 2>/dev/null; wait $r",
            port = self.port,
            dir = self.dir.display(),
            auth = self
                .password
                .as_ref()
                .map(|p| format!("--requirepass {p}"))
                .unwrap_or_default(),
            parent = std::process::id(),
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
                "redis-server did not start on port {} (is redis-server installed?)",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
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
