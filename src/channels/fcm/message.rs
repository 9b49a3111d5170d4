//! The FCM message for a call notification: a data message whose `data` map holds every
//! top-level member of the webhook payload, because that map is what the Android Voice SDK's
//! `Voice.handleMessage(context, Map<String, String>, listener)` reads.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

/// FCM refuses data payloads over 4096 bytes, counted as the keys' and values' lengths.
pub const MAX_DATA_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("the notification is not a JSON object: {0}")]
    NotObject(String),
    #[error(
        "the FCM data map would be {size} bytes (keys plus values), over FCM's limit of {limit} bytes"
    )]
    TooLarge { size: usize, limit: usize },
}

/// The `data` map for a payload: string members exactly as they are, every other member as
/// its JSON text (compact). Nothing is added and nothing dropped.
///
/// Non-string members are taken from the payload's own text rather than re-serialised, so
/// number literals (`1.50e3`, integers beyond 64 bits) and member order inside nested objects
/// survive as Twilio wrote them; only insignificant whitespace is removed.
pub fn data_map(raw: &[u8]) -> Result<BTreeMap<String, String>, MessageError> {
    let members: BTreeMap<String, &RawValue> =
        serde_json::from_slice(raw).map_err(|e| MessageError::NotObject(e.to_string()))?;
    let mut data = BTreeMap::new();
    let mut size = 0;
    for (key, value) in members {
        let text = value.get();
        let value = if text.starts_with('"') {
            serde_json::from_str::<String>(text)
                .map_err(|e| MessageError::NotObject(e.to_string()))?
        } else {
            compact(text)
        };
        size += key.len() + value.len();
        data.insert(key, value);
    }
    if size > MAX_DATA_BYTES {
        return Err(MessageError::TooLarge {
            size,
            limit: MAX_DATA_BYTES,
        });
    }
    Ok(data)
}

/// Drops whitespace outside strings from valid JSON text.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

#[derive(Serialize)]
struct SendRequest<'a> {
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    token: &'a str,
    data: &'a BTreeMap<String, String>,
    android: Android<'a>,
}

/// High priority wakes the device from Doze at once, as a ringing call needs; the TTL keeps
/// a late push from ringing for a call that has ended.
#[derive(Serialize)]
struct Android<'a> {
    priority: &'static str,
    ttl: &'a str,
}

/// The `messages:send` request body, serialised once and reused by retries.
pub fn request_body(token: &str, data: &BTreeMap<String, String>, ttl: &str) -> Bytes {
    let body = SendRequest {
        message: Message {
            token,
            data,
            android: Android {
                priority: "HIGH",
                ttl,
            },
        },
    };
    Bytes::from(serde_json::to_vec(&body).expect("strings always serialise"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn strings_stay_as_they_are_and_other_values_become_their_json_text() {
        let raw = br#"{
            "twi_to": "client:bob",
            "twi_params": "foo=bar%20baz&x=%C3%A9",
            "escaped": "line\nbreak \"quoted\" \u00e9",
            "empty": "",
            "n": 42, "neg": -7, "f": 1.50e3, "big": 123456789012345678901234567890,
            "t": true, "no": false, "nil": null,
            "nested": { "z": 1, "a": [ true, null, "x y", {"k" : "v"} ] },
            "list": [ ]
        }"#;
        assert_eq!(
            data_map(raw).unwrap(),
            map(&[
                ("twi_to", "client:bob"),
                ("twi_params", "foo=bar%20baz&x=%C3%A9"),
                ("escaped", "line\nbreak \"quoted\" é"),
                ("empty", ""),
                ("n", "42"),
                ("neg", "-7"),
                ("f", "1.50e3"),
                ("big", "123456789012345678901234567890"),
                ("t", "true"),
                ("no", "false"),
                ("nil", "null"),
                ("nested", r#"{"z":1,"a":[true,null,"x y",{"k":"v"}]}"#),
                ("list", "[]"),
            ])
        );
    }

    #[test]
    fn whitespace_and_escapes_inside_nested_strings_are_kept() {
        let raw = br#"{"o": {"s": "a \" b\\", "t" : "\t x"}}"#;
        assert_eq!(
            data_map(raw).unwrap()["o"],
            r#"{"s":"a \" b\\","t":"\t x"}"#
        );
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        for raw in [&b"[1]"[..], b"\"x\"", b"{", b""] {
            assert!(
                matches!(data_map(raw), Err(MessageError::NotObject(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn the_limit_counts_keys_and_values_in_bytes() {
        // One member whose key and value make exactly the limit, then one byte more.
        let value = "é".repeat((MAX_DATA_BYTES - 1) / 2); // 2 bytes each
        let fits = json!({ "kk": value }).to_string();
        assert_eq!(2 + value.len(), MAX_DATA_BYTES);
        assert!(data_map(fits.as_bytes()).is_ok());
        let over = json!({ "kkk": value }).to_string();
        let err = data_map(over.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            MessageError::TooLarge {
                size: MAX_DATA_BYTES + 1,
                limit: MAX_DATA_BYTES
            }
        );
        let text = err.to_string();
        assert!(text.contains("4097") && text.contains("4096"), "{text}");
        // JSON escapes do not count; the decoded string does.
        let escaped = format!(r#"{{"k":"{}"}}"#, "\\u00e9".repeat(2047));
        assert!(data_map(escaped.as_bytes()).is_ok());
    }

    #[test]
    fn the_request_is_a_high_priority_data_message_for_the_token() {
        let data = map(&[("twi_to", "client:bob"), ("n", "1")]);
        let body: serde_json::Value =
            serde_json::from_slice(&request_body("tok:en", &data, "30s")).unwrap();
        assert_eq!(
            body,
            json!({"message": {
                "token": "tok:en",
                "data": {"twi_to": "client:bob", "n": "1"},
                "android": {"priority": "HIGH", "ttl": "30s"}
            }})
        );
    }
}
