//! Twilio Access Tokens: HS256 JWTs signed with an API key secret, carrying the caller's
//! account (`sub`) and identity (`grants.identity`). callrelay verifies them the way Twilio
//! does and mints them for the developer helpers.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AccountConfig, Secret};
use crate::domain::{AccountSid, ApiKeySid, Identity};

/// Twilio caps Access Token lifetimes at 24 hours.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest token accepted; real ones are well under 1 KiB.
pub const MAX_TOKEN_LEN: usize = 8192;
/// Tolerated clock difference between the minting server and callrelay.
pub const LEEWAY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub account_sid: AccountSid,
    pub identity: Identity,
    pub api_key: ApiKeySid,
    /// How much longer, from the moment it was verified, the token is accepted: until `exp`
    /// plus `LEEWAY`. A WebSocket opened with it lives no longer.
    pub valid_for: Duration,
}

/// Why a token was refused. Logged; callers see `401`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("algorithm {0} is not accepted (HS256 only)")]
    Algorithm(String),
    #[error("sub is not a configured account")]
    UnknownAccount,
    #[error("iss is not an API key configured for the account")]
    UnknownKey,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token lives longer than 24 hours")]
    LifetimeTooLong,
    #[error("grants.identity is missing or invalid")]
    Identity,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    iss: String,
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default)]
    grants: Grants,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Grants {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    voice: Option<serde_json::Value>,
}

/// Only the members needed to pick the verification key, read before the signature is checked.
#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
    sub: Option<String>,
}

/// The API key secrets of every configured account.
#[derive(Debug, Clone, Default)]
pub struct TokenVerifier {
    keys: HashMap<(String, String), DecodingKey>,
    accounts: Vec<AccountSid>,
}

impl TokenVerifier {
    pub fn new(accounts: &[AccountConfig]) -> Self {
        let mut keys = HashMap::new();
        for account in accounts {
            for (sid, secret) in &account.api_keys {
                keys.insert(
                    (account.sid.to_string(), sid.to_string()),
                    DecodingKey::from_secret(secret.expose().as_bytes()),
                );
            }
        }
        Self {
            keys,
            accounts: accounts.iter().map(|a| a.sid.clone()).collect(),
        }
    }

    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.verify_at(token, now_secs())
    }

    pub fn verify_at(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // `alg: none` and other names jsonwebtoken does not know end up here.
            match raw_alg(token) {
                Some(alg) if alg != "HS256" => TokenError::Algorithm(alg),
                _ => TokenError::Malformed,
            }
        })?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let unverified = unverified_claims(token).ok_or(TokenError::Malformed)?;
        let sub = unverified.sub.ok_or(TokenError::UnknownAccount)?;
        if !self.accounts.iter().any(|a| a.as_str() == sub) {
            return Err(TokenError::UnknownAccount);
        }
        let iss = unverified.iss.ok_or(TokenError::UnknownKey)?;
        let key = self
            .keys
            .get(&(sub.clone(), iss.clone()))
            .ok_or(TokenError::UnknownKey)?;

        // Time claims are checked below against `now`, so tests can choose the clock.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => TokenError::Malformed,
        })?;
        let claims = data.claims;
        // Saturating: `exp` and `nbf` are whatever the token says, up to u64::MAX.
        let leeway = LEEWAY.as_secs();
        if claims.exp.saturating_add(leeway) <= now {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            return Err(TokenError::NotYetValid);
        }
        if claims.exp > now.saturating_add(MAX_LIFETIME.as_secs() + leeway) {
            return Err(TokenError::LifetimeTooLong);
        }
        let identity = claims
            .grants
            .identity
            .as_deref()
            .and_then(|i| Identity::parse(i).ok())
            .ok_or(TokenError::Identity)?;
        Ok(VerifiedToken {
            account_sid: AccountSid::parse(&claims.sub).map_err(|_| TokenError::UnknownAccount)?,
            identity,
            api_key: ApiKeySid::parse(&claims.iss).map_err(|_| TokenError::UnknownKey)?,
            // Positive: a token whose `exp + leeway` has passed was refused above.
            valid_for: Duration::from_secs(claims.exp.saturating_add(leeway).saturating_sub(now)),
        })
    }
}

/// The header's `alg`, as the caller wrote it but cut to a short, printable name: it ends up
/// in a log line, and a client must not be able to write kilobytes or line breaks there.
fn raw_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let alg = value.get("alg")?.as_str()?;
    let mut shown: String = alg
        .chars()
        .take(16)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if alg.chars().count() > 16 {
        shown.push('…');
    }
    Some(shown)
}

fn unverified_claims(token: &str) -> Option<Unverified> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Mints an Access Token with a Voice grant, shaped like the ones Twilio's server SDKs make.
pub fn mint(
    account: &AccountSid,
    api_key: &ApiKeySid,
    secret: &Secret,
    identity: &Identity,
    ttl: Duration,
) -> String {
    mint_at(account, api_key, secret, identity, now_secs(), ttl)
}

pub fn mint_at(
    account: &AccountSid,
    api_key: &ApiKeySid,
    secret: &Secret,
    identity: &Identity,
    now: u64,
    ttl: Duration,
) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    header.cty = Some("twilio-fpa;v=1".into());
    let claims = Claims {
        jti: Some(format!("{api_key}-{now}")),
        iss: api_key.to_string(),
        sub: account.to_string(),
        exp: now + ttl.as_secs(),
        nbf: Some(now),
        iat: None,
        grants: Grants {
            identity: Some(identity.to_string()),
            voice: Some(serde_json::json!({"incoming": {"allow": true}})),
        },
    };
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .expect("HS256 signing with an in-memory secret cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACC: &str = "AC0123456789abcdef0123456789abcdef";
    const KEY: &str = "SK0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn setup() -> (TokenVerifier, AccountSid, ApiKeySid, Secret) {
        let account = AccountSid::parse(ACC).unwrap();
        let key = ApiKeySid::parse(KEY).unwrap();
        let secret = Secret::new("api-key-secret");
        let verifier = TokenVerifier::new(&[AccountConfig {
            sid: account.clone(),
            auth_tokens: vec![Secret::new("t")],
            shared_keys: vec![],
            api_keys: vec![(key.clone(), secret.clone())],
            webhook_basic_auth: None,
            require_signature: true,
            delivery: Default::default(),
            event_targets: Vec::new(),
        }]);
        (verifier, account, key, secret)
    }

    fn encode_raw(header: serde_json::Value, claims: serde_json::Value, secret: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{h}.{c}").as_bytes());
        let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{h}.{c}.{s}")
    }

    fn claims(exp: u64) -> serde_json::Value {
        serde_json::json!({"iss": KEY, "sub": ACC, "exp": exp, "grants": {"identity": "bob"}})
    }

    #[test]
    fn minted_tokens_verify() {
        let (v, account, key, secret) = setup();
        let identity = Identity::parse("bob").unwrap();
        let token = mint_at(
            &account,
            &key,
            &secret,
            &identity,
            NOW,
            Duration::from_secs(3600),
        );
        let ok = v.verify_at(&token, NOW + 10).unwrap();
        assert_eq!(ok.identity, identity);
        assert_eq!(ok.account_sid, account);
        assert_eq!(ok.api_key, key);
    }

    #[test]
    fn tokens_without_nbf_or_iat_verify() {
        let (v, ..) = setup();
        let token = encode_raw(
            serde_json::json!({"alg": "HS256", "typ": "JWT"}),
            claims(NOW + 60),
            b"api-key-secret",
        );
        assert!(v.verify_at(&token, NOW).is_ok());
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn bob() -> Identity {
        Identity::parse("bob").unwrap()
    }

    #[test]
    fn alg_none_is_refused() {
        let (v, ..) = setup();
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims(NOW + 60).to_string())
        );
        assert!(matches!(
            v.verify_at(&none, NOW),
            Err(TokenError::Algorithm(_))
        ));
    }

    #[test]
    fn an_unknown_alg_is_named_short_and_printable() {
        let (v, ..) = setup();
        let long = format!("x\ny{}", "z".repeat(5000));
        let token = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(serde_json::json!({ "alg": long }).to_string()),
            URL_SAFE_NO_PAD.encode(claims(NOW + 60).to_string())
        );
        let Err(TokenError::Algorithm(shown)) = v.verify_at(&token, NOW) else {
            panic!("an unknown algorithm is refused as such");
        };
        assert_eq!(shown, format!("x?y{}…", "z".repeat(13)));
    }

    #[test]
    fn other_hmac_algorithms_are_refused_even_with_the_right_key() {
        let (v, ..) = setup();
        for alg in ["HS384", "HS512"] {
            let token = encode_raw(
                serde_json::json!({"alg": alg}),
                claims(NOW + 60),
                b"api-key-secret",
            );
            assert!(
                matches!(v.verify_at(&token, NOW), Err(TokenError::Algorithm(_))),
                "{alg}"
            );
        }
        let rs = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims(NOW + 60).to_string())
        );
        assert!(matches!(
            v.verify_at(&rs, NOW),
            Err(TokenError::Algorithm(_))
        ));
    }

    #[test]
    fn a_wrong_key_is_refused() {
        let (v, account, key, _) = setup();
        let token = mint_at(&account, &key, &Secret::new("other"), &bob(), NOW, HOUR);
        assert_eq!(v.verify_at(&token, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn an_unknown_issuer_is_refused() {
        let (v, account, _, secret) = setup();
        let other_key = ApiKeySid::parse("SKffffffffffffffffffffffffffffffff").unwrap();
        let token = mint_at(&account, &other_key, &secret, &bob(), NOW, HOUR);
        assert_eq!(v.verify_at(&token, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn a_subject_that_is_not_a_configured_account_is_refused() {
        let (v, _, key, secret) = setup();
        let other = AccountSid::parse("ACffffffffffffffffffffffffffffffff").unwrap();
        let token = mint_at(&other, &key, &secret, &bob(), NOW, HOUR);
        assert_eq!(v.verify_at(&token, NOW), Err(TokenError::UnknownAccount));
    }

    #[test]
    fn expired_tokens_are_refused_after_the_leeway() {
        let (v, account, key, secret) = setup();
        let token = mint_at(&account, &key, &secret, &bob(), NOW, HOUR);
        assert_eq!(
            v.verify_at(&token, NOW + 3600 + 31),
            Err(TokenError::Expired)
        );
        assert!(v.verify_at(&token, NOW + 3600 + 29).is_ok());
    }

    #[test]
    fn a_token_says_how_long_it_stays_valid() {
        let (v, account, key, secret) = setup();
        let token = mint_at(&account, &key, &secret, &bob(), NOW, HOUR);
        let at = |now| v.verify_at(&token, now).unwrap().valid_for;
        assert_eq!(at(NOW), HOUR + LEEWAY);
        assert_eq!(at(NOW + 3600 + 29), Duration::from_secs(1));
    }

    #[test]
    fn tokens_not_valid_yet_are_refused_beyond_the_leeway() {
        let (v, account, key, secret) = setup();
        let token = mint_at(&account, &key, &secret, &bob(), NOW, HOUR);
        assert_eq!(v.verify_at(&token, NOW - 31), Err(TokenError::NotYetValid));
        assert!(v.verify_at(&token, NOW - 29).is_ok());
    }

    #[test]
    fn lifetimes_over_a_day_are_refused() {
        let (v, account, key, secret) = setup();
        let token = mint_at(
            &account,
            &key,
            &secret,
            &bob(),
            NOW,
            Duration::from_secs(48 * 3600),
        );
        assert_eq!(v.verify_at(&token, NOW), Err(TokenError::LifetimeTooLong));
    }

    /// `exp + leeway` would overflow: refused as too long-lived, without a panic.
    #[test]
    fn the_largest_exp_and_nbf_are_refused_without_overflow() {
        let (v, _, _, secret) = setup();
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let token = encode_raw(header.clone(), claims(u64::MAX), secret.expose().as_bytes());
        assert_eq!(v.verify_at(&token, NOW), Err(TokenError::LifetimeTooLong));
        // Nor does a clock at the end of time overflow `now + leeway`.
        assert_eq!(v.verify_at(&token, u64::MAX), Err(TokenError::Expired));
        let mut not_yet = claims(NOW + 60);
        not_yet["nbf"] = serde_json::json!(u64::MAX);
        let token = encode_raw(header, not_yet, secret.expose().as_bytes());
        assert_eq!(v.verify_at(&token, NOW), Err(TokenError::NotYetValid));
    }

    #[test]
    fn a_missing_identity_is_refused() {
        let (v, ..) = setup();
        let token = encode_raw(
            serde_json::json!({"alg": "HS256"}),
            serde_json::json!({"iss": KEY, "sub": ACC, "exp": NOW + 60, "grants": {}}),
            b"api-key-secret",
        );
        assert_eq!(v.verify_at(&token, NOW), Err(TokenError::Identity));
    }

    #[test]
    fn oversize_and_malformed_tokens_are_refused() {
        let (v, account, key, secret) = setup();
        assert_eq!(
            v.verify_at(&"a".repeat(MAX_TOKEN_LEN + 1), NOW),
            Err(TokenError::TooLong)
        );
        assert_eq!(v.verify_at("a.b", NOW), Err(TokenError::Malformed));
        assert_eq!(v.verify_at("", NOW), Err(TokenError::Malformed));
        let token = mint_at(&account, &key, &secret, &bob(), NOW, HOUR);
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(v.verify_at(&tampered, NOW).is_err());
    }
}
