//! The HTTP client the OTLP exporter sends spans with: callrelay's own reqwest client (rustls
//! on ring, the system's roots), run on callrelay's runtime.
//!
//! The SDK's batch processor exports from a thread of its own, outside any Tokio runtime,
//! where reqwest's async client cannot run (it would panic on the first export: "there is no
//! reactor running"). The usual way out is reqwest's blocking client, which brings a runtime
//! of its own; instead each export is spawned onto the process's runtime and the processor's
//! thread waits for its result.

use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use tokio::runtime::Handle;

/// An OTLP collector answers in a few bytes; more than this is not a collector's answer.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Debug)]
pub struct RuntimeClient {
    client: reqwest::Client,
    runtime: Handle,
}

impl RuntimeClient {
    /// A client on the current runtime; each export gives up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let client = crate::channels::push_client::plain_client(timeout)
            .map_err(|e| format!("traces: {e}"))?;
        let runtime = Handle::try_current()
            .map_err(|_| "traces need callrelay's runtime to be running".to_owned())?;
        Ok(Self { client, runtime })
    }
}

#[async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let sent = self.runtime.spawn(async move {
            let mut answer = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(crate::channels::push_client::describe)?;
            let mut body = Vec::new();
            while let Some(chunk) = answer
                .chunk()
                .await
                .map_err(crate::channels::push_client::describe)?
            {
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Err(format!("the collector's answer is over {MAX_ANSWER} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            let mut response = Response::new(Bytes::from(body));
            *response.status_mut() = answer.status();
            *response.headers_mut() = std::mem::take(answer.headers_mut());
            Ok(response)
        });
        match sent.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(why)) => Err(why.into()),
            Err(e) => Err(format!("the export task ended: {e}").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The processor's thread is not a runtime thread: an export made from a plain thread, as
    /// the SDK makes them, reaches the server and brings back its answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_export_from_a_thread_outside_the_runtime_is_sent_on_the_runtime() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("spans!") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                seen.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-seen: yes\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        });
        let client = RuntimeClient::new(Duration::from_secs(5)).unwrap();
        let answer = std::thread::spawn(move || {
            let request = Request::builder()
                .method("POST")
                .uri(url)
                .header("content-type", "application/x-protobuf")
                .body(Bytes::from_static(b"spans!"))
                .unwrap();
            futures_executor_block_on(client.send_bytes(request))
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["x-seen"], "yes");
        assert_eq!(answer.body().as_ref(), b"ok");
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /v1/traces HTTP/1.1"), "{request}");
        assert!(request.contains("content-type: application/x-protobuf"));
    }

    /// Polls a future to completion on this thread, as the SDK's processor does.
    fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let waker = std::task::Waker::from(std::sync::Arc::new(Wake(std::sync::Mutex::new(tx))));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    struct Wake(std::sync::Mutex<std::sync::mpsc::Sender<()>>);

    impl std::task::Wake for Wake {
        fn wake(self: std::sync::Arc<Self>) {
            let _ = self.0.lock().unwrap().send(());
        }
    }
}
