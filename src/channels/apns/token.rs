//! APNs provider tokens (token authentication): an ES256 JWT signed with the app's `.p8` key,
//! and the cache that decides when to sign a new one.
//!
//! Apple's rules: a token is accepted for an hour after its `iat`; a provider that updates its
//! token more often than once every 20 minutes gets `429 TooManyProviderTokenUpdates`. So one
//! token per app serves every connection and environment, is renewed when 50 minutes old
//! (well before the hour), and no token is ever signed less than 20 minutes after the previous
//! one, whatever the reason: a token Apple refuses while younger than that is kept (the push
//! fails with Apple's reason), so a key Apple keeps refusing does not make callrelay sign on
//! every push, and a token signed on schedule and refused a minute later is not replaced early.

use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Age at which the cached token is replaced.
pub const RENEW_AFTER_SECS: u64 = 50 * 60;
/// Least time between two signings, scheduled or forced by Apple's refusals.
pub const MIN_RENEWAL_INTERVAL_SECS: u64 = 20 * 60;
/// How far the clock may run behind a token's `iat` before the token counts as "from the future".
const CLOCK_SLACK_SECS: u64 = 60;

/// A signed provider token and when it was issued (its `iat`, Unix seconds).
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderToken {
    jwt: Arc<str>,
    issued_at: u64,
}

impl ProviderToken {
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    #[cfg(test)]
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
}

impl std::fmt::Debug for ProviderToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderToken")
            .field("jwt", &"[redacted]")
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

/// Signs provider tokens for one team and key.
pub struct Signer {
    key: EncodingKey,
    header: Header,
    team_id: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

impl Signer {
    pub fn new(team_id: &str, key_id: &str, key: EncodingKey) -> Self {
        // Apple's documented header is exactly {alg, kid}.
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key_id.to_owned());
        header.typ = None;
        Self {
            key,
            header,
            team_id: team_id.to_owned(),
        }
    }

    pub fn sign(&self, issued_at: u64) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(
            &self.header,
            &Claims {
                iss: &self.team_id,
                iat: issued_at,
            },
            &self.key,
        )
    }
}

/// The one current token of an app. Time is passed in (Unix seconds) so the rules are testable;
/// `sign` is called with the `iat` to sign for, under the lock, so concurrent pushes that find
/// no valid token sign once between them.
#[derive(Default)]
pub struct TokenCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    current: Option<ProviderToken>,
}

impl State {
    /// Whether a new token may be signed at `now`: none yet, or the current one is at least
    /// 20 minutes old. A clock that jumped back past the current token's `iat` cannot measure
    /// the interval, and Apple refuses a token dated in the future, so it may be replaced.
    fn may_sign(&self, now: u64) -> bool {
        self.current.as_ref().is_none_or(|token| {
            now >= token.issued_at.saturating_add(MIN_RENEWAL_INTERVAL_SECS)
                || token.issued_at > now.saturating_add(CLOCK_SLACK_SECS)
        })
    }

    fn sign<E>(
        &mut self,
        now: u64,
        sign: impl FnOnce(u64) -> Result<String, E>,
    ) -> Result<ProviderToken, E> {
        let token = ProviderToken {
            jwt: sign(now)?.into(),
            issued_at: now,
        };
        self.current = Some(token.clone());
        Ok(token)
    }
}

impl TokenCache {
    /// The token to send now: the cached one unless there is none or it is 50 minutes old.
    pub fn current<E>(
        &self,
        now: u64,
        sign: impl FnOnce(u64) -> Result<String, E>,
    ) -> Result<ProviderToken, E> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = &state.current {
            let fresh = now.saturating_sub(token.issued_at) < RENEW_AFTER_SECS
                // A clock that jumped back would otherwise keep a token "from the future".
                && token.issued_at <= now.saturating_add(CLOCK_SLACK_SECS);
            if fresh || !state.may_sign(now) {
                return Ok(token.clone());
            }
        }
        state.sign(now, sign)
    }

    /// Apple refused `rejected` (`ExpiredProviderToken`, `InvalidProviderToken`). Returns the
    /// token to retry with: one another push already renewed, or a new one signed now; `None`
    /// when the current token is less than 20 minutes old, so there is nothing to retry with.
    pub fn renew_rejected<E>(
        &self,
        rejected: &ProviderToken,
        now: u64,
        sign: impl FnOnce(u64) -> Result<String, E>,
    ) -> Result<Option<ProviderToken>, E> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = &state.current
            && current != rejected
        {
            return Ok(Some(current.clone()));
        }
        if !state.may_sign(now) {
            return Ok(None);
        }
        state.sign(now, sign).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::convert::Infallible;

    use super::*;

    const T0: u64 = 1_700_000_000;
    const MIN: u64 = 60;

    /// A signer that counts its calls and names each token after its `iat`.
    struct Counting(Cell<u32>);

    impl Counting {
        fn new() -> Self {
            Self(Cell::new(0))
        }

        fn sign(&self) -> impl FnOnce(u64) -> Result<String, Infallible> + '_ {
            |iat| {
                self.0.set(self.0.get() + 1);
                Ok(format!("jwt-{iat}"))
            }
        }

        fn count(&self) -> u32 {
            self.0.get()
        }
    }

    #[test]
    fn one_token_until_it_is_fifty_minutes_old() {
        let cache = TokenCache::default();
        let s = Counting::new();
        let first = cache.current(T0, s.sign()).unwrap();
        assert_eq!(first.jwt(), format!("jwt-{T0}"));
        for t in [T0 + 1, T0 + 20 * MIN, T0 + 49 * MIN + 59] {
            assert_eq!(cache.current(t, s.sign()).unwrap(), first);
        }
        assert_eq!(s.count(), 1);
        let second = cache.current(T0 + 50 * MIN, s.sign()).unwrap();
        assert_ne!(second, first);
        assert_eq!(second.issued_at(), T0 + 50 * MIN);
        assert_eq!(s.count(), 2);
        assert_eq!(cache.current(T0 + 60 * MIN, s.sign()).unwrap(), second);
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn a_refused_token_older_than_twenty_minutes_is_renewed_at_once() {
        let cache = TokenCache::default();
        let s = Counting::new();
        let first = cache.current(T0, s.sign()).unwrap();
        let second = cache
            .renew_rejected(&first, T0 + 20 * MIN, s.sign())
            .unwrap()
            .unwrap();
        assert_ne!(second, first);
        assert_eq!(second.issued_at(), T0 + 20 * MIN);
        assert_eq!(s.count(), 2);
        assert_eq!(cache.current(T0 + 21 * MIN, s.sign()).unwrap(), second);
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn a_refused_token_younger_than_twenty_minutes_is_kept() {
        let cache = TokenCache::default();
        let s = Counting::new();
        let first = cache.current(T0, s.sign()).unwrap();
        for t in [T0, T0 + MIN, T0 + 19 * MIN + 59] {
            assert_eq!(cache.renew_rejected(&first, t, s.sign()).unwrap(), None);
        }
        assert_eq!(s.count(), 1);
        // Nothing else changed: the same token is still the one to send.
        assert_eq!(cache.current(T0 + 19 * MIN, s.sign()).unwrap(), first);
        // A refusal that keeps coming: renewed once the token is 20 minutes old, then
        // again not before the renewed one is.
        let second = cache
            .renew_rejected(&first, T0 + 20 * MIN, s.sign())
            .unwrap()
            .unwrap();
        assert_eq!(
            cache
                .renew_rejected(&second, T0 + 39 * MIN + 59, s.sign())
                .unwrap(),
            None
        );
        assert!(
            cache
                .renew_rejected(&second, T0 + 40 * MIN, s.sign())
                .unwrap()
                .is_some()
        );
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn a_token_signed_on_schedule_and_refused_a_minute_later_is_not_re_signed() {
        let cache = TokenCache::default();
        let s = Counting::new();
        cache.current(T0, s.sign()).unwrap();
        let scheduled = cache.current(T0 + 50 * MIN, s.sign()).unwrap();
        assert_eq!(s.count(), 2);
        assert_eq!(
            cache
                .renew_rejected(&scheduled, T0 + 51 * MIN, s.sign())
                .unwrap(),
            None
        );
        assert_eq!(s.count(), 2);
        assert_eq!(cache.current(T0 + 52 * MIN, s.sign()).unwrap(), scheduled);
    }

    #[test]
    fn a_token_already_replaced_is_not_renewed_again() {
        let cache = TokenCache::default();
        let s = Counting::new();
        let first = cache.current(T0, s.sign()).unwrap();
        let second = cache
            .renew_rejected(&first, T0 + 30 * MIN, s.sign())
            .unwrap()
            .unwrap();
        // Another push that was sent with `first` is refused too: it retries with `second`,
        // and nothing is signed.
        assert_eq!(
            cache
                .renew_rejected(&first, T0 + 30 * MIN, s.sign())
                .unwrap(),
            Some(second.clone())
        );
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn a_clock_that_jumped_back_gets_a_fresh_token() {
        let cache = TokenCache::default();
        let s = Counting::new();
        let first = cache.current(T0, s.sign()).unwrap();
        let after_jump = cache.current(T0 - 10 * MIN, s.sign()).unwrap();
        assert_ne!(after_jump, first);
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn signing_errors_are_passed_on_and_nothing_is_cached() {
        let cache = TokenCache::default();
        assert_eq!(cache.current(T0, |_| Err("broken key")), Err("broken key"));
        let s = Counting::new();
        let first = cache.current(T0, s.sign()).unwrap();
        assert_eq!(s.count(), 1);
        // A failed renewal leaves the token in place.
        assert_eq!(
            cache.renew_rejected(&first, T0 + 20 * MIN, |_| Err("broken key")),
            Err("broken key")
        );
        assert_eq!(cache.current(T0 + 21 * MIN, s.sign()).unwrap(), first);
    }

    #[test]
    fn signer_writes_apples_header_and_claims() {
        let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let signer = Signer::new("TEAM123456", "KEY1234567", key);
        let jwt = signer.sign(T0).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("KEY1234567"));
        assert_eq!(header.typ, None);
        let claims = jwt.split('.').nth(1).unwrap();
        use base64::Engine;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims, serde_json::json!({"iss": "TEAM123456", "iat": T0}));
    }
}
