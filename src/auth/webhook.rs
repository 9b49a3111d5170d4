//! Authenticating Twilio's webhooks: `X-Twilio-Signature` with the `bodySHA256` scheme (JSON
//! bodies: call notifications, Event Streams) or over the URL and the sorted form parameters
//! (status callbacks; a `GET`'s parameters are in the URL), and optional HTTP Basic
//! credentials.
//!
//! Basic follows Twilio's handshake: Twilio first sends the request without an
//! `Authorization` header and adds the credentials from the URL only after a `401` carrying
//! `WWW-Authenticate`. So "no Basic credentials" (`MissingBasic`, answered `401` with the
//! challenge) is the normal first step, distinct from wrong ones (`WrongBasic`, `403`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::signature::{self, SignatureAlgorithm};
use crate::config::AccountConfig;

/// What the webhook handler hands over: the URL Twilio requested (as reconstructed from the
/// public URL), the relevant headers, and the raw body.
pub struct WebhookCredentials<'a> {
    pub url: &'a str,
    pub signature: Option<&'a str>,
    pub signature_settings: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
    /// `Some`: the request is form-encoded and signed over the URL and these parameters (none
    /// for a `GET`), not with `bodySHA256`.
    pub params: Option<&'a [(String, String)]>,
}

/// Why a webhook was refused. Logged; the caller sees `401` with a Basic challenge for
/// `MissingBasic` and `403` for everything else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookAuthError {
    /// No `Authorization` header, or one that is not a Basic credential: Twilio's first try.
    #[error("no HTTP Basic credentials")]
    MissingBasic,
    #[error("wrong HTTP Basic credentials")]
    WrongBasic,
    #[error("no X-Twilio-Signature header")]
    MissingSignature,
    #[error("the URL has no bodySHA256 parameter, so the signature does not cover the body")]
    MissingBodyHash,
    #[error("bodySHA256 does not match the body")]
    BodyHashMismatch,
    #[error("X-Twilio-Webhooks-Signature-Settings names unknown shared key `{0}`")]
    UnknownSharedKey(String),
    #[error("X-Twilio-Webhooks-Signature-Settings names unsupported algorithm `{0}`")]
    UnknownAlgorithm(String),
    #[error("X-Twilio-Webhooks-Signature-Settings is malformed")]
    MalformedSettings,
    /// `url` is the URL checked, without its query string (which holds `bodySHA256`): enough
    /// to see a `server.public_url` that differs from what Twilio calls.
    #[error("the signature does not match (url {url}, query string not shown)")]
    BadSignature { url: String },
}

impl WebhookAuthError {
    /// A stable name for logs and metrics (rate-limited log lines are counted per reason).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingBasic => "webhook_basic_missing",
            Self::WrongBasic => "webhook_basic_wrong",
            Self::MissingSignature => "webhook_signature_missing",
            Self::MissingBodyHash => "webhook_body_hash_missing",
            Self::BodyHashMismatch => "webhook_body_hash_mismatch",
            Self::UnknownSharedKey(_) => "webhook_shared_key_unknown",
            Self::UnknownAlgorithm(_) => "webhook_algorithm_unknown",
            Self::MalformedSettings => "webhook_settings_malformed",
            Self::BadSignature { .. } => "webhook_signature_mismatch",
        }
    }
}

pub fn authenticate(
    account: &AccountConfig,
    request: &WebhookCredentials<'_>,
) -> Result<(), WebhookAuthError> {
    if let Some(basic) = &account.webhook_basic_auth {
        let (user, password) = match request.authorization.and_then(parse_basic) {
            None => return Err(WebhookAuthError::MissingBasic),
            Some(None) => return Err(WebhookAuthError::WrongBasic),
            Some(Some(credentials)) => credentials,
        };
        // Both compared in full, so timing says nothing about which part was wrong.
        let user_ok = constant_time_eq(user.as_bytes(), basic.username.as_bytes());
        let pass_ok = constant_time_eq(password.as_bytes(), basic.password.expose().as_bytes());
        if !(user_ok & pass_ok) {
            return Err(WebhookAuthError::WrongBasic);
        }
    }
    if account.require_signature {
        check_signature(account, request)?;
    }
    Ok(())
}

fn check_signature(
    account: &AccountConfig,
    request: &WebhookCredentials<'_>,
) -> Result<(), WebhookAuthError> {
    let header = request
        .signature
        .ok_or(WebhookAuthError::MissingSignature)?;
    let params: Vec<(&str, &str)> = match request.params {
        Some(params) => params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        None => {
            let claimed_hash =
                body_hash_param(request.url).ok_or(WebhookAuthError::MissingBodyHash)?;
            if !claimed_hash.eq_ignore_ascii_case(&signature::body_sha256_hex(request.body)) {
                return Err(WebhookAuthError::BodyHashMismatch);
            }
            Vec::new()
        }
    };
    let keys: Vec<(&[u8], SignatureAlgorithm)> = match parse_settings(request.signature_settings)? {
        Some((key_id, alg)) => {
            let secret = account
                .shared_keys
                .iter()
                .find(|(id, _)| *id == key_id)
                .map(|(_, secret)| secret)
                .ok_or_else(|| WebhookAuthError::UnknownSharedKey(key_id.clone()))?;
            vec![(secret.expose().as_bytes(), alg)]
        }
        None => account
            .auth_tokens
            .iter()
            .map(|t| (t.expose().as_bytes(), SignatureAlgorithm::HmacSha1))
            .collect(),
    };
    let urls = signature::url_variants(request.url);
    for (key, alg) in &keys {
        for url in &urls {
            if signature::verify(*alg, key, url, &params, header) {
                return Ok(());
            }
        }
    }
    Err(WebhookAuthError::BadSignature {
        url: without_query(request.url).to_owned(),
    })
}

/// `key=<id>,algorithm=<HMAC_SHA1|HMAC_SHA256>`. No header, or no `algorithm=`, means the
/// legacy scheme (Auth Token, HMAC-SHA1).
fn parse_settings(
    header: Option<&str>,
) -> Result<Option<(String, SignatureAlgorithm)>, WebhookAuthError> {
    let Some(header) = header else {
        return Ok(None);
    };
    let mut key = None;
    let mut algorithm = None;
    for part in header.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, value) = part
            .split_once('=')
            .ok_or(WebhookAuthError::MalformedSettings)?;
        match name.trim() {
            "key" => key = Some(value.trim().to_owned()),
            "algorithm" => algorithm = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let Some(algorithm) = algorithm else {
        return Ok(None);
    };
    let alg = match algorithm.as_str() {
        "HMAC_SHA1" => SignatureAlgorithm::HmacSha1,
        "HMAC_SHA256" => SignatureAlgorithm::HmacSha256,
        _ => return Err(WebhookAuthError::UnknownAlgorithm(algorithm)),
    };
    let key = key
        .filter(|k| !k.is_empty())
        .ok_or(WebhookAuthError::MalformedSettings)?;
    Ok(Some((key, alg)))
}

/// The `bodySHA256` query parameter. Twilio sends it once; a URL carrying two different
/// values is refused rather than guessed at.
fn body_hash_param(url: &str) -> Option<&str> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    let mut found: Option<&str> = None;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("bodySHA256=") {
            match found {
                Some(previous) if previous != value => return None,
                _ => found = Some(value),
            }
        }
    }
    found.filter(|v| v.len() == 64)
}

/// The URL up to its query string or fragment: what a log line may say of it.
pub fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or_default()
}

/// `None`: not a Basic credential at all (no challenge answered yet). `Some(None)`: a Basic
/// credential that does not decode to `user:password`, which counts as wrong.
fn parse_basic(header: &str) -> Option<Option<(String, String)>> {
    let header = header.trim();
    let (scheme, encoded) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok();
    let text = decoded.and_then(|d| String::from_utf8(d).ok());
    Some(text.and_then(|t| {
        let (user, password) = t.split_once(':')?;
        Some((user.to_owned(), password.to_owned()))
    }))
}

/// Equality whose running time depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BasicAuth, Secret};
    use crate::domain::AccountSid;

    const BODY: &[u8] = br#"{"property": "value", "boolean": true}"#;
    const HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";

    fn account() -> AccountConfig {
        AccountConfig {
            sid: AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap(),
            auth_tokens: vec![Secret::new("12345"), Secret::new("67890")],
            shared_keys: vec![("k1".into(), Secret::new("sharedsecret"))],
            api_keys: vec![],
            webhook_basic_auth: None,
            require_signature: true,
            delivery: Default::default(),
            event_targets: Vec::new(),
        }
    }

    fn creds<'a>(url: &'a str, sig: Option<&'a str>) -> WebhookCredentials<'a> {
        WebhookCredentials {
            url,
            signature: sig,
            signature_settings: None,
            authorization: None,
            body: BODY,
            params: None,
        }
    }

    #[test]
    fn official_form_vectors_pass_over_the_url_and_the_sorted_parameters() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let call = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]);
        let repeated = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ]);
        for (url, params, sig) in [
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &call,
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            ),
            (
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &call,
                "kvajT1Ptam85bY51eRf/AJRuM3w=",
            ),
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &repeated,
                "IK+Dwps556ElfBT0I3Rgjkr1wJU=",
            ),
        ] {
            let request = WebhookCredentials {
                params: Some(params),
                ..creds(url, Some(sig))
            };
            assert_eq!(authenticate(&account(), &request), Ok(()), "{url} {sig}");
            // Another value, or a parameter left out, is another signature.
            let mut changed = params.clone();
            changed[0].1.push('0');
            let request = WebhookCredentials {
                params: Some(&changed),
                ..creds(url, Some(sig))
            };
            assert!(matches!(
                authenticate(&account(), &request),
                Err(WebhookAuthError::BadSignature { .. })
            ));
            let request = WebhookCredentials {
                params: Some(&params[1..]),
                ..creds(url, Some(sig))
            };
            assert!(authenticate(&account(), &request).is_err());
        }
    }

    #[test]
    fn official_json_vector_passes_with_either_auth_token() {
        let url = format!("https://mycompany.com/myapp.php?bodySHA256={HASH}");
        assert_eq!(
            authenticate(
                &account(),
                &creds(&url, Some("y77kIzt2vzLz71DgmJGsen2scGs="))
            ),
            Ok(())
        );
        let sig = signature::compute(SignatureAlgorithm::HmacSha1, b"67890", &url, &[]);
        assert_eq!(authenticate(&account(), &creds(&url, Some(&sig))), Ok(()));
        let sig = signature::compute(SignatureAlgorithm::HmacSha1, b"other", &url, &[]);
        assert!(matches!(
            authenticate(&account(), &creds(&url, Some(&sig))),
            Err(WebhookAuthError::BadSignature { .. })
        ));
    }

    #[test]
    fn body_must_match_its_hash() {
        let url = format!("https://mycompany.com/myapp.php?bodySHA256={HASH}");
        let mut c = creds(&url, Some("y77kIzt2vzLz71DgmJGsen2scGs="));
        c.body = br#"{"property": "value", "boolean": false}"#;
        assert_eq!(
            authenticate(&account(), &c),
            Err(WebhookAuthError::BodyHashMismatch)
        );
        let bare = "https://mycompany.com/myapp.php";
        assert_eq!(
            authenticate(&account(), &creds(bare, Some("x"))),
            Err(WebhookAuthError::MissingBodyHash)
        );
        assert_eq!(
            authenticate(&account(), &creds(&url, None)),
            Err(WebhookAuthError::MissingSignature)
        );
    }

    #[test]
    fn shared_key_with_sha256() {
        let url =
            format!("https://relay.example.com/v1/twilio/call-notifications?bodySHA256={HASH}");
        let sig = signature::compute(SignatureAlgorithm::HmacSha256, b"sharedsecret", &url, &[]);
        let mut c = creds(&url, Some(&sig));
        c.signature_settings = Some("key=k1,algorithm=HMAC_SHA256");
        assert_eq!(authenticate(&account(), &c), Ok(()));
        c.signature_settings = Some("key=k2,algorithm=HMAC_SHA256");
        assert_eq!(
            authenticate(&account(), &c),
            Err(WebhookAuthError::UnknownSharedKey("k2".into()))
        );
        c.signature_settings = Some("key=k1,algorithm=HMAC_MD5");
        assert_eq!(
            authenticate(&account(), &c),
            Err(WebhookAuthError::UnknownAlgorithm("HMAC_MD5".into()))
        );
        // Without algorithm= the legacy scheme applies, so the shared-key signature fails.
        c.signature_settings = Some("key=k1");
        assert!(authenticate(&account(), &c).is_err());
    }

    #[test]
    fn basic_credentials_when_configured() {
        let mut acc = account();
        acc.webhook_basic_auth = Some(BasicAuth {
            username: "twilio".into(),
            password: Secret::new("pw"),
        });
        let url = format!("https://mycompany.com/myapp.php?bodySHA256={HASH}");
        let mut c = creds(&url, Some("y77kIzt2vzLz71DgmJGsen2scGs="));
        assert_eq!(authenticate(&acc, &c), Err(WebhookAuthError::MissingBasic));
        // Another scheme is no Basic credential either: the challenge, not a refusal.
        c.authorization = Some("Bearer abc");
        assert_eq!(authenticate(&acc, &c), Err(WebhookAuthError::MissingBasic));
        let wrong = format!("Basic {}", STANDARD.encode("twilio:nope"));
        c.authorization = Some(&wrong);
        assert_eq!(authenticate(&acc, &c), Err(WebhookAuthError::WrongBasic));
        // Basic, but not base64 of user:password.
        for garbled in ["Basic", "Basic !!!", "basic dHdpbGlv"] {
            c.authorization = Some(garbled);
            assert_eq!(
                authenticate(&acc, &c),
                Err(WebhookAuthError::WrongBasic),
                "{garbled}"
            );
        }
        let right = format!("Basic {}", STANDARD.encode("twilio:pw"));
        c.authorization = Some(&right);
        assert_eq!(authenticate(&acc, &c), Ok(()));
        acc.require_signature = false;
        c.signature = None;
        assert_eq!(authenticate(&acc, &c), Ok(()));
    }

    #[test]
    fn a_bad_signature_names_the_url_without_its_query() {
        let url = format!("https://relay.example.com/v1/x?bodySHA256={HASH}&tenant=a");
        let err = authenticate(&account(), &creds(&url, Some("AAAA"))).unwrap_err();
        assert_eq!(
            err,
            WebhookAuthError::BadSignature {
                url: "https://relay.example.com/v1/x".into()
            }
        );
        assert!(!err.to_string().contains(HASH), "{err}");
        assert_eq!(without_query("https://h/p#frag?x"), "https://h/p");
    }

    #[test]
    fn conflicting_body_hash_parameters_are_refused() {
        let url = format!(
            "https://h/p?bodySHA256={HASH}&bodySHA256={}",
            "0".repeat(64)
        );
        assert_eq!(body_hash_param(&url), None);
        let url = format!("https://h/p?bodySHA256={HASH}&bodySHA256={HASH}");
        assert_eq!(body_hash_param(&url), Some(HASH));
    }
}
