//! What an answer from APNs means for the binding: Apple's reason, and the one table that
//! turns a status and reason into delivered, dead, renew the provider token, retry or fail.

use std::time::Duration;

use reqwest::StatusCode;

/// What one request came to.
#[derive(Debug)]
pub enum Answer {
    /// Apple took the push; its `apns-id` names it in Apple's own tools.
    Accepted { id: Option<String> },
    /// Apple (or whatever answered) said no: the status and its reason.
    Refused {
        status: StatusCode,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// No answer before the deadline.
    Timeout,
    /// The connection could not be made or broke.
    Connection(String),
}

impl Answer {
    /// The `result` label of `callrelay_push_results_total`.
    pub fn label(&self) -> &str {
        match self {
            Answer::Accepted { .. } => "success",
            Answer::Refused { reason, .. } => reason,
            Answer::Timeout => "timeout",
            Answer::Connection(_) => "connection_error",
        }
    }
}

/// What to do about a refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The device token is dead: remove the binding.
    Dead,
    /// The provider token was refused: renew it and try again.
    RenewToken,
    /// Apple is busy or broken: try again after a pause.
    Retry,
    /// The request itself is wrong: retrying will not help.
    Fail,
}

pub fn verdict(status: StatusCode, reason: &str) -> Verdict {
    match (status.as_u16(), reason) {
        // 410: "the device token is no longer active for the topic" (Unregistered, and
        // ExpiredToken in newer documentation).
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Verdict::Dead,
        (403, "ExpiredProviderToken" | "InvalidProviderToken") => Verdict::RenewToken,
        (429, _) | (500..=599, _) => Verdict::Retry,
        _ => Verdict::Fail,
    }
}

/// Apple's `{"reason": "…"}`, when it is one of Apple's identifiers; otherwise (a proxy's page,
/// nothing at all) `http_<status>`, so the metric label stays a short, known word.
pub fn reason(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Error {
        reason: String,
    }
    serde_json::from_slice::<Error>(body)
        .ok()
        .map(|e| e.reason)
        .filter(|r| !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| format!("http_{}", status.as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_apples_reasons() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        assert_eq!(verdict(s(410), "Unregistered"), Verdict::Dead);
        assert_eq!(verdict(s(410), "ExpiredToken"), Verdict::Dead);
        assert_eq!(verdict(s(400), "BadDeviceToken"), Verdict::Dead);
        assert_eq!(verdict(s(400), "DeviceTokenNotForTopic"), Verdict::Dead);
        assert_eq!(verdict(s(403), "ExpiredProviderToken"), Verdict::RenewToken);
        assert_eq!(verdict(s(403), "InvalidProviderToken"), Verdict::RenewToken);
        assert_eq!(verdict(s(429), "TooManyRequests"), Verdict::Retry);
        assert_eq!(verdict(s(500), "InternalServerError"), Verdict::Retry);
        assert_eq!(verdict(s(503), "ServiceUnavailable"), Verdict::Retry);
        assert_eq!(verdict(s(400), "BadTopic"), Verdict::Fail);
        assert_eq!(verdict(s(400), "PayloadEmpty"), Verdict::Fail);
        assert_eq!(verdict(s(403), "BadCertificateEnvironment"), Verdict::Fail);
        assert_eq!(verdict(s(413), "PayloadTooLarge"), Verdict::Fail);
        assert_eq!(
            verdict(s(429), "TooManyProviderTokenUpdates"),
            Verdict::Retry
        );
    }

    #[test]
    fn reasons_are_apples_words_or_the_status() {
        let s = StatusCode::BAD_REQUEST;
        assert_eq!(
            reason(s, br#"{"reason":"BadDeviceToken"}"#),
            "BadDeviceToken"
        );
        assert_eq!(
            reason(
                StatusCode::GONE,
                br#"{"reason":"Unregistered","timestamp":1700000000000}"#
            ),
            "Unregistered"
        );
        assert_eq!(reason(s, b""), "http_400");
        assert_eq!(reason(s, b"<html>bad gateway</html>"), "http_400");
        assert_eq!(reason(s, br#"{"reason":"two words"}"#), "http_400");
        assert_eq!(
            reason(StatusCode::BAD_GATEWAY, br#"{"reason":""}"#),
            "http_502"
        );
    }
}
