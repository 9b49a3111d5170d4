//! Logging: human-readable text by default, one JSON object per line with `log.format = "json"`.
//! `RUST_LOG` overrides the configured level.
//!
//! Lines are formatted on the thread that logs and written to stderr by a thread of their
//! own, in batches: a write per line cost a busy replica a system call and a contended lock
//! for every webhook. Nothing is dropped: a writer that falls behind slows the loggers down,
//! as a direct write would.

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Starts logging; keep the guard until the process ends, so the last lines are written.
pub fn init(config: &LogConfig) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("callrelay-log")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    // Colours only for a terminal: a log file or collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    // A second initialisation (tests, embedding) keeps the first subscriber.
    let installed = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.is_ok().then_some(guard)
}
