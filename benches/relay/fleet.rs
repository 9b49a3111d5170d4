//! A fleet of real WebSocket clients (tokio-tungstenite), each authenticated with its own
//! Twilio Access Token, that timestamps every notification it receives. Connections are spread
//! over several loopback source addresses so that large fleets do not run out of ports. A
//! fleet may name each client's device and open its sockets with `ack=1`, its clients then
//! acknowledging every notification or none (`Manner`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use callrelay::auth::access_token;
use callrelay::config::Secret;
use callrelay::domain::{AccountSid, ApiKeySid, Identity};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::procs::{ACCOUNT, API_KEY, API_SECRET, Error};
use crate::webhooks::{message_id, parse_message_id};

/// A notification as one client received it.
pub struct Frame {
    pub run: u32,
    pub index: u64,
    pub at: Instant,
}

/// What a fleet's clients say to callrelay about the notifications they receive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Acks {
    /// Sockets opened without `ack=1`: the clients only read.
    #[default]
    Off,
    /// Sockets opened with `ack=1`; each notification acknowledged as soon as it is read.
    Every,
    /// Sockets opened with `ack=1`, and nothing said: a client that never gets to acknowledge.
    Silent,
}

/// How a fleet's clients open their sockets; the default is a plain client.
#[derive(Clone, Copy, Debug, Default)]
pub struct Manner {
    /// Each socket names its device as `<identity><suffix>` (`device_id=`), so that a push
    /// binding naming the same device makes the two one phone.
    pub device_suffix: Option<&'static str>,
    pub acks: Acks,
}

impl Manner {
    /// The query string of the upgrade for `identity` (empty, or `?` and parameters).
    fn query(self, identity: &str) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(suffix) = self.device_suffix {
            query.append_pair("device_id", &format!("{identity}{suffix}"));
        }
        if self.acks != Acks::Off {
            query.append_pair("ack", "1");
        }
        let query = query.finish();
        if query.is_empty() {
            query
        } else {
            format!("?{query}")
        }
    }
}

pub struct Fleet {
    frames: mpsc::UnboundedReceiver<Frame>,
    /// Sockets that ended while they should have stayed open.
    dropped: Arc<AtomicU64>,
    unreadable: Arc<AtomicU64>,
    stop: CancellationToken,
    clients: JoinSet<()>,
    pub size: usize,
}

/// What every client of a fleet shares: where frames go, what went wrong, when to stop.
#[derive(Clone)]
struct Shared {
    frames: mpsc::UnboundedSender<Frame>,
    dropped: Arc<AtomicU64>,
    unreadable: Arc<AtomicU64>,
    stop: CancellationToken,
    acks: Acks,
}

/// An Access Token for `identity`, as the app's backend would mint it.
pub fn token(identity: &str) -> String {
    access_token::mint(
        &AccountSid::parse(ACCOUNT).expect("a valid account"),
        &ApiKeySid::parse(API_KEY).expect("a valid API key"),
        &Secret::new(API_SECRET),
        &Identity::parse(identity).expect("a valid identity"),
        Duration::from_secs(3600),
    )
}

fn source(i: usize, sources: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + (i % sources as usize) as u8)
}

impl Fleet {
    /// Connects one plain client per identity to `server`, `parallel` handshakes at a time.
    pub async fn connect(
        server: SocketAddr,
        identities: &[String],
        sources: u8,
        parallel: usize,
    ) -> Result<Self, Error> {
        Self::connect_as(server, identities, sources, parallel, Manner::default()).await
    }

    /// Connects one client per identity, opening its socket and answering as `manner` says.
    pub async fn connect_as(
        server: SocketAddr,
        identities: &[String],
        sources: u8,
        parallel: usize,
        manner: Manner,
    ) -> Result<Self, Error> {
        let (tx, frames) = mpsc::unbounded_channel();
        let shared = Shared {
            frames: tx,
            dropped: Arc::new(AtomicU64::new(0)),
            unreadable: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
            acks: manner.acks,
        };
        let mut handshakes = JoinSet::new();
        let gate = Arc::new(Semaphore::new(parallel));
        for (i, identity) in identities.iter().enumerate() {
            let permit = gate.clone().acquire_owned().await?;
            let local = SocketAddr::V4(SocketAddrV4::new(source(i, sources), 0));
            let (token, query) = (token(identity), manner.query(identity));
            handshakes.spawn(async move {
                let _permit = permit;
                open(server, local, &token, &query).await
            });
        }
        let mut clients = JoinSet::new();
        while let Some(joined) = handshakes.join_next().await {
            clients.spawn(client(joined??, shared.clone()));
        }
        Ok(Self {
            frames,
            dropped: shared.dropped,
            unreadable: shared.unreadable,
            stop: shared.stop,
            clients,
            size: identities.len(),
        })
    }

    /// Waits until `expected` frames of `run` have arrived or `patience` has passed.
    pub async fn collect(&mut self, run: u32, expected: usize, patience: Duration) -> Vec<Frame> {
        let until = tokio::time::Instant::now() + patience;
        let mut out = Vec::with_capacity(expected);
        while out.len() < expected {
            match tokio::time::timeout_at(until, self.frames.recv()).await {
                Ok(Some(f)) if f.run == run => out.push(f),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        out
    }

    /// Fails when a client lost its socket or received something that is not a notification.
    pub fn check(&self) -> Result<(), Error> {
        let (dropped, unreadable) = (
            self.dropped.load(Ordering::Relaxed),
            self.unreadable.load(Ordering::Relaxed),
        );
        if dropped + unreadable > 0 {
            return Err(format!(
                "{dropped} of {} sockets closed early, {unreadable} unreadable frames",
                self.size
            )
            .into());
        }
        Ok(())
    }

    /// Closes every socket and waits for the clients to finish.
    pub async fn close(mut self) {
        self.stop.cancel();
        while self.clients.join_next().await.is_some() {}
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One client: reads until the fleet stops or the socket ends, timestamping each
/// notification (and acknowledging it, when the fleet's clients do).
async fn client(mut socket: Socket, shared: Shared) {
    // Not split: a client mostly reads (tungstenite answers pings by itself), and a split
    // stream takes a lock for every frame.
    let stopped = shared.stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let message = tokio::select! {
            _ = &mut stopped => {
                let _ = socket.close(None).await;
                return;
            }
            m = socket.next() => m,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let at = Instant::now();
                let Some((run, index)) = parse_message_id(text.as_bytes()) else {
                    shared.unreadable.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let _ = shared.frames.send(Frame { run, index, at });
                if shared.acks == Acks::Every && socket.send(ack(run, index)).await.is_err() {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            // tungstenite queues the pong and sends it on the next read.
            Some(Ok(Message::Ping(_))) => {
                let _ = socket.flush().await;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The acknowledgement of a notification, as a client that opened its socket with `ack=1`
/// sends it; the message id is the one the frame carried (`webhooks::message_id`).
fn ack(run: u32, index: u64) -> Message {
    Message::text(format!(
        r#"{{"type":"ack","twi_message_id":"{}"}}"#,
        message_id(run, index)
    ))
}

/// Opens a socket from `local`; `query` is the upgrade's query string (`Manner::query`).
async fn open(
    server: SocketAddr,
    local: SocketAddr,
    token: &str,
    query: &str,
) -> Result<Socket, Error> {
    let tcp = TcpSocket::new_v4()?;
    tcp.bind(local)?;
    let stream = tcp.connect(server).await?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{server}/v1/ws{query}").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    // tungstenite zero-fills its whole read buffer on every read: the default 128 KiB would
    // make the clients, not callrelay, the bottleneck.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (socket, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    if response.status() != 101 {
        return Err(format!("upgrade answered {}", response.status()).into());
    }
    Ok(socket)
}
