//! `callrelay healthcheck`: asks a running callrelay's admin listener whether it is alive
//! (`/healthz`) or ready (`/readyz`, with `--ready`) and exits 0 (yes) or 1 (no), for a
//! container runtime's HEALTHCHECK: the image has no shell and no curl. (Docker reserves exit
//! code 2, so every failure, a configuration that cannot be read included, is 1.)
//!
//! One plain HTTP/1.1 GET over TCP: the admin listener speaks nothing else, and the check
//! should not depend on the HTTP client that talks to Apple and Google.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The admin listener's address (host:port). Default: `server.admin_listen` from the
    /// configuration, with an unspecified address (0.0.0.0, ::) asked on loopback.
    #[arg(long)]
    address: Option<String>,
    /// Ask /readyz (the store answers, no shutdown under way) instead of /healthz.
    #[arg(long)]
    ready: bool,
    /// Give up after this long.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

pub async fn run(args: Args, config: Option<&Path>) -> ExitCode {
    let address = match args.address {
        Some(a) => a,
        None => match crate::config::load(config) {
            Ok(c) => local(c.server.admin_listen).to_string(),
            Err(e) => {
                eprintln!("unhealthy: configuration error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let timeout = Duration::from_millis(args.timeout_ms);
    match tokio::time::timeout(timeout, probe(&address, path)).await {
        Ok(Ok(200)) => {
            println!("healthy: {path} on {address} answered 200");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            eprintln!("unhealthy: {path} on {address} answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("unhealthy: {path} on {address}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "unhealthy: {path} on {address} did not answer within {} ms",
                args.timeout_ms
            );
            ExitCode::FAILURE
        }
    }
}

/// Where to reach a listener bound to `addr` from the same host.
fn local(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// The status code of `GET path`.
async fn probe(address: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // The status line is all that is needed; the admin listener's answers are small.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not HTTP/1.x",
        )
    })
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_line() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n"),
            Some(200)
        );
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"HTTP/1.0 404\r\n"), Some(404));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn unspecified_addresses_are_asked_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        assert_eq!(local(v4), "127.0.0.1:9090".parse().unwrap());
        let v6: SocketAddr = "[::]:9090".parse().unwrap();
        assert_eq!(local(v6), "[::1]:9090".parse().unwrap());
        let given: SocketAddr = "10.1.2.3:9091".parse().unwrap();
        assert_eq!(local(given), given);
    }
}
