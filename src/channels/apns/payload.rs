//! What an APNs request carries for each push type: the topic suffix, `apns-push-type`,
//! `apns-priority`, the body, and Apple's size limits.
//!
//! VoIP pushes carry Twilio's payload byte for byte (PushKit hands it to the app, and the
//! Twilio SDK reads the `twi_*` members at the top level). Alert and background pushes must have
//! an `aps` dictionary, so they get the payload's members plus `aps`, added by splicing before
//! the closing brace: every byte Twilio sent is still there, in order.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::domain::PushType;

/// Apple's limit for VoIP notification payloads.
pub const VOIP_LIMIT: usize = 5120;
/// Apple's limit for every other remote notification.
pub const OTHER_LIMIT: usize = 4096;

/// The headers that depend on the push type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Appended to the app's topic: `.voip` for PushKit.
    pub topic_suffix: &'static str,
    pub push_type: &'static str,
    /// Apple requires 5 for background pushes; 10 delivers at once.
    pub priority: &'static str,
    pub limit: usize,
}

pub fn kind(push_type: PushType) -> Kind {
    match push_type {
        PushType::Voip => Kind {
            topic_suffix: ".voip",
            push_type: "voip",
            priority: "10",
            limit: VOIP_LIMIT,
        },
        PushType::Alert => Kind {
            topic_suffix: "",
            push_type: "alert",
            priority: "10",
            limit: OTHER_LIMIT,
        },
        PushType::Background => Kind {
            topic_suffix: "",
            push_type: "background",
            priority: "5",
            limit: OTHER_LIMIT,
        },
    }
}

/// Why a payload cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error(
        "the {push_type} payload is {size} bytes, over Apple's limit of {limit} bytes; not sent"
    )]
    TooLarge {
        push_type: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("the payload is not a JSON object; cannot add `aps`")]
    NotAnObject,
}

/// The request body for a push of `push_type` carrying the webhook `raw` bytes.
pub fn body(push_type: PushType, raw: &Bytes, alert_template: &str) -> Result<Bytes, PayloadError> {
    let kind = kind(push_type);
    let body = match push_type {
        PushType::Voip => raw.clone(),
        PushType::Alert => {
            let members = members(raw);
            let text = alert_text(alert_template, members.as_ref());
            let aps = serde_json::json!({"alert": {"body": text}, "sound": "default"});
            with_aps(raw, members.as_ref(), &aps)?
        }
        PushType::Background => {
            let members = members(raw);
            let aps = serde_json::json!({"content-available": 1});
            with_aps(raw, members.as_ref(), &aps)?
        }
    };
    if body.len() > kind.limit {
        return Err(PayloadError::TooLarge {
            push_type: kind.push_type,
            size: body.len(),
            limit: kind.limit,
        });
    }
    Ok(body)
}

/// The two top-level members shaping needs. `None` when the payload cannot be read this way
/// (a duplicated `aps` or `twi_from`): the rebuilding path copes with those.
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(borrow, default)]
    twi_from: Option<&'a RawValue>,
    #[serde(borrow, default)]
    aps: Option<&'a RawValue>,
}

fn members(raw: &[u8]) -> Option<Members<'_>> {
    serde_json::from_slice(raw).ok()
}

/// The alert text: the template with `{from}` replaced by the caller, as Twilio names it in
/// `twi_from` (`client:alice` for a Twilio Client caller, a phone number otherwise).
fn alert_text(template: &str, members: Option<&Members<'_>>) -> String {
    let from = members
        .and_then(|m| m.twi_from)
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
        .map(|f| f.strip_prefix("client:").map(str::to_owned).unwrap_or(f))
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "unknown caller".to_owned());
    template.replace("{from}", &from)
}

fn with_aps(
    raw: &Bytes,
    members: Option<&Members<'_>>,
    aps: &serde_json::Value,
) -> Result<Bytes, PayloadError> {
    match members {
        Some(m) if m.aps.is_none() => splice(raw, aps),
        // The payload has its own `aps` (or could not be read member by member): Apple reads
        // only one, so ours replaces it, at the price of re-serialising.
        _ => rebuild(raw, aps),
    }
}

/// `{…}` becomes `{…,"aps":{…}}`, keeping every original byte.
fn splice(raw: &Bytes, aps: &serde_json::Value) -> Result<Bytes, PayloadError> {
    let close = raw
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .filter(|&i| raw[i] == b'}')
        .ok_or(PayloadError::NotAnObject)?;
    let open = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .filter(|&i| raw[i] == b'{')
        .ok_or(PayloadError::NotAnObject)?;
    let empty = raw[open + 1..close].iter().all(u8::is_ascii_whitespace);
    let aps = aps.to_string();
    let mut out = BytesMut::with_capacity(raw.len() + aps.len() + 8);
    out.put_slice(&raw[..close]);
    if !empty {
        out.put_u8(b',');
    }
    out.put_slice(b"\"aps\":");
    out.put_slice(aps.as_bytes());
    out.put_slice(&raw[close..]);
    Ok(out.freeze())
}

fn rebuild(raw: &Bytes, aps: &serde_json::Value) -> Result<Bytes, PayloadError> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(raw).map_err(|_| PayloadError::NotAnObject)?;
    object.insert("aps".to_owned(), aps.clone());
    Ok(Bytes::from(
        serde_json::to_vec(&object).expect("a JSON map serialises"),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const TEMPLATE: &str = "Incoming call from {from}";

    fn payload() -> Bytes {
        Bytes::from_static(
            br#"{ "twi_account_sid":"AC0123456789abcdef0123456789abcdef", "twi_from" : "client:alice",
  "twi_to":"client:bob", "n": 1.50e3, "s": "\u00e9" }  "#,
        )
    }

    #[test]
    fn voip_is_the_payload_untouched() {
        let raw = payload();
        assert_eq!(body(PushType::Voip, &raw, TEMPLATE).unwrap(), raw);
        let k = kind(PushType::Voip);
        assert_eq!(
            (k.topic_suffix, k.push_type, k.priority),
            (".voip", "voip", "10")
        );
    }

    #[test]
    fn alert_keeps_every_byte_and_adds_aps() {
        let raw = payload();
        let out = body(PushType::Alert, &raw, TEMPLATE).unwrap();
        let close = raw.iter().rposition(|&b| b == b'}').unwrap();
        // Everything up to the closing brace, byte for byte, then the new member.
        assert_eq!(&out[..close], &raw[..close]);
        assert_eq!(
            &out[close..],
            &br#","aps":{"alert":{"body":"Incoming call from alice"},"sound":"default"}}  "#[..]
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["n"], json!(1500.0));
        assert_eq!(v["s"], "é");
        let k = kind(PushType::Alert);
        assert_eq!(
            (k.topic_suffix, k.push_type, k.priority),
            ("", "alert", "10")
        );
    }

    #[test]
    fn background_adds_content_available_at_priority_5() {
        let raw = Bytes::from_static(br#"{"twi_to":"client:bob"}"#);
        let out = body(PushType::Background, &raw, TEMPLATE).unwrap();
        assert_eq!(
            &out[..],
            br#"{"twi_to":"client:bob","aps":{"content-available":1}}"#
        );
        let k = kind(PushType::Background);
        assert_eq!(
            (k.topic_suffix, k.push_type, k.priority),
            ("", "background", "5")
        );
    }

    #[test]
    fn an_empty_object_gets_no_comma() {
        let raw = Bytes::from_static(b" { \n } ");
        let out = body(PushType::Background, &raw, TEMPLATE).unwrap();
        assert_eq!(&out[..], &b" { \n \"aps\":{\"content-available\":1}} "[..]);
        serde_json::from_slice::<Value>(&out).unwrap();
    }

    #[test]
    fn an_existing_aps_is_replaced() {
        let raw = Bytes::from_static(br#"{"twi_from":"+14155550100","aps":{"badge":3},"x":[1]}"#);
        let out = body(PushType::Alert, &raw, TEMPLATE).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({
                "twi_from": "+14155550100",
                "x": [1],
                "aps": {"alert": {"body": "Incoming call from +14155550100"}, "sound": "default"}
            })
        );
        // A duplicated `aps` cannot be read member by member; the rebuilt object has one.
        let raw = Bytes::from_static(br#"{"aps":1,"aps":2}"#);
        let out = body(PushType::Background, &raw, TEMPLATE).unwrap();
        assert_eq!(&out[..], br#"{"aps":{"content-available":1}}"#);
    }

    #[test]
    fn alert_text_escapes_and_copes_without_a_caller() {
        let raw = Bytes::from_static(br#"{"twi_from":"client:\"q\"\\"}"#);
        let out = body(PushType::Alert, &raw, "{from} calls ({from})").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["aps"]["alert"]["body"], r#""q"\ calls ("q"\)"#);
        let raw = Bytes::from_static(br#"{"twi_from":7}"#);
        let out = body(PushType::Alert, &raw, TEMPLATE).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["aps"]["alert"]["body"],
            "Incoming call from unknown caller"
        );
    }

    fn of_size(n: usize) -> Bytes {
        // {"p":"xxx…"} is n bytes.
        let filler = "x".repeat(n - 8);
        Bytes::from(format!(r#"{{"p":"{filler}"}}"#))
    }

    #[test]
    fn size_limits_are_apples() {
        assert_eq!(of_size(5120).len(), 5120);
        assert!(body(PushType::Voip, &of_size(5120), TEMPLATE).is_ok());
        let err = body(PushType::Voip, &of_size(5121), TEMPLATE).unwrap_err();
        assert_eq!(
            err,
            PayloadError::TooLarge {
                push_type: "voip",
                size: 5121,
                limit: 5120
            }
        );
        let reason = err.to_string();
        assert!(
            reason.contains("5121") && reason.contains("5120"),
            "{reason}"
        );
        // The limit applies to what is sent, `aps` included.
        let aps_len = r#","aps":{"content-available":1}"#.len();
        assert!(body(PushType::Background, &of_size(4096 - aps_len), TEMPLATE).is_ok());
        assert!(matches!(
            body(PushType::Background, &of_size(4097 - aps_len), TEMPLATE),
            Err(PayloadError::TooLarge {
                size: 4097,
                limit: 4096,
                ..
            })
        ));
        assert!(matches!(
            body(PushType::Alert, &of_size(4096), TEMPLATE),
            Err(PayloadError::TooLarge { limit: 4096, .. })
        ));
    }
}
