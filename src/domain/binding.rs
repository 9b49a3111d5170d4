//! Push bindings: what clients send, what is stored and returned, and the rules both follow.
//! The same rules are written as JSON Schema in `bindings-schema/`; a test checks that the
//! schema and [`BindingRequest::parse`] agree on every example there.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{AccountSid, BindingId, Identity};

/// The push services a stored binding can name. (WebSocket bindings are live connections,
/// not stored bindings.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushChannel {
    Apns,
    Fcm,
}

impl PushChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apns => "apns",
            Self::Fcm => "fcm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    Production,
    Sandbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushType {
    Voip,
    Alert,
    Background,
}

/// Twilio's own registrations live a year; so do callrelay's unless told otherwise.
pub const DEFAULT_TTL_SECONDS: u64 = 31_536_000;
pub const MIN_TTL_SECONDS: u64 = 60;
pub const MAX_TTL_SECONDS: u64 = 31_536_000;
pub const MAX_ADDRESS_LEN: usize = 4096;
pub const MAX_DEVICE_ID_LEN: usize = 256;
pub const MAX_APP_NAME_LEN: usize = 64;

/// A stored push binding, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub id: BindingId,
    pub account_sid: AccountSid,
    pub identity: Identity,
    pub channel: PushChannel,
    pub address: String,
    pub app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apns_environment: Option<ApnsEnvironment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_type: Option<PushType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub ttl_seconds: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Binding {
    /// Bob's binding `b1` to `address` through `app`, created at `now` for a minute: for unit
    /// tests.
    #[cfg(test)]
    pub fn example(channel: PushChannel, app: &str, address: &str, now: OffsetDateTime) -> Self {
        Self {
            id: BindingId::parse("b1").unwrap(),
            account_sid: AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap(),
            identity: Identity::parse("bob").unwrap(),
            channel,
            address: address.into(),
            app: app.into(),
            apns_environment: None,
            push_type: None,
            device_id: None,
            ttl_seconds: 60,
            created_at: now,
            updated_at: now,
            expires_at: now + Duration::from_secs(60),
        }
    }

    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at <= now
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_seconds)
    }

    /// The binding as it stands after a registration or successful push at `now`.
    pub fn refreshed(&self, now: OffsetDateTime) -> Self {
        let now = whole_millis(now);
        Self {
            updated_at: now,
            expires_at: now + self.ttl(),
            ..self.clone()
        }
    }
}

/// `t` to the millisecond: a binding's times are kept in whole milliseconds, the precision
/// the stores keep them in (`store/redis/lines.rs`), so what a registration answers is what a
/// later read returns.
pub fn whole_millis(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .expect("a whole number of milliseconds is a valid nanosecond")
}

/// A binding as a client sends it, checked field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRequest {
    pub id: Option<BindingId>,
    pub account_sid: Option<AccountSid>,
    pub identity: Option<Identity>,
    pub channel: PushChannel,
    pub address: String,
    pub app: Option<String>,
    pub apns_environment: Option<ApnsEnvironment>,
    pub push_type: Option<PushType>,
    pub device_id: Option<String>,
    pub ttl_seconds: u64,
}

impl BindingRequest {
    /// The binding this request registers at `now`, once the caller's (account, identity)
    /// and the app serving it are settled.
    pub fn into_binding(
        self,
        id: BindingId,
        account_sid: AccountSid,
        identity: Identity,
        app: String,
        now: OffsetDateTime,
    ) -> Binding {
        let now = whole_millis(now);
        Binding {
            id,
            account_sid,
            identity,
            channel: self.channel,
            address: self.address,
            app,
            apns_environment: self.apns_environment,
            push_type: self.push_type,
            device_id: self.device_id,
            ttl_seconds: self.ttl_seconds,
            created_at: now,
            updated_at: now,
            expires_at: now + Duration::from_secs(self.ttl_seconds),
        }
    }
}

/// Why a binding was refused; `field` names the member (empty for the document itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct InvalidBinding {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidBinding {
    InvalidBinding {
        field: field.to_owned(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default, deserialize_with = "present")]
    id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    account_sid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    identity: Option<String>,
    #[serde(default, deserialize_with = "present")]
    channel: Option<PushChannel>,
    #[serde(default, deserialize_with = "present")]
    address: Option<String>,
    #[serde(default, deserialize_with = "present")]
    app: Option<String>,
    #[serde(default, deserialize_with = "present")]
    apns_environment: Option<ApnsEnvironment>,
    #[serde(default, deserialize_with = "present")]
    push_type: Option<PushType>,
    #[serde(default, deserialize_with = "present")]
    device_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    ttl_seconds: Option<u64>,
}

/// An optional member, when present, must hold a value: `null` is refused rather than read as
/// "absent", as the JSON Schema says.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl BindingRequest {
    pub fn parse(body: &[u8]) -> Result<Self, InvalidBinding> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(invalid("", "the body must be a JSON object"));
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let wire: Wire = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            invalid(&field, strip_position(&e.into_inner().to_string()))
        })?;
        de.end()
            .map_err(|_| invalid("", "trailing characters after the JSON object"))?;
        Self::from_wire(wire)
    }

    fn from_wire(w: Wire) -> Result<Self, InvalidBinding> {
        let id =
            w.id.map(|v| BindingId::parse(&v).map_err(|e| invalid("id", e.0)))
                .transpose()?;
        let account_sid = w
            .account_sid
            .map(|v| AccountSid::parse(&v).map_err(|e| invalid("account_sid", e.0)))
            .transpose()?;
        let identity = w
            .identity
            .map(|v| Identity::parse(&v).map_err(|e| invalid("identity", e.0)))
            .transpose()?;
        let channel = w
            .channel
            .ok_or_else(|| invalid("channel", "is required (apns or fcm)"))?;
        let address = w
            .address
            .ok_or_else(|| invalid("address", "is required (the device token)"))?;
        check_address(channel, &address)?;
        let address = normalise_address(channel, address);
        if let Some(app) = &w.app {
            check_app_name(app).map_err(|m| invalid("app", m))?;
        }
        if channel != PushChannel::Apns {
            if w.apns_environment.is_some() {
                return Err(invalid("apns_environment", "applies to apns bindings only"));
            }
            if w.push_type.is_some() {
                return Err(invalid("push_type", "applies to apns bindings only"));
            }
        }
        if let Some(device_id) = &w.device_id
            && !valid_device_id(device_id)
        {
            return Err(invalid(
                "device_id",
                format!("must be 1 to {MAX_DEVICE_ID_LEN} bytes without control characters"),
            ));
        }
        let ttl_seconds = w.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
        if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(invalid(
                "ttl_seconds",
                format!("must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}"),
            ));
        }
        let (apns_environment, push_type) = if channel == PushChannel::Apns {
            (
                Some(w.apns_environment.unwrap_or(ApnsEnvironment::Production)),
                Some(w.push_type.unwrap_or(PushType::Voip)),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            id,
            account_sid,
            identity,
            channel,
            address,
            app: w.app,
            apns_environment,
            push_type,
            device_id: w.device_id,
            ttl_seconds,
        })
    }
}

/// A device identifier: 1 to 256 bytes without control characters.
pub fn valid_device_id(device_id: &str) -> bool {
    !device_id.is_empty()
        && device_id.len() <= MAX_DEVICE_ID_LEN
        && !device_id.chars().any(char::is_control)
}

/// App names as configured and as named by bindings.
pub fn check_app_name(name: &str) -> Result<(), String> {
    let ok = (1..=MAX_APP_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "an app name is 1 to {MAX_APP_NAME_LEN} characters from A-Z, a-z, 0-9, '.', '_' and '-'"
        ))
    }
}

fn check_address(channel: PushChannel, address: &str) -> Result<(), InvalidBinding> {
    match channel {
        // APNs device tokens are hexadecimal (64 digits today; Apple says the length may grow).
        PushChannel::Apns => {
            if (32..=512).contains(&address.len()) && address.bytes().all(|b| b.is_ascii_hexdigit())
            {
                Ok(())
            } else {
                Err(invalid(
                    "address",
                    "an APNs device token is 32 to 512 hexadecimal digits",
                ))
            }
        }
        // FCM registration tokens use letters, digits and a few separators.
        PushChannel::Fcm => {
            let ok = (1..=MAX_ADDRESS_LEN).contains(&address.len())
                && address.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'_' | b'~' | b':' | b'+' | b'/' | b'=' | b'-')
                });
            if ok {
                Ok(())
            } else {
                Err(invalid(
                    "address",
                    format!(
                        "an FCM registration token is 1 to {MAX_ADDRESS_LEN} characters from A-Z, a-z, 0-9 and . _ ~ : + / = -"
                    ),
                ))
            }
        }
    }
}

/// One device, one spelling. An APNs token is a hexadecimal rendering of bytes, and apps
/// render them in either case (`%02x` or `%02X`): kept as sent, `ABCD…` and `abcd…` would be
/// two index entries for one phone, which could then ring for two identities. FCM tokens are
/// opaque and case-sensitive: kept exactly as sent.
fn normalise_address(channel: PushChannel, address: String) -> String {
    match channel {
        PushChannel::Apns => address.to_ascii_lowercase(),
        PushChannel::Fcm => address,
    }
}

/// serde_json appends " at line 1 column 17"; the field path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";

    #[test]
    fn minimal_apns_binding_gets_defaults() {
        let b = BindingRequest::parse(
            format!(r#"{{"channel":"apns","address":"{TOKEN}"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(b.apns_environment, Some(ApnsEnvironment::Production));
        assert_eq!(b.push_type, Some(PushType::Voip));
        assert_eq!(b.ttl_seconds, DEFAULT_TTL_SECONDS);
    }

    #[test]
    fn apns_tokens_are_lowercased_and_fcm_tokens_kept_as_sent() {
        let upper = TOKEN.to_ascii_uppercase();
        let mixed: String = TOKEN
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        for sent in [upper.as_str(), mixed.as_str(), TOKEN] {
            let b = BindingRequest::parse(
                format!(r#"{{"channel":"apns","address":"{sent}"}}"#).as_bytes(),
            )
            .unwrap();
            assert_eq!(b.address, TOKEN, "{sent}");
        }
        let fcm = "fKz8R2sWQkG3Yh1t9XcV0p:APA91bH7uQ2xZr5kLm8N-_w";
        let b =
            BindingRequest::parse(format!(r#"{{"channel":"fcm","address":"{fcm}"}}"#).as_bytes())
                .unwrap();
        assert_eq!(b.address, fcm);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"channel":"sms","address":"x"}"#, "channel"),
            (r#"{"channel":"fcm"}"#, "address"),
            (r#"{"channel":"fcm","address":5}"#, "address"),
            (r#"{"channel":"fcm","address":"a b"}"#, "address"),
            (r#"{"channel":"apns","address":"xyz"}"#, "address"),
            (
                r#"{"channel":"fcm","address":"t","push_type":"voip"}"#,
                "push_type",
            ),
            (
                r#"{"channel":"fcm","address":"t","ttl_seconds":5}"#,
                "ttl_seconds",
            ),
            (
                r#"{"channel":"fcm","address":"t","ttl_seconds":-5}"#,
                "ttl_seconds",
            ),
            (r#"{"channel":"fcm","address":"t","id":"a/b"}"#, "id"),
            (
                r#"{"channel":"fcm","address":"t","account_sid":"AC1"}"#,
                "account_sid",
            ),
            (
                r#"{"channel":"fcm","address":"t","identity":""}"#,
                "identity",
            ),
            (
                r#"{"channel":"fcm","address":"t","created_at":"now"}"#,
                "created_at",
            ),
        ];
        for (body, field) in cases {
            let err = BindingRequest::parse(body.as_bytes()).unwrap_err();
            assert_eq!(&err.field, field, "{body}: {err}");
        }
    }

    #[test]
    fn non_objects_and_trailing_data_are_refused() {
        for body in ["[]", "\"x\"", "", "{} {}", "{"] {
            assert!(BindingRequest::parse(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn refresh_moves_expiry_by_the_ttl() {
        // Whole milliseconds: a refresh keeps a binding's times in the stores' precision.
        let now = whole_millis(OffsetDateTime::now_utc());
        let b = Binding {
            expires_at: now,
            ..Binding::example(PushChannel::Fcm, "android", "t", now)
        };
        assert!(b.is_expired(now));
        let later = now + Duration::from_secs(10);
        let r = b.refreshed(later);
        assert_eq!(r.expires_at, later + Duration::from_secs(60));
        let r = b.refreshed(later + Duration::from_nanos(1_999_999));
        assert_eq!(r.updated_at, later + Duration::from_millis(1));
        assert_eq!(r.created_at, now);
        assert!(!r.is_expired(later));
    }
}
