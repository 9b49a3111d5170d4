//! `[[accounts.event_targets]]`: the HTTP endpoints an account's events are forwarded to,
//! each signed per the Standard Webhooks specification with the target's own secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::raw::RawEventTarget;
use super::secret::Secret;
use super::{ConfigError, secret, validate_base_url};

/// One forwarding target.
#[derive(Debug, Clone)]
pub struct EventTarget {
    /// Unique within the account; names the target's forwarding state and its metrics.
    pub name: String,
    pub url: String,
    /// Event types forwarded (`*` matches any run of characters); all when empty.
    pub types: Vec<String>,
    /// `whsec_` and the base64 of the signing key, as Standard Webhooks secrets are written.
    pub secret: Secret,
}

impl EventTarget {
    /// The signing key: the secret's base64 part, decoded (checked when configured).
    pub fn key(&self) -> Vec<u8> {
        decode_secret(self.secret.expose()).unwrap_or_default()
    }
}

/// A Standard Webhooks secret: `whsec_` (optional) and 24 to 64 bytes in base64.
fn decode_secret(text: &str) -> Option<Vec<u8>> {
    let key = STANDARD
        .decode(text.strip_prefix("whsec_").unwrap_or(text))
        .ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub fn validate(key: &str, raw: Vec<RawEventTarget>) -> Result<Vec<EventTarget>, ConfigError> {
    let mut targets: Vec<EventTarget> = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let tkey = format!("{key}.event_targets[{i}]");
        let target = validate_one(&tkey, t)?;
        if targets.iter().any(|other| other.name == target.name) {
            return Err(ConfigError::invalid(
                format!("{tkey}.name"),
                format!("`{}` names two targets of this account", target.name),
            ));
        }
        targets.push(target);
    }
    Ok(targets)
}

/// One target's settings, each error naming `tkey.<setting>` (the configuration's path, or
/// the admin API's member).
pub fn validate_one(tkey: &str, t: RawEventTarget) -> Result<EventTarget, ConfigError> {
    let name = t
        .name
        .ok_or_else(|| ConfigError::invalid(format!("{tkey}.name"), "is required"))?;
    if !valid_name(&name) {
        return Err(ConfigError::invalid(
            format!("{tkey}.name"),
            "must be 1 to 64 of A-Z a-z 0-9 . _ -",
        ));
    }
    let url = t
        .url
        .ok_or_else(|| ConfigError::invalid(format!("{tkey}.url"), "is required"))?;
    // Checked like a base URL, but kept as written: a trailing slash can matter to the
    // target's router (and forwarding follows no redirect).
    validate_base_url(
        &format!("{tkey}.url"),
        &url,
        "the target authenticates callrelay by its signature",
    )?;
    let secret = secret(&format!("{tkey}.secret"), t.secret, t.secret_file)?
        .ok_or_else(|| ConfigError::invalid(format!("{tkey}.secret"), "is required"))?;
    if decode_secret(secret.expose()).is_none() {
        return Err(ConfigError::invalid(
            format!("{tkey}.secret"),
            "must be a Standard Webhooks secret: whsec_ and 24 to 64 bytes in base64",
        ));
    }
    Ok(EventTarget {
        name,
        url,
        types: t.types.into_iter().filter(|t| !t.is_empty()).collect(),
        secret,
    })
}

/// A new Standard Webhooks secret: `whsec_` and 32 bytes in base64, from two v4 UUIDs (the
/// operating system's random source; 244 of the 256 bits are random).
pub fn new_secret() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("whsec_{}", STANDARD.encode(bytes))
}
