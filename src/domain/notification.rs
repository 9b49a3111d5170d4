//! The call-notification webhook payload: the few members callrelay reads, and the raw bytes
//! it forwards untouched.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AccountSid, Identity};

pub const MAX_MESSAGE_ID_LEN: usize = 256;

/// A parsed call notification. `raw` is exactly what Twilio sent.
#[derive(Debug, Clone)]
pub struct CallNotification {
    pub raw: Bytes,
    pub account_sid: AccountSid,
    pub identity: Identity,
    /// `twi_message_id`: the key for dropping Twilio's retries of a delivered notification.
    pub message_id: Option<String>,
    /// `twi_call_sid`, `twi_from`, `twi_message_type`: what the call trace records. Read,
    /// never required: Twilio's payload is relayed whatever it holds.
    pub call_sid: Option<String>,
    pub from: Option<String>,
    pub message_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidNotification {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("the body must be a JSON object")]
    NotObject,
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("{0} is required and must be a string")]
    MissingString(&'static str),
    #[error("twi_account_sid: {0}")]
    AccountSid(String),
    #[error("twi_to must be `client:<identity>`{0}")]
    To(String),
    #[error("twi_message_id must be a string of at most {MAX_MESSAGE_ID_LEN} bytes")]
    MessageId,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    twi_account_sid: Option<&'a RawValue>,
    #[serde(borrow)]
    twi_to: Option<&'a RawValue>,
    #[serde(borrow)]
    twi_message_id: Option<&'a RawValue>,
    #[serde(borrow)]
    twi_call_sid: Option<&'a RawValue>,
    #[serde(borrow)]
    twi_from: Option<&'a RawValue>,
    #[serde(borrow)]
    twi_message_type: Option<&'a RawValue>,
}

/// The only `twi_message_type` that announces an incoming call.
pub const CALL_MESSAGE_TYPE: &str = "twilio.voice.call";

impl CallNotification {
    /// Whether this announces an incoming call (`twi_message_type` = `twilio.voice.call`).
    /// Anything else (Twilio has sent `twilio.voice.cancel`; a payload without a type) is
    /// relayed where it is safe, never as an APNs VoIP push, which iOS makes the app report
    /// to CallKit as a new call.
    pub fn is_call(&self) -> bool {
        self.message_type.as_deref() == Some(CALL_MESSAGE_TYPE)
    }

    pub fn parse(raw: Bytes) -> Result<Self, InvalidNotification> {
        // WebSocket text frames must be UTF-8; check the whole body, not only the members read.
        std::str::from_utf8(&raw).map_err(|_| InvalidNotification::NotUtf8)?;
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(InvalidNotification::NotObject);
        }
        let wire: Wire = serde_json::from_slice(&raw)
            .map_err(|e| InvalidNotification::NotJson(e.to_string()))?;
        let account = string(wire.twi_account_sid)
            .ok_or(InvalidNotification::MissingString("twi_account_sid"))?;
        let to = string(wire.twi_to).ok_or(InvalidNotification::MissingString("twi_to"))?;
        let account_sid =
            AccountSid::parse(&account).map_err(|e| InvalidNotification::AccountSid(e.0))?;
        let identity = to
            .strip_prefix("client:")
            .ok_or_else(|| InvalidNotification::To(String::new()))?;
        let identity =
            Identity::parse(identity).map_err(|e| InvalidNotification::To(format!(": {}", e.0)))?;
        let message_id = match wire.twi_message_id {
            None => None,
            Some(v) => match serde_json::from_str::<String>(v.get()) {
                Ok(id) if !id.is_empty() && id.len() <= MAX_MESSAGE_ID_LEN => Some(id),
                _ => return Err(InvalidNotification::MessageId),
            },
        };
        Ok(Self {
            account_sid,
            identity,
            message_id,
            call_sid: string(wire.twi_call_sid),
            from: string(wire.twi_from).map(|f| super::clipped(&f)),
            message_type: string(wire.twi_message_type).map(|t| super::clipped(&t)),
            raw,
        })
    }
}

fn string(value: Option<&RawValue>) -> Option<String> {
    value.and_then(|v| serde_json::from_str::<String>(v.get()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    fn parse(body: &str) -> Result<CallNotification, InvalidNotification> {
        CallNotification::parse(Bytes::copy_from_slice(body.as_bytes()))
    }

    #[test]
    fn reads_account_identity_and_message_id_and_keeps_the_bytes() {
        let body = format!(
            r#"{{"twi_account_sid":"{SID}","twi_to":"client:team:bob","twi_message_id":"RM1","twi_params":{{"a":1}}}}"#
        );
        let n = parse(&body).unwrap();
        assert_eq!(n.account_sid.as_str(), SID);
        assert_eq!(n.identity.as_str(), "team:bob");
        assert_eq!(n.message_id.as_deref(), Some("RM1"));
        assert_eq!(&n.raw[..], body.as_bytes());
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let n = parse(&format!(
            r#"{{"twi_account_sid":"{SID}","twi_to":"client:b\u006fb"}}"#
        ))
        .unwrap();
        assert_eq!(n.identity.as_str(), "bob");
    }

    #[test]
    fn each_malformed_class_has_its_error() {
        use InvalidNotification as E;
        let to = r#""twi_to":"client:bob""#;
        let acc = format!(r#""twi_account_sid":"{SID}""#);
        let cases: Vec<(String, E)> = vec![
            ("[1]".into(), E::NotObject),
            ("\"x\"".into(), E::NotObject),
            ("".into(), E::NotObject),
            ("{".into(), E::NotJson(String::new())),
            (format!("{{{to}}}"), E::MissingString("twi_account_sid")),
            (format!("{{{acc}}}"), E::MissingString("twi_to")),
            (
                format!(r#"{{{acc},"twi_to":5}}"#),
                E::MissingString("twi_to"),
            ),
            (
                format!(r#"{{{acc},"twi_to":null}}"#),
                E::MissingString("twi_to"),
            ),
            (
                format!(r#"{{"twi_account_sid":"AC1",{to}}}"#),
                E::AccountSid(String::new()),
            ),
            (format!(r#"{{{acc},"twi_to":"bob"}}"#), E::To(String::new())),
            (
                format!(r#"{{{acc},"twi_to":"client:"}}"#),
                E::To(String::new()),
            ),
            (
                format!(r#"{{{acc},{to},"twi_message_id":7}}"#),
                E::MessageId,
            ),
            (format!(r#"{{{acc},{to},{to}}}"#), E::NotJson(String::new())),
        ];
        for (body, expected) in cases {
            let err = parse(&body).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&err),
                std::mem::discriminant(&expected),
                "{body}: {err}"
            );
        }
        let err = CallNotification::parse(Bytes::from_static(b"{\"a\":\"\xff\"}")).unwrap_err();
        assert_eq!(err, E::NotUtf8);
    }
}
