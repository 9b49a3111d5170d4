//! Rate limits for the log lines that anyone on the internet can cause: every refused
//! webhook, bearer credential or WebSocket token would otherwise write a line, and an attacker
//! sending thousands a second would fill the disk and drown the lines that matter.
//!
//! One token bucket per reason for the whole process (`BURST` lines at once, then `PER_SECOND`):
//! an operator still sees every kind of failure within a second, with how many like it were
//! left out (`suppressed` on the next line that gets through), and
//! `callrelay_log_lines_suppressed_total{reason}` counts them all.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Lines one reason may log at once after a quiet spell.
pub const BURST: f64 = 10.0;
/// Lines per second one reason may log when failures keep coming.
pub const PER_SECOND: f64 = 2.0;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Lines left out since the last one written.
    suppressed: u64,
}

pub struct LogThrottle {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<&'static str, Bucket>>,
    suppressed: Family<ReasonLabels, Counter>,
}

impl LogThrottle {
    pub fn new(burst: f64, per_second: f64) -> Self {
        Self {
            burst,
            per_second,
            buckets: Mutex::new(HashMap::new()),
            suppressed: Family::default(),
        }
    }

    /// Whether a line for `reason` may be written now: `Some(n)` with the number of lines left
    /// out since the last one, or `None` (counted as suppressed). Reasons are a fixed set of
    /// names, so the map stays small. Ask only for lines the log level lets through, or the
    /// count would include lines nobody asked for.
    pub fn admit(&self, reason: &'static str) -> Option<u64> {
        self.admit_at(reason, Instant::now())
    }

    fn admit_at(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(reason).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
            suppressed: 0,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.suppressed))
        } else {
            bucket.suppressed += 1;
            drop(buckets);
            self.suppressed
                .get_or_create(&ReasonLabels { reason })
                .inc();
            None
        }
    }

    /// Lines left out, by reason: registered with every `Metrics`.
    pub fn suppressed(&self) -> &Family<ReasonLabels, Counter> {
        &self.suppressed
    }
}

/// The process's throttle for authentication failures (webhooks, bearer credentials,
/// WebSocket tokens).
pub fn auth_failures() -> &'static LogThrottle {
    static THROTTLE: LazyLock<LogThrottle> = LazyLock::new(|| LogThrottle::new(BURST, PER_SECOND));
    &THROTTLE
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_a_steady_rate_per_reason() {
        let throttle = LogThrottle::new(3.0, 2.0);
        let start = Instant::now();
        let admitted = (0..100)
            .filter(|_| throttle.admit_at("a", start).is_some())
            .count();
        assert_eq!(admitted, 3);
        // Another reason has a bucket of its own.
        assert_eq!(throttle.admit_at("b", start), Some(0));
        // Half a second later one more line, which says how many were left out meanwhile.
        let later = start + Duration::from_millis(500);
        assert_eq!(throttle.admit_at("a", later), Some(97));
        assert_eq!(throttle.admit_at("a", later), None);
        assert_eq!(
            throttle
                .suppressed()
                .get_or_create(&ReasonLabels { reason: "a" })
                .get(),
            98
        );
        // A long quiet spell refills the burst, no more.
        let much_later = later + Duration::from_secs(3600);
        let admitted = (0..100)
            .filter(|_| throttle.admit_at("a", much_later).is_some())
            .count();
        assert_eq!(admitted, 3);
    }
}
