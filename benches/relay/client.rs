//! The load generator's HTTP/1.1 client. Requests are serialised once, before a run, and
//! written whole; answers are read just far enough to know their status and body. This is
//! how wrk works: a general-purpose client (hyper's) costs the load generator several times the
//! CPU per request, and on a shared 2-core machine that CPU is taken from the servers being
//! measured. Keep-alive connections are reused; a server that closes them (gunicorn's sync
//! workers do after every answer) gets a new connection for the next request.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procs::Error;

/// A request as bytes on the wire.
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Bytes {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    Bytes::from(bytes)
}

pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

struct Head {
    status: u16,
    length: Option<usize>,
    close: bool,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Result<Head, Error> {
    let text = std::str::from_utf8(head).map_err(|_| "an answer head that is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {status_line:?}"))?;
    let mut parsed = Head {
        status,
        length: None,
        close: status_line.starts_with("HTTP/1.0"),
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            parsed.length = Some(value.parse().map_err(|_| "a bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("connection") {
            parsed.close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked answers are not expected here".into());
        }
    }
    Ok(parsed)
}

/// One connection to a server.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends `request` and reads its answer. A reused connection that the server closed while
    /// idle is replaced and the request sent again, once.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Answer, Error> {
        loop {
            let reused = self.stream.is_some();
            let stream = match &mut self.stream {
                Some(s) => s,
                None => {
                    let s = TcpStream::connect(self.addr).await?;
                    s.set_nodelay(true)?;
                    self.stream.insert(s)
                }
            };
            let answer = match stream.write_all(request).await {
                Ok(()) => read_answer(stream, &mut self.buf).await,
                Err(e) => Err(e.into()),
            };
            match answer {
                Ok(Some((answer, close))) => {
                    if close {
                        self.stream = None;
                    }
                    return Ok(answer);
                }
                Ok(None) if reused => self.stream = None,
                Ok(None) => {
                    self.stream = None;
                    return Err("the server closed the connection without answering".into());
                }
                Err(e) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
    }
}

/// Reads one answer; `None` when the connection closed before its first byte.
async fn read_answer(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<(Answer, bool)>, Error> {
    buf.clear();
    let (head, body_start) = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break (parse_head(&buf[..end])?, end + 4);
        }
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err("the connection closed in the middle of an answer".into())
            };
        }
    };
    let (body_end, close) = match head.length {
        Some(length) => {
            while buf.len() < body_start + length {
                if stream.read_buf(buf).await? == 0 {
                    return Err("the connection closed in the middle of a body".into());
                }
            }
            (body_start + length, head.close)
        }
        // No length: the body runs to the end of the connection.
        None => {
            while stream.read_buf(buf).await? > 0 {}
            (buf.len(), true)
        }
    };
    let answer = Answer {
        status: head.status,
        body: buf[body_start..body_end].to_vec(),
    };
    Ok(Some((answer, close)))
}
