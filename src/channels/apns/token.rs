//! APNs provider tokens (token authentication): an ES256 JWT signed with the app's `.p8` key,
//! and the cache that decides when to sign a new one.
//!
//! Apple's rules: a token is accepted for an hour after its `iat`; a provider that updates its
//! token more often than once every 20 minutes gets `429 TooManyProviderTokenUpdates`. So one
//! token per app serves every connection and environment, is renewed when 50 minutes old
//! (well before the hour), and a renewal forced by Apple refusing the token happens at most
//! once per 20 minutes, so a key Apple keeps refusing does not make callrelay sign on every push.

use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Age at which the cached token is replaced.
pub const RENEW_AFTER_SECS: u64 = 50 * 60;
/// Least time between two renewals forced by Apple's refusals.
pub const MIN_FORCED_RENEWAL_INTERVAL_SECS: u64 = 20 * 60;

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
    last_forced_renewal: Option<u64>,
}

impl TokenCache {
    /// The token to send now: the cached one unless there is none or it is 50 minutes old.
    pub fn current<E>(
        &self,
        now: u64,
        sign: impl FnOnce(u64) -> Result<String, E>,
    ) -> Result<ProviderToken, E> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = &state.current
            && now.saturating_sub(token.issued_at) < RENEW_AFTER_SECS
            // A clock that jumped back would otherwise keep a token "from the future".
            && token.issued_at <= now + 60
        {
            return Ok(token.clone());
        }
        let token = ProviderToken {
            jwt: sign(now)?.into(),
            issued_at: now,
        };
        state.current = Some(token.clone());
        Ok(token)
    }

    /// Apple refused `rejected` (`ExpiredProviderToken`, `InvalidProviderToken`). Returns the
    /// token to retry with: one another push already renewed, or a new one signed now; `None`
    /// when a forced renewal happened less than 20 minutes ago, so there is nothing to retry with.
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
        if let Some(at) = state.last_forced_renewal
            && now.saturating_sub(at) < MIN_FORCED_RENEWAL_INTERVAL_SECS
        {
            return Ok(None);
        }
        // ES256 signatures here are deterministic (RFC 6979): a token signed in the same second
        // as the refused one would be the same bytes, so the new one is dated a second earlier.
        let issued_at = if now == rejected.issued_at {
            now.saturating_sub(1)
        } else {
            now
        };
        let token = ProviderToken {
            jwt: sign(issued_at)?.into(),
            issued_at,
        };
        state.current = Some(token.clone());
        state.last_forced_renewal = Some(now);
        Ok(Some(token))
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
    fn a_refused_token_is_renewed_at_once_but_forced_renewals_wait_twenty_minutes() {
        let cache = TokenCache::default();
        let s = Counting::new();
        let first = cache.current(T0, s.sign()).unwrap();
        // Refused 5 minutes in: renewed at once.
        let second = cache
            .renew_rejected(&first, T0 + 5 * MIN, s.sign())
            .unwrap()
            .unwrap();
        assert_ne!(second, first);
        assert_eq!(s.count(), 2);
        assert_eq!(cache.current(T0 + 6 * MIN, s.sign()).unwrap(), second);
        // Refused again soon after: no new signature, nothing to retry with.
        assert_eq!(
            cache
                .renew_rejected(&second, T0 + 10 * MIN, s.sign())
                .unwrap(),
            None
        );
        assert_eq!(
            cache
                .renew_rejected(&second, T0 + 24 * MIN + 59, s.sign())
                .unwrap(),
            None
        );
        assert_eq!(s.count(), 2);
        // Twenty minutes after the last forced renewal, another is allowed.
        let third = cache
            .renew_rejected(&second, T0 + 25 * MIN, s.sign())
            .unwrap()
            .unwrap();
        assert_ne!(third, second);
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn a_token_already_replaced_is_not_renewed_again() {
        let cache = TokenCache::default();
        let s = Counting::new();
        let first = cache.current(T0, s.sign()).unwrap();
        let second = cache
            .renew_rejected(&first, T0 + MIN, s.sign())
            .unwrap()
            .unwrap();
        // Another push that was sent with `first` is refused too: it retries with `second`,
        // and nothing is signed (nor does it count as a forced renewal).
        assert_eq!(
            cache.renew_rejected(&first, T0 + MIN, s.sign()).unwrap(),
            Some(second.clone())
        );
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn a_renewal_in_the_same_second_gets_a_different_iat() {
        let cache = TokenCache::default();
        let s = Counting::new();
        let first = cache.current(T0, s.sign()).unwrap();
        let second = cache.renew_rejected(&first, T0, s.sign()).unwrap().unwrap();
        assert_eq!(second.issued_at(), T0 - 1);
        assert_ne!(second.jwt(), first.jwt());
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
        cache.current(T0, s.sign()).unwrap();
        assert_eq!(s.count(), 1);
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
