//! Twilio's request signature (`X-Twilio-Signature`): an HMAC over the requested URL and, for
//! form bodies, the sorted parameters; base64 of the digest.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    HmacSha1,
    HmacSha256,
}

/// The string Twilio signs: the URL, then each parameter name followed by its value, names
/// sorted and a repeated name's values sorted.
fn signed_data(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params.to_vec();
    sorted.sort_unstable();
    let mut data = String::with_capacity(url.len() + params.len() * 16);
    data.push_str(url);
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    data
}

fn mac_sha1(key: &[u8], data: &[u8]) -> Hmac<Sha1> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac
}

fn mac_sha256(key: &[u8], data: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac
}

/// The signature Twilio sends for this URL and these form parameters.
pub fn compute(alg: SignatureAlgorithm, key: &[u8], url: &str, params: &[(&str, &str)]) -> String {
    let data = signed_data(url, params);
    let digest = match alg {
        SignatureAlgorithm::HmacSha1 => mac_sha1(key, data.as_bytes())
            .finalize()
            .into_bytes()
            .to_vec(),
        SignatureAlgorithm::HmacSha256 => mac_sha256(key, data.as_bytes())
            .finalize()
            .into_bytes()
            .to_vec(),
    };
    STANDARD.encode(digest)
}

/// Checks `signature` (the header's base64 text) in constant time.
pub fn verify(
    alg: SignatureAlgorithm,
    key: &[u8],
    url: &str,
    params: &[(&str, &str)],
    signature: &str,
) -> bool {
    let Ok(expected) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let data = signed_data(url, params);
    match alg {
        SignatureAlgorithm::HmacSha1 => mac_sha1(key, data.as_bytes())
            .verify_slice(&expected)
            .is_ok(),
        SignatureAlgorithm::HmacSha256 => mac_sha256(key, data.as_bytes())
            .verify_slice(&expected)
            .is_ok(),
    }
}

/// Lowercase hex SHA-256 of a body, as in the `bodySHA256` query parameter.
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The URL as given, and the same URL with its default port added (when absent) or removed
/// (when present): Twilio's validators accept either form.
pub fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let (scheme, default_port) = if let Some(rest) = url.strip_prefix("https://") {
        ("https://", (rest, "443"))
    } else if let Some(rest) = url.strip_prefix("http://") {
        ("http://", (rest, "80"))
    } else {
        return out;
    };
    let (rest, port) = default_port;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // An IPv6 literal is bracketed; its colons are not a port separator.
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        0
    };
    match authority[host_end..].rfind(':').map(|i| i + host_end) {
        Some(colon) => {
            if &authority[colon + 1..] == port {
                out.push(format!("{scheme}{}{tail}", &authority[..colon]));
            }
        }
        None => out.push(format!("{scheme}{authority}:{port}{tail}")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"12345";
    const FORM: &[(&str, &str)] = &[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];
    const JSON_BODY: &[u8] = br#"{"property": "value", "boolean": true}"#;
    const BODY_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";

    // The official test vectors, shared by twilio-python, twilio-node and twilio-java.

    #[test]
    fn vector_form_parameters() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            compute(SignatureAlgorithm::HmacSha1, TOKEN, url, FORM),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify(
            SignatureAlgorithm::HmacSha1,
            TOKEN,
            url,
            FORM,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn vector_explicit_default_port() {
        let url = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert_eq!(
            compute(SignatureAlgorithm::HmacSha1, TOKEN, url, FORM),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        // A request signed without the port validates against the URL with it, and vice versa.
        let variants = url_variants(url);
        assert_eq!(variants[1], "https://mycompany.com/myapp.php?foo=1&bar=2");
        assert!(variants.iter().any(|u| verify(
            SignatureAlgorithm::HmacSha1,
            TOKEN,
            u,
            FORM,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        )));
        let variants = url_variants("https://mycompany.com/myapp.php?foo=1&bar=2");
        assert!(variants.iter().any(|u| verify(
            SignatureAlgorithm::HmacSha1,
            TOKEN,
            u,
            FORM,
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        )));
    }

    #[test]
    fn vector_repeated_parameter_values_are_sorted() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ];
        assert_eq!(
            compute(SignatureAlgorithm::HmacSha1, TOKEN, url, &params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn vector_json_body_hash() {
        assert_eq!(body_sha256_hex(JSON_BODY), BODY_HASH);
    }

    #[test]
    fn vector_json_body_with_other_query_parameters() {
        let url = format!("https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={BODY_HASH}");
        assert_eq!(
            compute(SignatureAlgorithm::HmacSha1, TOKEN, &url, &[]),
            "a9nBmqA0ju/hNViExpshrM61xv4="
        );
    }

    #[test]
    fn vector_json_body_alone() {
        let url = format!("https://mycompany.com/myapp.php?bodySHA256={BODY_HASH}");
        assert_eq!(
            compute(SignatureAlgorithm::HmacSha1, TOKEN, &url, &[]),
            "y77kIzt2vzLz71DgmJGsen2scGs="
        );
    }

    #[test]
    fn sha256_signatures_are_longer_and_verify() {
        let url = "https://relay.example.com/v1/twilio/call-notifications?bodySHA256=00";
        let sig = compute(SignatureAlgorithm::HmacSha256, b"shared", url, &[]);
        assert_eq!(STANDARD.decode(&sig).unwrap().len(), 32);
        assert!(verify(
            SignatureAlgorithm::HmacSha256,
            b"shared",
            url,
            &[],
            &sig
        ));
        assert!(!verify(
            SignatureAlgorithm::HmacSha1,
            b"shared",
            url,
            &[],
            &sig
        ));
    }

    #[test]
    fn wrong_key_url_or_garbage_fails() {
        let url = format!("https://mycompany.com/myapp.php?bodySHA256={BODY_HASH}");
        let good = "y77kIzt2vzLz71DgmJGsen2scGs=";
        assert!(!verify(
            SignatureAlgorithm::HmacSha1,
            b"54321",
            &url,
            &[],
            good
        ));
        assert!(!verify(
            SignatureAlgorithm::HmacSha1,
            TOKEN,
            &format!("{url}x"),
            &[],
            good
        ));
        assert!(!verify(
            SignatureAlgorithm::HmacSha1,
            TOKEN,
            &url,
            &[],
            "not base64!"
        ));
        assert!(!verify(SignatureAlgorithm::HmacSha1, TOKEN, &url, &[], ""));
    }

    #[test]
    fn url_variants_handle_ports_schemes_and_ipv6() {
        assert_eq!(
            url_variants("http://h/p"),
            vec!["http://h/p".to_string(), "http://h:80/p".to_string()]
        );
        assert_eq!(
            url_variants("http://h:80/p?q"),
            vec!["http://h:80/p?q".to_string(), "http://h/p?q".to_string()]
        );
        assert_eq!(
            url_variants("https://h:8443/p"),
            vec!["https://h:8443/p".to_string()]
        );
        assert_eq!(
            url_variants("https://[::1]/p"),
            vec![
                "https://[::1]/p".to_string(),
                "https://[::1]:443/p".to_string()
            ]
        );
        assert_eq!(
            url_variants("https://h?x=1"),
            vec!["https://h?x=1".to_string(), "https://h:443?x=1".to_string()]
        );
    }
}
