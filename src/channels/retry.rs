//! Retrying transient push failures inside the webhook deadline.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::time::Instant;

/// Short exponential backoff (25 ms, 50 ms, … at most 1 s) that never sleeps past the deadline.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    deadline: Instant,
}

/// Time kept back for the retried request itself: no point sleeping until the deadline.
const MIN_REQUEST_TIME: Duration = Duration::from_millis(50);

impl Backoff {
    pub fn new(deadline: Instant) -> Self {
        Self {
            attempt: 0,
            deadline,
        }
    }

    /// How long to wait before the next attempt, or `None` when there is no time left for one.
    /// A server's `Retry-After` wins over the schedule.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let scheduled =
            Duration::from_millis(25u64 << self.attempt.min(6)).min(Duration::from_secs(1));
        self.attempt += 1;
        let delay = retry_after.unwrap_or(scheduled);
        // `Retry-After` comes from the server: an absurd value must not overflow the clock.
        let ready_at = Instant::now()
            .checked_add(delay)
            .and_then(|t| t.checked_add(MIN_REQUEST_TIME))?;
        (ready_at < self.deadline).then_some(delay)
    }
}

/// `Retry-After` in seconds (the form Google's and Apple's services send).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn grows_then_stops_before_the_deadline() {
        let mut b = Backoff::new(Instant::now() + Duration::from_millis(300));
        assert_eq!(b.next_delay(None), Some(Duration::from_millis(25)));
        assert_eq!(b.next_delay(None), Some(Duration::from_millis(50)));
        assert_eq!(b.next_delay(None), Some(Duration::from_millis(100)));
        assert_eq!(b.next_delay(None), Some(Duration::from_millis(200)));
        // 400 ms (+ time for the request) would end past the deadline.
        assert_eq!(b.next_delay(None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_unless_it_passes_the_deadline() {
        let mut b = Backoff::new(Instant::now() + Duration::from_secs(5));
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(b.next_delay(Some(Duration::from_secs(10))), None);
        assert_eq!(b.next_delay(Some(Duration::from_secs(u64::MAX))), None);
    }

    #[test]
    fn parses_retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
