//! The connection the store's commands run on, kept healthy. redis-rs reconnects by itself
//! when a connection closes; three things it cannot see are handled here:
//!
//! - **A connection that stalls without closing** (a host gone without a reset, a frozen
//!   middlebox): its commands time out one after another while the socket looks open. After
//!   [`TIMEOUTS_BEFORE_REBUILD`] timeouts in a row with no answer in between, the connection
//!   is replaced by a new one (and a half-dead one is left to the kernel's keepalive).
//! - **A master that moved** (Sentinel): Sentinel's `+switch-master` announcement
//!   (`switches.rs`), the master's connection closing, or errors that a failover causes
//!   (refused or dropped connections, `READONLY` from a demoted master) make the link ask
//!   Sentinel again and connect to whichever master it names.
//! - **Pipelines across cluster slots**: split per slot (`slots.rs`).
//!
//! Replacements are rate-limited to one per command timeout, so an outage does not churn
//! connections; commands issued meanwhile fail fast and the callers answer `503`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, try_join_all};
use redis::aio::ConnectionLike;
use redis::{
    Cmd, ErrorKind, Pipeline, PushInfo, PushKind, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
};

use super::connect::{Conn, Dialer, PushSink};
use super::slots;

/// Timeouts in a row, with no answer in between, that condemn a connection.
pub const TIMEOUTS_BEFORE_REBUILD: u32 = 3;

/// A handle on the current connection; clones share it.
#[derive(Clone)]
pub struct Link(Arc<Inner>);

struct Inner {
    dialer: Arc<Dialer>,
    /// What the connection is for, in logs.
    purpose: &'static str,
    current: RwLock<Option<Conn>>,
    timeouts_in_a_row: AtomicU32,
    rebuild: Mutex<RebuildState>,
    /// The least time between two replacements.
    pace: Duration,
}

#[derive(Default)]
struct RebuildState {
    running: bool,
    /// Replace once more when the running replacement ends.
    again: bool,
    last: Option<Instant>,
}

/// A link that may have been dropped.
pub struct WeakLink(std::sync::Weak<Inner>);

impl WeakLink {
    pub fn upgrade(&self) -> Option<Link> {
        self.0.upgrade().map(Link)
    }
}

impl Link {
    /// A link with its first connection (lazy: nothing is sent yet). Under Sentinel the
    /// master is looked up now; if that fails, the first commands fail and look again.
    pub async fn open(dialer: Arc<Dialer>, purpose: &'static str, pace: Duration) -> Self {
        let link = Self(Arc::new(Inner {
            dialer,
            purpose,
            current: RwLock::new(None),
            timeouts_in_a_row: AtomicU32::new(0),
            rebuild: Mutex::new(RebuildState::default()),
            pace,
        }));
        match link.dial().await {
            Ok(conn) => *link.0.current.write().unwrap_or_else(|e| e.into_inner()) = Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, purpose, "no Redis connection yet; retrying on use");
            }
        }
        link
    }

    /// A new connection. Under Sentinel, a connection to the master that closes (Sentinel
    /// closes the old master's clients when it demotes it) makes the link ask Sentinel again
    /// rather than reconnect to the same address, which may now be a replica.
    async fn dial(&self) -> Result<Conn, crate::store::StoreError> {
        if !self.0.dialer.follows_master() {
            return self.0.dialer.dial(None).await;
        }
        let link = Arc::downgrade(&self.0);
        let watch: PushSink = Arc::new(move |push: PushInfo| {
            if push.kind == PushKind::Disconnection
                && let Some(inner) = link.upgrade()
            {
                Link(inner).rebuild("the connection to the master closed");
            }
            Ok::<(), redis::aio::SendError>(())
        });
        self.0.dialer.dial(Some(watch)).await
    }

    pub fn is_cluster(&self) -> bool {
        self.0.dialer.is_cluster()
    }

    fn current(&self) -> Option<Conn> {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A call on this link got no answer in time.
    pub fn timed_out(&self) {
        let n = self.0.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= TIMEOUTS_BEFORE_REBUILD {
            self.rebuild("consecutive commands got no answer");
        }
    }

    /// A call on this link was answered (an error reply counts: the server is there).
    pub fn answered(&self) {
        self.0.timeouts_in_a_row.store(0, Ordering::Relaxed);
    }

    fn observe<T>(&self, result: &RedisResult<T>) {
        if let Err(e) = result
            && self.0.dialer.follows_master()
            && master_may_have_moved(e)
        {
            self.rebuild("the master may have moved");
        }
    }

    /// Replaces the connection in the background, unless a replacement is running or the
    /// last one is too recent.
    fn rebuild(&self, why: &'static str) {
        self.replace(why, false);
    }

    /// Sentinel announced a new master: replace the connection now, whatever the pace, and
    /// once more after a replacement that is running (it may have found the old master).
    pub fn master_switched(&self) {
        self.replace("Sentinel announced a new master", true);
    }

    fn replace(&self, why: &'static str, urgent: bool) {
        {
            let mut state = self.0.rebuild.lock().unwrap_or_else(|e| e.into_inner());
            if state.running {
                state.again |= urgent;
                return;
            }
            if !urgent && state.last.is_some_and(|t| t.elapsed() < self.0.pace) {
                return;
            }
            state.running = true;
            state.last = Some(Instant::now());
        }
        let link = self.clone();
        tokio::spawn(async move {
            let inner = &link.0;
            loop {
                match link.dial().await {
                    Ok(conn) => {
                        let to = match &conn {
                            Conn::Single { addr, .. } => addr.clone(),
                            Conn::Cluster(_) => "the cluster".to_owned(),
                        };
                        *inner.current.write().unwrap_or_else(|e| e.into_inner()) = Some(conn);
                        inner.timeouts_in_a_row.store(0, Ordering::Relaxed);
                        tracing::warn!(
                            purpose = inner.purpose,
                            why,
                            to,
                            "replaced the Redis connection"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(purpose = inner.purpose, why, error = %e, "could not replace the Redis connection yet");
                    }
                }
                let mut state = inner.rebuild.lock().unwrap_or_else(|e| e.into_inner());
                if !std::mem::take(&mut state.again) {
                    state.running = false;
                    break;
                }
            }
        });
    }

    /// A handle that does not keep the link alive.
    pub fn downgrade(&self) -> WeakLink {
        WeakLink(Arc::downgrade(&self.0))
    }

    fn not_connected(&self) -> RedisError {
        self.rebuild("no connection yet");
        RedisError::from((ErrorKind::Io, "no Redis connection yet"))
    }

    /// One page of `SCAN` on every master (`scan.rs`), from `cursors` (one per master, in
    /// the order of the first page's answer; empty for the first page).
    pub async fn scan_masters(
        &self,
        pattern: &str,
        cursors: &mut Vec<(Option<(String, u16)>, u64)>,
    ) -> RedisResult<Vec<String>> {
        let Some(mut conn) = self.current() else {
            return Err(self.not_connected());
        };
        let result = conn.scan_masters(pattern, cursors).await;
        self.observe(&result);
        result
    }

    /// Sends `cmd` to the node holding `key` (on a cluster: the master of its slot).
    pub async fn send_near(&self, key: &str, cmd: Cmd) -> RedisResult<Value> {
        let Some(mut conn) = self.current() else {
            return Err(self.not_connected());
        };
        let result = conn.send_near(key, cmd).await;
        self.observe(&result);
        result
    }
}

/// Errors a Sentinel failover causes on the old master's connection.
fn master_may_have_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            let result = match self.current() {
                Some(Conn::Single { mut conn, .. }) => conn.req_packed_command(cmd).await,
                Some(Conn::Cluster(mut conn)) => conn.req_packed_command(cmd).await,
                None => Err(self.not_connected()),
            };
            self.observe(&result);
            result
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            let result = match self.current() {
                Some(Conn::Single { mut conn, .. }) => {
                    conn.req_packed_commands(pipeline, offset, count).await
                }
                Some(Conn::Cluster(conn)) => match slots::split(pipeline) {
                    None => {
                        let mut conn = conn;
                        conn.req_packed_commands(pipeline, offset, count).await
                    }
                    Some(parts) => split_pipeline(conn, parts, pipeline.len()).await,
                },
                None => Err(self.not_connected()),
            };
            self.observe(&result);
            result
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Sends each part to its own slot's node at once; the answers come back in the order of
/// the original pipeline.
fn split_pipeline(
    conn: redis::cluster_async::ClusterConnection,
    parts: Vec<slots::Part>,
    len: usize,
) -> BoxFuture<'static, RedisResult<Vec<Value>>> {
    async move {
        let sends = parts.into_iter().map(|part| {
            let mut conn = conn.clone();
            async move {
                let n = part.pipeline.len();
                let values = conn.req_packed_commands(&part.pipeline, 0, n).await?;
                Ok::<_, RedisError>((part.positions, values))
            }
        });
        let mut answers = vec![Value::Nil; len];
        for (positions, values) in try_join_all(sends).await? {
            for (position, value) in positions.into_iter().zip(values) {
                answers[position] = value;
            }
        }
        Ok(answers)
    }
    .boxed()
}
