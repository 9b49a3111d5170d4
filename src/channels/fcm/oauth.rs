//! OAuth2 access tokens for FCM, cached and shared by every send of the app: a JWT-bearer
//! grant (RFC 7523) signed RS256 by the service account's key and posted to the key's own
//! `token_uri`, or, without a key, the metadata server's token for the workload's own service
//! account (`Metadata-Flavor: Google`). Both answer with an RFC 6749 token response.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::config::apps::fcm::ServiceAccount;
use crate::config::apps::fcm_credentials::{Credentials, METADATA_TOKEN_PATH};
use crate::metrics::{AppLabels, Metrics};

pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google accepts assertions valid for at most an hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// Renew this long before a token expires, so no send ever presents one that lapses in flight.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// A token fetch gives up after this even when the webhook would wait longer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Used when the token endpoint does not say how long its token lives (Google's live an hour).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest lifetime a token endpoint is believed about.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// The signed assertion the grant exchanges for an access token.
pub fn assertion(account: &ServiceAccount, now_unix: u64) -> Result<String, String> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = account.private_key_id.clone();
    let claims = Claims {
        iss: &account.client_email,
        scope: SCOPE,
        aud: &account.token_uri,
        iat: now_unix,
        exp: now_unix + ASSERTION_LIFETIME_SECS,
    };
    jsonwebtoken::encode(&header, &claims, &account.private_key.0)
        .map_err(|e| format!("cannot sign the assertion: {e}"))
}

/// An access token and when to stop using it.
pub struct AccessToken {
    value: Secret,
    renew_at: Instant,
}

impl AccessToken {
    pub fn bearer(&self) -> &str {
        self.value.expose()
    }

    /// A token as a fake token endpoint hands it out.
    #[cfg(test)]
    pub fn fake(value: &str) -> Arc<Self> {
        Arc::new(Self {
            value: Secret::new(value.to_owned()),
            renew_at: Instant::now(),
        })
    }
}

/// What a token endpoint handed out.
pub struct Fetched {
    pub access_token: Secret,
    pub lifetime: Duration,
}

/// Where the cache reads the time; tests drive it by hand.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// One app's access token, shared by all its sends.
///
/// Fetches are single-flight: a send that finds no usable token takes the refresh lock, looks
/// again (another send may have just fetched one), and only then fetches. Sends that queued
/// behind a fetch that failed get that failure instead of trying again themselves, so a broken
/// token endpoint sees one request per wave of sends, not one per send.
pub struct TokenCache {
    state: Mutex<CacheState>,
    refresh: tokio::sync::Mutex<()>,
    clock: Clock,
}

#[derive(Default)]
struct CacheState {
    token: Option<Arc<AccessToken>>,
    /// Fetches completed, successful or not.
    attempts: u64,
    last_error: Option<String>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::with_clock(Arc::new(Instant::now))
    }
}

impl TokenCache {
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            state: Mutex::default(),
            refresh: tokio::sync::Mutex::new(()),
            clock,
        }
    }

    /// The cached token if it is still good, else one from `fetch` (called at most once per
    /// wave of concurrent callers).
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Arc<AccessToken>, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, String>>,
    {
        let seen_attempts = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(token) = self.usable(&state) {
                return Ok(token);
            }
            state.attempts
        };
        let _refreshing = self.refresh.lock().await;
        {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(token) = self.usable(&state) {
                return Ok(token);
            }
            if state.attempts != seen_attempts
                && let Some(error) = &state.last_error
            {
                return Err(error.clone());
            }
        }
        let result = fetch().await;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.attempts += 1;
        match result {
            Ok(fetched) => {
                // Renew five minutes early; a token that lives less than ten minutes is
                // renewed half-way, so a short-lived one is not fetched for every send.
                let margin = RENEW_BEFORE.min(fetched.lifetime / 2);
                let token = Arc::new(AccessToken {
                    value: fetched.access_token,
                    renew_at: (self.clock)() + fetched.lifetime - margin,
                });
                state.token = Some(token.clone());
                state.last_error = None;
                Ok(token)
            }
            Err(error) => {
                state.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Forgets `failed` (a token FCM refused) unless it has already been replaced.
    pub fn invalidate(&self, failed: &Arc<AccessToken>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .token
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, failed))
        {
            state.token = None;
        }
    }

    fn usable(&self, state: &CacheState) -> Option<Arc<AccessToken>> {
        let token = state.token.as_ref()?;
        ((self.clock)() < token.renew_at).then(|| token.clone())
    }
}

/// Fetches access tokens for one app and keeps the current one.
pub struct TokenSource {
    credentials: Arc<Credentials>,
    client: reqwest::Client,
    cache: TokenCache,
    app: String,
    metrics: Arc<Metrics>,
}

/// The token endpoint's answer (RFC 6749 §5.1). No `Debug`: it holds the token.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
    token_type: Option<String>,
}

/// The token endpoint's error answer (RFC 6749 §5.2), as Google sends it.
#[derive(Deserialize)]
struct TokenErrorResponse {
    error: String,
    error_description: Option<String>,
}

impl TokenSource {
    pub fn new(
        credentials: Credentials,
        client: reqwest::Client,
        app: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            credentials: Arc::new(credentials),
            client,
            cache: TokenCache::default(),
            app: app.to_owned(),
            metrics,
        }
    }

    /// A token good for a send now, fetching one if needed, giving up at `deadline`.
    pub async fn token(&self, deadline: tokio::time::Instant) -> Result<Arc<AccessToken>, String> {
        self.cache.get(|| self.fetch(deadline)).await
    }

    /// FCM refused `token`: the next send fetches a new one.
    pub fn invalidate(&self, token: &Arc<AccessToken>) {
        self.cache.invalidate(token);
    }

    /// The token request for these credentials, and where it goes (for error messages).
    async fn request(&self) -> Result<(reqwest::RequestBuilder, String), String> {
        match &*self.credentials {
            Credentials::ServiceAccount(account) => {
                let signer = account.clone();
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                // RSA signing is the one CPU-heavy step here; keep it off the async workers.
                let jwt = tokio::task::spawn_blocking(move || assertion(&signer, now))
                    .await
                    .map_err(|e| format!("cannot sign the assertion: {e}"))??;
                let request = self
                    .client
                    .post(&account.token_uri)
                    .form(&[("grant_type", GRANT_TYPE), ("assertion", jwt.as_str())]);
                Ok((request, account.token_uri.clone()))
            }
            Credentials::MetadataServer { url } => {
                let endpoint = format!("{url}{METADATA_TOKEN_PATH}");
                let mut target = reqwest::Url::parse(&endpoint)
                    .map_err(|e| format!("{endpoint} is not a URL: {e}"))?;
                target.query_pairs_mut().append_pair("scopes", SCOPE);
                let request = self.client.get(target).header("Metadata-Flavor", "Google");
                Ok((request, endpoint))
            }
        }
    }

    async fn fetch(&self, deadline: tokio::time::Instant) -> Result<Fetched, String> {
        let (request, endpoint) = self.request().await?;
        let give_up = deadline.min(tokio::time::Instant::now() + FETCH_TIMEOUT);
        let response = match tokio::time::timeout_at(give_up, request.send()).await {
            Err(_) => return Err(format!("{endpoint} did not answer in time")),
            Ok(Err(e)) => return Err(crate::channels::push_client::describe(e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let body = match tokio::time::timeout_at(give_up, response.bytes()).await {
            Err(_) => return Err(format!("{endpoint} did not answer in time")),
            Ok(Err(e)) => return Err(crate::channels::push_client::describe(e)),
            Ok(Ok(b)) => b,
        };
        if !status.is_success() {
            return Err(match serde_json::from_slice::<TokenErrorResponse>(&body) {
                Ok(e) => format!(
                    "the token endpoint answered {} {}{}",
                    status.as_u16(),
                    e.error,
                    e.error_description
                        .map(|d| format!(": {}", super::truncate(&d, 200)))
                        .unwrap_or_default()
                ),
                Err(_) => format!("the token endpoint answered {}", status.as_u16()),
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| "the token endpoint's answer is not an access token".to_owned())?;
        if parsed.access_token.is_empty() {
            return Err("the token endpoint's answer has an empty access token".into());
        }
        if let Some(kind) = &parsed.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(format!(
                "the token endpoint issued a `{}` token, not a bearer token",
                super::truncate(kind, 40)
            ));
        }
        self.metrics
            .push_auth_tokens
            .get_or_create(&AppLabels {
                app: self.app.clone(),
            })
            .inc();
        tracing::debug!(app = %self.app, expires_in = ?parsed.expires_in, "fetched an FCM access token");
        Ok(Fetched {
            access_token: Secret::new(parsed.access_token),
            // Google's tokens live an hour; a token endpoint claiming more (or an absurd value)
            // is held to that, so the cache's arithmetic cannot overflow.
            lifetime: parsed
                .expires_in
                .map(|s| Duration::from_secs(s.min(MAX_LIFETIME.as_secs())))
                .unwrap_or(DEFAULT_LIFETIME),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;
    use crate::config::apps::fcm::tests::key_json;

    const PUBLIC_KEY: &str =
        include_str!("../../../tests/fixtures/fcm/test-service-account-key.pub.pem");

    struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        fn new() -> Arc<Self> {
            Arc::new(Self(Mutex::new(Instant::now())))
        }
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
        fn clock(self: &Arc<Self>) -> Clock {
            let me = self.clone();
            Arc::new(move || *me.0.lock().unwrap())
        }
    }

    fn fetched(value: &str, lifetime: Duration) -> Result<Fetched, String> {
        Ok(Fetched {
            access_token: Secret::new(value),
            lifetime,
        })
    }

    #[tokio::test]
    async fn reuses_a_token_until_five_minutes_before_it_expires() {
        let clock = ManualClock::new();
        let cache = TokenCache::with_clock(clock.clock());
        let fetches = AtomicUsize::new(0);
        let get = || async {
            cache
                .get(|| async {
                    let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
                    fetched(&format!("token-{n}"), Duration::from_secs(3600))
                })
                .await
                .unwrap()
                .bearer()
                .to_owned()
        };
        assert_eq!(get().await, "token-1");
        clock.advance(Duration::from_secs(3299));
        assert_eq!(get().await, "token-1", "still more than 5 minutes to go");
        clock.advance(Duration::from_secs(1));
        assert_eq!(get().await, "token-2", "renewed 5 minutes before expiry");
        assert_eq!(get().await, "token-2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn short_lived_tokens_are_renewed_half_way() {
        let clock = ManualClock::new();
        let cache = TokenCache::with_clock(clock.clock());
        let t = cache
            .get(|| async { fetched("short", Duration::from_secs(120)) })
            .await
            .unwrap();
        clock.advance(Duration::from_secs(59));
        let again = cache
            .get(|| async { fetched("other", Duration::from_secs(120)) })
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&t, &again));
        clock.advance(Duration::from_secs(1));
        let renewed = cache
            .get(|| async { fetched("other", Duration::from_secs(120)) })
            .await
            .unwrap();
        assert_eq!(renewed.bearer(), "other");
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, fetches, gate) = (cache.clone(), fetches.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        fetched("shared", Duration::from_secs(3600))
                    })
                    .await
                    .map(|t| t.bearer().to_owned())
            }));
        }
        // Let every task queue up behind the first fetch, then let it finish.
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "shared");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn callers_queued_behind_a_failed_fetch_get_its_error_and_later_ones_retry() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (cache, fetches, gate) = (cache.clone(), fetches.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Err("token endpoint down".to_owned())
                    })
                    .await
                    .err()
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap().as_deref(), Some("token endpoint down"));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A later send tries again.
        let t = cache
            .get(|| async { fetched("recovered", Duration::from_secs(3600)) })
            .await
            .unwrap();
        assert_eq!(t.bearer(), "recovered");
    }

    #[tokio::test]
    async fn invalidation_drops_only_the_token_that_failed() {
        let cache = TokenCache::default();
        let first = cache
            .get(|| async { fetched("first", Duration::from_secs(3600)) })
            .await
            .unwrap();
        cache.invalidate(&first);
        let second = cache
            .get(|| async { fetched("second", Duration::from_secs(3600)) })
            .await
            .unwrap();
        assert_eq!(second.bearer(), "second");
        // A late 401 for the first token must not throw away its replacement.
        cache.invalidate(&first);
        let still = cache
            .get(|| async { fetched("third", Duration::from_secs(3600)) })
            .await
            .unwrap();
        assert_eq!(still.bearer(), "second");
    }

    #[test]
    fn the_assertion_is_what_google_expects_and_verifies_with_the_public_key() {
        let account = ServiceAccount::parse(&key_json(serde_json::json!({}))).unwrap();
        let jwt = assertion(&account, 1_700_000_000).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("kid-1"));
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.set_audience(&["https://oauth2.googleapis.com/token"]);
        let key = DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
        let claims = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": "relay@callrelay-test.iam.gserviceaccount.com",
                "scope": "https://www.googleapis.com/auth/firebase.messaging",
                "aud": "https://oauth2.googleapis.com/token",
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
    }
}
