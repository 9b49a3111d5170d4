//! Retrying transient push failures inside the webhook deadline.
//!
//! Every delay is jittered: when Apple or Google answer a burst of pushes with `503` (or
//! `429` with `Retry-After`), the retries of all of them would otherwise arrive again in the
//! same millisecond, and again after that.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::time::Instant;

/// Equal jitter for schedules of their own (event forwarding): half of `delay` for sure, the
/// other half at random, so that what failed together is not retried in lockstep.
pub fn equal_jitter(delay: Duration) -> Duration {
    let half = delay / 2;
    let micros = half.as_micros() as u64;
    let random = RandomState::new().hash_one(());
    half + Duration::from_micros(if micros == 0 {
        0
    } else {
        random % (micros + 1)
    })
}

/// Short exponential backoff (about 25 ms, 50 ms, … at most 1 s, each between half and all of
/// that, at random) that never sleeps past the deadline.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    deadline: Instant,
    /// The state of a small generator (xorshift), seeded per backoff: spreading retries needs
    /// no cryptographic randomness, and a retry must not wait on the OS for it.
    rng: u64,
}

/// Time kept back for the retried request itself: no point sleeping until the deadline.
const MIN_REQUEST_TIME: Duration = Duration::from_millis(50);

/// At most this much is added to a server's `Retry-After` (and at most a tenth of it).
const RETRY_AFTER_SPREAD: Duration = Duration::from_secs(1);

impl Backoff {
    pub fn new(deadline: Instant) -> Self {
        // Each `RandomState` has keys of its own (random per process, then counting), so a
        // hash of nothing differs from one backoff to the next.
        let seed = RandomState::new().hash_one(());
        Self {
            attempt: 0,
            deadline,
            rng: seed | 1,
        }
    }

    /// How long to wait before the next attempt, or `None` when there is no time left for one.
    /// A server's `Retry-After` wins over the schedule; a little is added to it, never taken
    /// away.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let scheduled =
            Duration::from_millis(25u64 << self.attempt.min(6)).min(Duration::from_secs(1));
        self.attempt += 1;
        let delay = match retry_after {
            // Equal jitter: half the step for sure, the other half at random.
            None => scheduled / 2 + self.up_to(scheduled / 2),
            Some(after) => {
                let spread = (after / 10).min(RETRY_AFTER_SPREAD);
                after.checked_add(self.up_to(spread))?
            }
        };
        // `Retry-After` comes from the server: an absurd value must not overflow the clock.
        let ready_at = Instant::now()
            .checked_add(delay)
            .and_then(|t| t.checked_add(MIN_REQUEST_TIME))?;
        (ready_at < self.deadline).then_some(delay)
    }

    /// A duration between zero and `max`, at random (microsecond steps).
    fn up_to(&mut self, max: Duration) -> Duration {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let micros = max.as_micros() as u64;
        Duration::from_micros(if micros == 0 { 0 } else { x % (micros + 1) })
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

    fn within(delay: Option<Duration>, low_ms: u64, high_ms: u64) -> bool {
        delay.is_some_and(|d| {
            d >= Duration::from_millis(low_ms) && d <= Duration::from_millis(high_ms)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn grows_then_stops_before_the_deadline() {
        let mut b = Backoff::new(Instant::now() + Duration::from_millis(300));
        let first = b.next_delay(None);
        assert!(within(first, 12, 25), "{first:?}");
        let second = b.next_delay(None);
        assert!(within(second, 25, 50), "{second:?}");
        let third = b.next_delay(None);
        assert!(within(third, 50, 100), "{third:?}");
        tokio::time::advance(first.unwrap() + second.unwrap() + third.unwrap()).await;
        // The fourth step (100-200 ms, + time for the request) ends past the deadline or
        // close to it; the fifth (200-400 ms) always does.
        let _ = b.next_delay(None);
        assert_eq!(b.next_delay(None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_and_is_only_ever_lengthened() {
        let mut b = Backoff::new(Instant::now() + Duration::from_secs(5));
        let d = b.next_delay(Some(Duration::from_secs(2))).unwrap();
        assert!(
            d >= Duration::from_secs(2) && d <= Duration::from_millis(2200),
            "{d:?}"
        );
        assert_eq!(b.next_delay(Some(Duration::from_secs(10))), None);
        assert_eq!(b.next_delay(Some(Duration::from_secs(u64::MAX))), None);
    }

    /// A burst of failures at one moment: their retries do not come back together.
    #[tokio::test(start_paused = true)]
    async fn retries_of_a_burst_are_spread_out() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut scheduled = std::collections::BTreeSet::new();
        let mut after_retry_after = std::collections::BTreeSet::new();
        for _ in 0..100 {
            scheduled.insert(Backoff::new(deadline).next_delay(None).unwrap());
            let d = Backoff::new(deadline)
                .next_delay(Some(Duration::from_secs(1)))
                .unwrap();
            after_retry_after.insert(d);
        }
        assert!(scheduled.len() >= 50, "{} distinct delays", scheduled.len());
        assert!(
            after_retry_after.len() >= 50,
            "{} distinct delays",
            after_retry_after.len()
        );
        assert!(scheduled.iter().all(|d| within(Some(*d), 12, 25)));
        assert!(
            after_retry_after
                .iter()
                .all(|d| within(Some(*d), 1000, 1100))
        );
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
