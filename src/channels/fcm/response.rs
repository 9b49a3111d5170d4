//! What an answer from `messages:send` means for the binding: Google's error body, and the
//! one table that turns its code into delivered, dead, retry or failed.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// Google's error body: `{"error": {"code", "message", "status", "details": [...]}}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorInner,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorInner {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

/// The code that explains a failed send, and Google's words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcmError {
    /// The FCM `errorCode` (`UNREGISTERED`…), else the Google API `status` (`NOT_FOUND`…),
    /// else `HTTP_<status>` when the body is not Google's (a proxy's error page).
    pub code: String,
    pub message: Option<String>,
}

impl FcmError {
    pub fn parse(status: StatusCode, body: &[u8]) -> Self {
        let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let fcm_code = parsed.error.details.iter().find_map(|d| {
            (d.get("@type")?.as_str()? == FCM_ERROR_TYPE)
                .then(|| d.get("errorCode")?.as_str().map(str::to_owned))
                .flatten()
        });
        let code = fcm_code
            .or(parsed.error.status)
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            .unwrap_or_else(|| format!("HTTP_{}", status.as_u16()));
        Self {
            code,
            message: parsed
                .error
                .message
                .filter(|m| !m.is_empty())
                .map(|m| super::truncate(&m, 200)),
        }
    }

    fn describe(&self, status: StatusCode) -> String {
        match &self.message {
            Some(m) => format!("FCM answered {} {}: {m}", status.as_u16(), self.code),
            None => format!("FCM answered {} {}", status.as_u16(), self.code),
        }
    }
}

/// How one `messages:send` request ended.
pub enum Attempt {
    Answer {
        status: StatusCode,
        retry_after: Option<Duration>,
        body: bytes::Bytes,
    },
    /// No answer before the webhook deadline.
    Timeout,
    /// The request did not get through (connect, TLS, reset stream).
    Connection(String),
}

/// What one answer from `messages:send` means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// The token is gone for good: remove the binding.
    Dead(String),
    /// Try again after the delay (Google's `Retry-After`, else the backoff schedule).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The access token was refused: renew it and try once more.
    Unauthenticated(String),
    /// Not delivered, and retrying will not help until someone fixes the Firebase project or
    /// callrelay's configuration; the binding stays.
    Misconfigured(String),
    /// Not delivered; the binding stays.
    Failed(String),
}

/// Maps an answer to its verdict and the `result` label it is counted under.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> (String, Verdict) {
    if status.is_success() {
        return ("success".into(), Verdict::Delivered);
    }
    let error = FcmError::parse(status, body);
    let reason = error.describe(status);
    let verdict = match error.code.as_str() {
        // Only an explicit UNREGISTERED removes a binding: a bare 404 (a wrong base URL or
        // project) says nothing about the device.
        "UNREGISTERED" => Verdict::Dead(reason),
        // The token belongs to another Firebase project's sender: it can never work here.
        "SENDER_ID_MISMATCH" => Verdict::Dead(reason),
        "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" | "RESOURCE_EXHAUSTED" => Verdict::Retry {
            reason,
            retry_after,
        },
        // FCM could not reach APNs with the credentials uploaded to the Firebase project.
        "THIRD_PARTY_AUTH_ERROR" => Verdict::Misconfigured(reason),
        "PERMISSION_DENIED" => Verdict::Misconfigured(reason),
        "UNAUTHENTICATED" => Verdict::Unauthenticated(reason),
        _ if status == StatusCode::UNAUTHORIZED => Verdict::Unauthenticated(reason),
        _ if matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504) => Verdict::Retry {
            reason,
            retry_after,
        },
        // INVALID_ARGUMENT and anything unknown: about this message, not the device.
        _ => Verdict::Failed(reason),
    };
    (error.code, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn google(status: u16, api_status: &str, fcm_code: Option<&str>) -> Vec<u8> {
        let mut details = vec![json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "message.token"}]
        })];
        if let Some(code) = fcm_code {
            details.push(json!({"@type": FCM_ERROR_TYPE, "errorCode": code}));
        }
        json!({"error": {
            "code": status,
            "message": "Requested entity was not found.",
            "status": api_status,
            "details": details
        }})
        .to_string()
        .into_bytes()
    }

    fn code(status: u16, body: &[u8]) -> String {
        FcmError::parse(StatusCode::from_u16(status).unwrap(), body).code
    }

    #[test]
    fn the_fcm_error_code_wins_over_the_api_status() {
        assert_eq!(
            code(404, &google(404, "NOT_FOUND", Some("UNREGISTERED"))),
            "UNREGISTERED"
        );
        assert_eq!(code(404, &google(404, "NOT_FOUND", None)), "NOT_FOUND");
        assert_eq!(code(502, b"<html>Bad gateway</html>"), "HTTP_502");
        assert_eq!(code(500, b""), "HTTP_500");
        assert_eq!(
            code(400, br#"{"error": {"status": "nope; drop"}}"#),
            "HTTP_400"
        );
        let e = FcmError::parse(
            StatusCode::NOT_FOUND,
            &google(404, "NOT_FOUND", Some("UNREGISTERED")),
        );
        assert_eq!(
            e.message.as_deref(),
            Some("Requested entity was not found.")
        );
    }

    #[test]
    fn each_code_has_its_verdict() {
        let cases: Vec<(u16, &str, Option<&str>, &str)> = vec![
            (404, "NOT_FOUND", Some("UNREGISTERED"), "dead"),
            (403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"), "dead"),
            (400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), "failed"),
            (429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"), "retry"),
            (503, "UNAVAILABLE", Some("UNAVAILABLE"), "retry"),
            (500, "INTERNAL", Some("INTERNAL"), "retry"),
            (
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                "config",
            ),
            (403, "PERMISSION_DENIED", None, "config"),
            (401, "UNAUTHENTICATED", None, "auth"),
            (404, "NOT_FOUND", None, "failed"),
        ];
        for (status, api, fcm, expected) in cases {
            let s = StatusCode::from_u16(status).unwrap();
            let (label, verdict) = classify(s, None, &google(status, api, fcm));
            assert_eq!(label, fcm.unwrap_or(api), "{status} {api}");
            let got = match verdict {
                Verdict::Delivered => "delivered",
                Verdict::Dead(_) => "dead",
                Verdict::Retry { .. } => "retry",
                Verdict::Unauthenticated(_) => "auth",
                Verdict::Misconfigured(_) => "config",
                Verdict::Failed(_) => "failed",
            };
            assert_eq!(got, expected, "{status} {api} {fcm:?}");
        }
        assert_eq!(
            classify(StatusCode::OK, None, b"{}"),
            ("success".into(), Verdict::Delivered)
        );
        // Not Google's body: the HTTP status decides.
        let (label, verdict) = classify(StatusCode::BAD_GATEWAY, None, b"oops");
        assert_eq!(label, "HTTP_502");
        assert!(matches!(verdict, Verdict::Retry { .. }));
        // Only 500, 502, 503 and 504 among the 5xx are retried without Google's code.
        for status in [500, 502, 503, 504] {
            let (_, verdict) = classify(StatusCode::from_u16(status).unwrap(), None, b"");
            assert!(matches!(verdict, Verdict::Retry { .. }), "{status}");
        }
        for status in [501, 505, 511] {
            let (label, verdict) = classify(StatusCode::from_u16(status).unwrap(), None, b"");
            assert!(matches!(verdict, Verdict::Failed(_)), "{status}");
            assert_eq!(label, format!("HTTP_{status}"));
        }
        let (_, verdict) = classify(StatusCode::UNAUTHORIZED, None, b"");
        assert!(matches!(verdict, Verdict::Unauthenticated(_)));
    }

    #[test]
    fn retries_carry_retry_after_and_reasons_name_the_code() {
        let (_, verdict) = classify(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(7)),
            &google(503, "UNAVAILABLE", Some("UNAVAILABLE")),
        );
        let Verdict::Retry {
            reason,
            retry_after,
        } = verdict
        else {
            panic!("{verdict:?}")
        };
        assert_eq!(retry_after, Some(Duration::from_secs(7)));
        assert_eq!(
            reason,
            "FCM answered 503 UNAVAILABLE: Requested entity was not found."
        );
    }
}
