//! Logging: human-readable text by default, one JSON object per line with `log.format = "json"`.
//! `RUST_LOG` overrides the configured level.
//!
//! Lines are formatted on the thread that logs and written to stderr by a thread of their
//! own, in batches: a write per line cost a busy replica a system call and a contended lock
//! for every webhook. When that thread falls behind (a stalled log collector, a full pipe),
//! lines beyond `BUFFERED_LINES` are dropped and counted (`callrelay_log_lines_dropped_total`)
//! rather than making request threads wait: a relay that stops answering Twilio because its
//! logs are slow would turn a logging problem into lost calls. Lines anyone can cause
//! (authentication failures) are rate-limited besides (`throttle`). In JSON, the request's
//! fields (`request_id`, `trace_id`) are members of each line (`json_line`).
//!
//! Traces (`traces`), when configured, are a second layer beside the logs', with a filter of
//! its own.

mod json_line;
mod otlp_client;
pub mod throttle;
pub mod traces;

use std::io::{BufWriter, IsTerminal, Write};
use std::sync::OnceLock;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat, TracesConfig};

/// Lines waiting for the writer thread before new ones are dropped: a few MiB of text, enough
/// for seconds of a busy replica's logs.
pub const BUFFERED_LINES: usize = 16 * 1024;

/// The installed writer's count of dropped lines (none until `init` installs one).
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Lines dropped because the writer thread fell behind, since the process started.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// A writer that hands lines to a thread of their own writing to `sink`, and drops (and
/// counts) lines instead of waiting when `buffered` lines are queued already.
pub fn dropping_writer<W: Write + Send + 'static>(
    sink: W,
    buffered: usize,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(buffered)
        .thread_name("callrelay-log")
        .finish(sink)
}

/// What keeps logging and tracing going; `close` it when the process is done.
pub struct Telemetry {
    log_writer: Option<WorkerGuard>,
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered, then writes the last log lines.
    pub async fn close(self) {
        if let Some(provider) = self.traces {
            traces::shut_down(provider).await;
        }
        drop(self.log_writer);
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Starts logging, and tracing when configured; fails only when the trace exporter cannot be
/// built. A second initialisation (tests, embedding) keeps the first subscriber.
pub fn init(log: &LogConfig, traces_config: &TracesConfig) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = dropping_writer(
        BufWriter::with_capacity(64 * 1024, std::io::stderr()),
        BUFFERED_LINES,
    );
    let dropped = writer.error_counter();
    let logs: BoxedLayer = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(json_line::SpanFieldsOnTop(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            ))
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        // Colours only for a terminal: a log file or collector gets plain text.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![logs];
    let provider = match traces::install::<Registry>(traces_config)? {
        Some((provider, layer)) => {
            layers.push(layer.boxed());
            Some(provider)
        }
        None => None,
    };
    let installed = tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok();
    if installed {
        let _ = DROPPED.set(dropped);
        if provider.is_some() {
            traces::mark_installed();
        }
    }
    Ok(Telemetry {
        log_writer: installed.then_some(guard),
        traces: provider.filter(|_| installed),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A log sink that blocks every write until the test lets it go, as a stalled collector
    /// or a full pipe does.
    struct BlockedSink {
        gate: mpsc::Receiver<()>,
        written: mpsc::Sender<Vec<u8>>,
    }

    impl Write for BlockedSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.gate.recv();
            let _ = self.written.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_that_falls_behind_drops_and_counts_instead_of_blocking() {
        const BUFFERED: usize = 8;
        const LINES: usize = 200;
        let (open_gate, gate) = mpsc::channel();
        let (written, lines_out) = mpsc::channel();
        let (writer, guard) = dropping_writer(BlockedSink { gate, written }, BUFFERED);
        let dropped = writer.error_counter();

        // The logging side runs on a thread of its own, so that a blocking write would show as
        // a missed (bounded) wait here instead of a hung test.
        let (done, finished) = mpsc::channel();
        let mut logger = writer.clone();
        std::thread::spawn(move || {
            for i in 0..LINES {
                logger.write_all(format!("line {i}\n").as_bytes()).unwrap();
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("logging never waits for a stalled sink");
        // At most the queue and the one line in the sink's hands got through.
        assert!(
            dropped.dropped_lines() >= LINES - BUFFERED - 1,
            "{} dropped",
            dropped.dropped_lines()
        );

        // Once the sink moves again, everything kept is written: kept + dropped = logged.
        for _ in 0..LINES {
            let _ = open_gate.send(());
        }
        drop(writer);
        drop(guard);
        let kept = lines_out.try_iter().count();
        assert!(kept >= 1, "the queued lines were written");
        assert_eq!(kept + dropped.dropped_lines(), LINES);
    }
}
