//! Appends to capped, expiring lists (an identity's calls, its notifications kept for replay),
//! in as few commands as their guarantees allow.
//!
//! Written plainly, one append is three commands: `RPUSH`, `LTRIM` to the cap and `PEXPIRE`
//! to the lifetime. The last two rarely change anything, yet each costs Redis about what a
//! `GET` does, and the writer sends them for every call notification. So:
//!
//! - **Trimmed with slack.** `RPUSH` answers the list's length; a list longer than its cap
//!   plus its slack (`cap / 8 + 1`) is trimmed back to its cap, in a second round trip.
//!   Readers read the last `cap` entries (`LRANGE -cap -1`), so nobody sees the slack; a list
//!   holds its cap plus its slack plus what one batch appends before the trim.
//! - **The expiry refreshed an eighth of the lifetime ahead.** Each replica sets a list's
//!   expiry to the lifetime plus an eighth, and sets it again only once an eighth of the
//!   lifetime has passed since it last did. Every entry then lives at least the lifetime:
//!   the expiry that covers it was set at most an eighth of the lifetime before it was
//!   appended. Expiries only move later, whichever replica sets them, and readers judge each
//!   entry by its own time. `RPUSH` answering 1 where this pipeline set no expiry means the
//!   list was deleted or evicted since; it gets its expiry in the second round trip. (Were
//!   the replica killed between the two, the list would keep no expiry until the next
//!   append after its restart: still capped.)

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

/// Lists whose expiry this replica set, and when. Forgotten at this size (the cost of
/// forgetting is one `PEXPIRE` per list on its next append); about 3 MiB when full.
const MAX_REMEMBERED: usize = 100_000;

/// One value to append.
pub struct Append<'a> {
    pub key: String,
    pub value: &'a [u8],
    /// The most entries readers are given.
    pub cap: usize,
    /// How long each entry lives at least.
    pub lifetime: Duration,
}

/// The entries a list may hold beyond its cap before it is trimmed.
pub fn slack(cap: usize) -> usize {
    cap / 8 + 1
}

fn expiry(lifetime: Duration) -> Duration {
    lifetime + lifetime / 8
}

/// When this replica last set each list's expiry, by a 64-bit hash of the list's key (two
/// keys sharing one would, once in 2^64, have one list's expiry set later than due).
#[derive(Default)]
pub struct Refreshes {
    last: HashMap<u64, Instant>,
    hasher: RandomState,
}

impl Refreshes {
    /// Whether `key`'s expiry is to be set now; if so, it is remembered as set.
    fn due(&mut self, key: &str, lifetime: Duration, now: Instant) -> bool {
        let id = self.hasher.hash_one(key);
        if let Some(at) = self.last.get_mut(&id) {
            if now.saturating_duration_since(*at) < lifetime / 8 {
                return false;
            }
            *at = now;
            return true;
        }
        if self.last.len() >= MAX_REMEMBERED {
            self.last.clear();
        }
        self.last.insert(id, now);
        true
    }

    /// After a pipeline whose outcome is unknown: any expiry it carried may not be set.
    pub fn forget<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>) {
        for key in keys {
            self.last.remove(&self.hasher.hash_one(key));
        }
    }
}

/// What became of one append's `RPUSH`, for the second round trip.
pub struct Planned {
    key: String,
    cap: usize,
    lifetime: Duration,
    expiry_sent: bool,
}

/// Adds `RPUSH` for each append to `pipe` (its answer kept, in order), and `PEXPIRE` (answer
/// ignored) where due.
pub fn add(
    pipe: &mut redis::Pipeline,
    appends: Vec<Append<'_>>,
    refreshes: &mut Refreshes,
    now: Instant,
) -> Vec<Planned> {
    appends
        .into_iter()
        .map(|a| {
            pipe.rpush(&a.key, a.value);
            let expiry_sent = refreshes.due(&a.key, a.lifetime, now);
            if expiry_sent {
                pipe.pexpire(&a.key, millis(expiry(a.lifetime))).ignore();
            }
            Planned {
                key: a.key,
                cap: a.cap,
                lifetime: a.lifetime,
                expiry_sent,
            }
        })
        .collect()
}

/// The second round trip, from the lengths `RPUSH` answered (in the order of `planned`):
/// trims for lists past their slack, expiries for lists created without one. `None` when
/// there is nothing to send.
pub fn follow_up(planned: &[Planned], lengths: &[i64]) -> Option<redis::Pipeline> {
    let mut pipe = redis::pipe();
    for (p, &len) in planned.iter().zip(lengths) {
        let len = usize::try_from(len).unwrap_or(0);
        if len > p.cap + slack(p.cap) {
            let cap = isize::try_from(p.cap).unwrap_or(isize::MAX);
            pipe.ltrim(&p.key, -cap, -1).ignore();
        }
        if len == 1 && !p.expiry_sent {
            pipe.pexpire(&p.key, millis(expiry(p.lifetime))).ignore();
        }
    }
    (!pipe.is_empty()).then_some(pipe)
}

/// The keys whose expiry `planned` sent.
pub fn expiries_sent(planned: &[Planned]) -> impl Iterator<Item = &str> {
    planned
        .iter()
        .filter(|p| p.expiry_sent)
        .map(|p| p.key.as_str())
}

/// Every key of `planned`: after a second round trip whose outcome is unknown, an expiry it
/// carried may not be set, and is set again on the list's next append.
pub fn keys(planned: &[Planned]) -> impl Iterator<Item = &str> {
    planned.iter().map(|p| p.key.as_str())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn append(key: &str, cap: usize) -> Append<'static> {
        Append {
            key: key.into(),
            value: b"v",
            cap,
            lifetime: HOUR * 8,
        }
    }

    fn commands(pipe: &redis::Pipeline) -> Vec<String> {
        pipe.cmd_iter()
            .map(|c| {
                c.args_iter()
                    .map(|a| match a {
                        redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                        _ => "<cursor>".into(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn the_expiry_is_set_once_per_eighth_of_the_lifetime_and_reaches_past_it() {
        let mut refreshes = Refreshes::default();
        let t = Instant::now();
        let mut pipe = redis::pipe();
        let planned = add(
            &mut pipe,
            vec![append("a", 10), append("b", 10)],
            &mut refreshes,
            t,
        );
        // Eight hours plus an eighth: 9 hours.
        assert_eq!(
            commands(&pipe),
            [
                "RPUSH a v",
                "PEXPIRE a 32400000",
                "RPUSH b v",
                "PEXPIRE b 32400000"
            ]
        );
        assert_eq!(expiries_sent(&planned).count(), 2);
        // Within the hour, nothing but the append.
        let mut pipe = redis::pipe();
        let planned = add(
            &mut pipe,
            vec![append("a", 10)],
            &mut refreshes,
            t + HOUR - Duration::from_secs(1),
        );
        assert_eq!(commands(&pipe), ["RPUSH a v"]);
        assert_eq!(expiries_sent(&planned).count(), 0);
        // An hour on, again.
        let mut pipe = redis::pipe();
        add(&mut pipe, vec![append("a", 10)], &mut refreshes, t + HOUR);
        assert_eq!(commands(&pipe), ["RPUSH a v", "PEXPIRE a 32400000"]);
        // Forgotten after a failed pipeline: set on the next append.
        refreshes.forget(["a"]);
        let mut pipe = redis::pipe();
        add(&mut pipe, vec![append("a", 10)], &mut refreshes, t + HOUR);
        assert_eq!(commands(&pipe), ["RPUSH a v", "PEXPIRE a 32400000"]);
    }

    #[test]
    fn lists_are_trimmed_past_their_slack_and_new_lists_given_an_expiry() {
        let mut refreshes = Refreshes::default();
        let t = Instant::now();
        let mut pipe = redis::pipe();
        add(&mut pipe, vec![append("x", 16)], &mut refreshes, t);
        let mut pipe = redis::pipe();
        let planned = add(
            &mut pipe,
            vec![append("x", 16), append("y", 16), append("z", 16)],
            &mut refreshes,
            t,
        );
        assert_eq!(expiries_sent(&planned).collect::<Vec<_>>(), ["y", "z"]);
        // x at its cap plus slack (16 + 3): left alone. y created with an expiry: nothing.
        assert!(follow_up(&planned, &[19, 1, 5]).is_none());
        // x one past the slack: trimmed to 16.
        let pipe = follow_up(&planned, &[20, 1, 5]).unwrap();
        assert_eq!(commands(&pipe), ["LTRIM x -16 -1"]);
        // x created again since this replica set its expiry (deleted or evicted): given one.
        let pipe = follow_up(&planned, &[1, 1, 5]).unwrap();
        assert_eq!(commands(&pipe), ["PEXPIRE x 32400000"]);
    }

    #[test]
    fn remembering_is_bounded() {
        let mut refreshes = Refreshes::default();
        let t = Instant::now();
        for i in 0..MAX_REMEMBERED + 10 {
            assert!(refreshes.due(&format!("k{i}"), HOUR, t));
        }
        assert!(refreshes.last.len() <= MAX_REMEMBERED);
    }
}
