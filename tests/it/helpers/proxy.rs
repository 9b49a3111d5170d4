//! A loopback TCP proxy that a test can freeze: connections open at the moment of the freeze
//! stall for good (nothing more is forwarded either way, and nothing is closed, as when a host
//! vanishes without a reset or a middlebox drops a flow), while connections made afterwards go
//! through. It models the failures that TCP alone takes minutes to notice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct FreezableProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    /// Connections accepted so far; each is numbered in order.
    accepted: AtomicUsize,
    /// Connections numbered below this are frozen.
    frozen_below: AtomicU64,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

impl FreezableProxy {
    /// Forwards connections made to `addr` (127.0.0.1, a free port) to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = shared.accepted.fetch_add(1, Ordering::SeqCst) as u64;
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = tokio::spawn(pump(client_read, server_write, shared.clone(), number));
                let down = tokio::spawn(pump(server_read, client_write, shared.clone(), number));
                shared.pumps.lock().unwrap().extend([up, down]);
            }
        });
        Self { addr, state, task }
    }

    /// Stalls every connection open now; later ones are not affected.
    pub fn freeze(&self) {
        let open = self.state.accepted.load(Ordering::SeqCst) as u64;
        self.state.frozen_below.store(open, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
        for pump in self.state.pumps.lock().unwrap().drain(..) {
            pump.abort();
        }
    }
}

/// Copies one direction of a connection until it closes, or until it is frozen: then it holds
/// both sockets open and forwards nothing, for as long as the proxy lives.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
    number: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if number < state.frozen_below.load(Ordering::SeqCst) {
            let _keep_open = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
