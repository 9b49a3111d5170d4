//! Identifier newtypes. Each is parsed once at the edge; code past the edge takes the type and
//! never re-checks it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused; the text is shown to API callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub String);

fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A Twilio account SID: `AC` followed by 32 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountSid(String);
string_newtype!(AccountSid);

impl AccountSid {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        if is_sid(value, "AC") {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidId(
                "an account SID is `AC` followed by 32 hexadecimal digits".into(),
            ))
        }
    }
}

/// A resource SID callrelay keeps records under: `prefix`, then 1 to 62 letters and digits.
/// Twilio's are 32 hexadecimal digits; any letters and digits are taken, so that a SID of
/// another shape still reads, and nothing else is, since it names a Redis key.
fn is_resource_sid(value: &str, prefix: &str) -> bool {
    (3..=64).contains(&value.len())
        && value.starts_with(prefix)
        && value.bytes().all(|b| b.is_ascii_alphanumeric())
}

macro_rules! resource_sid {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);
        string_newtype!($name);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                if is_resource_sid(value, $prefix) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(InvalidId(
                        concat!(
                            "a ",
                            $what,
                            " SID is `",
                            $prefix,
                            "` followed by letters and digits"
                        )
                        .into(),
                    ))
                }
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

resource_sid!(CallSid, "CA", "call");
resource_sid!(RoomSid, "RM", "room");

/// A Twilio API key SID: `SK` followed by 32 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKeySid(String);
string_newtype!(ApiKeySid);

impl ApiKeySid {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        if is_sid(value, "SK") {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidId(
                "an API key SID is `SK` followed by 32 hexadecimal digits".into(),
            ))
        }
    }
}

/// A Twilio Client identity, as in `client:<identity>`.
///
/// Twilio lets identities contain `:` and most printable characters; callrelay refuses only
/// what cannot be handled safely: empty values, control characters, and more than 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(String);
string_newtype!(Identity);

impl Identity {
    pub const MAX_LEN: usize = 256;

    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        if value.is_empty() {
            return Err(InvalidId("the identity is empty".into()));
        }
        if value.len() > Self::MAX_LEN {
            return Err(InvalidId(format!(
                "the identity is longer than {} bytes",
                Self::MAX_LEN
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(InvalidId(
                "the identity contains a control character".into(),
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

/// A binding ID: 1 to 128 characters from `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingId(String);
string_newtype!(BindingId);

impl BindingId {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let ok = (1..=128).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidId(
                "a binding id is 1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-'".into(),
            ))
        }
    }

    /// A fresh server-assigned id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_and_room_sids_are_checked_before_they_name_a_key() {
        assert!(CallSid::parse("CA0123456789abcdef0123456789abcdef").is_ok());
        assert!(RoomSid::parse("RM0123456789abcdef0123456789abcdef").is_ok());
        for bad in [
            "CA",
            "CA1:}{x",
            "RM0123",
            "",
            &format!("CA{}", "a".repeat(80)),
        ] {
            assert!(CallSid::parse(bad).is_err(), "{bad}");
        }
        assert!(RoomSid::parse("CA0123").is_err());
    }

    #[test]
    fn account_sid_accepts_only_ac_and_32_hex_digits() {
        assert!(AccountSid::parse("AC0123456789abcdef0123456789abcdef").is_ok());
        assert!(AccountSid::parse("AC0123456789ABCDEF0123456789ABCDEF").is_ok());
        assert!(AccountSid::parse("SK0123456789abcdef0123456789abcdef").is_err());
        assert!(AccountSid::parse("AC0123456789abcdef0123456789abcde").is_err());
        assert!(AccountSid::parse("AC0123456789abcdef0123456789abcdeg").is_err());
        assert!(AccountSid::parse("").is_err());
    }

    #[test]
    fn api_key_sid_needs_sk() {
        assert!(ApiKeySid::parse("SK0123456789abcdef0123456789abcdef").is_ok());
        assert!(ApiKeySid::parse("AC0123456789abcdef0123456789abcdef").is_err());
    }

    #[test]
    fn identity_allows_colons_and_unicode_but_not_control_characters() {
        assert!(Identity::parse("bob").is_ok());
        assert!(Identity::parse("team:sales:bob").is_ok());
        assert!(Identity::parse("zoë").is_ok());
        assert!(Identity::parse("").is_err());
        assert!(Identity::parse("bo\nb").is_err());
        assert!(Identity::parse(&"x".repeat(256)).is_ok());
        assert!(Identity::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn binding_id_charset_and_length() {
        assert!(BindingId::parse("bob-iphone_2.0").is_ok());
        assert!(BindingId::parse(&"a".repeat(128)).is_ok());
        assert!(BindingId::parse(&"a".repeat(129)).is_err());
        assert!(BindingId::parse("").is_err());
        assert!(BindingId::parse("a/b").is_err());
        assert!(BindingId::parse("a b").is_err());
        let generated = BindingId::generate();
        assert!(BindingId::parse(generated.as_str()).is_ok());
    }
}
