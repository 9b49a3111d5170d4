//! Loading an APNs app's credentials at start-up (and by `check-config`), so a broken key or
//! certificate is named before the first call rather than discovered by it: the `.p8` signing
//! key for token authentication, or the client certificate (PEM pair or PKCS#12) for
//! certificate authentication, with its expiry.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::EncodingKey;
use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::SettingsError;
use crate::config::Secret;

/// A client certificate ready for the HTTP client, and when it stops being accepted.
pub struct ClientCertificate {
    pub identity: reqwest::Identity,
    /// The leaf certificate's notAfter, Unix seconds.
    pub not_after: i64,
}

/// Reads Apple's `.p8` key. `from_ec_pem` only unwraps the PEM, so a token is signed as a probe:
/// that is what proves the key is a P-256 key ES256 can use.
pub fn load_p8(pem: &Secret, setting: &str) -> Result<EncodingKey, SettingsError> {
    let bad = || {
        SettingsError::new(
            setting,
            "is not an EC P-256 private key in PKCS#8 PEM (the .p8 file Apple gives)",
        )
    };
    let key = EncodingKey::from_ec_pem(pem.expose().as_bytes()).map_err(|_| bad())?;
    let probe = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    jsonwebtoken::encode(
        &probe,
        &serde_json::json!({"iss": "PROBE00000", "iat": 0}),
        &key,
    )
    .map_err(|_| bad())?;
    Ok(key)
}

/// A certificate file and its private key, both PEM.
pub fn load_pem_pair(
    cert_file: &Path,
    key: &Secret,
    key_setting: &str,
    now: i64,
) -> Result<ClientCertificate, SettingsError> {
    let text = std::fs::read(cert_file).map_err(|e| {
        SettingsError::new(
            "cert_file",
            format!("cannot read {}: {e}", cert_file.display()),
        )
    })?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            SettingsError::new(
                "cert_file",
                format!("{} is not a PEM certificate file", cert_file.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(SettingsError::new(
            "cert_file",
            format!("{} holds no certificate", cert_file.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes()).map_err(|_| {
        SettingsError::new(
            key_setting,
            "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    client_certificate(certs, key, "cert_file", key_setting, now)
}

/// A PKCS#12 file (what Keychain Access exports) holding the certificate and its key.
pub fn load_pkcs12(
    file: &Path,
    password: &Secret,
    now: i64,
) -> Result<ClientCertificate, SettingsError> {
    let data = std::fs::read(file).map_err(|e| {
        SettingsError::new(
            "pkcs12_file",
            format!("cannot read {}: {e}", file.display()),
        )
    })?;
    let store = KeyStore::from_pkcs12(&data, password.expose(), Pkcs12ImportPolicy::Strict)
        .map_err(|e| match e {
            p12_keystore::error::Error::MacError(_) => SettingsError::new(
                "pkcs12_password",
                format!("does not open {} (wrong password?)", file.display()),
            ),
            other => SettingsError::new(
                "pkcs12_file",
                format!("{} cannot be read as PKCS#12: {other}", file.display()),
            ),
        })?;
    let (_, chain) = store.private_key_chain().ok_or_else(|| {
        SettingsError::new(
            "pkcs12_file",
            format!(
                "{} holds no private key with its certificate",
                file.display()
            ),
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = chain
        .certs()
        .iter()
        .map(|c| CertificateDer::from(c.as_der().to_vec()))
        .collect();
    if certs.is_empty() {
        return Err(SettingsError::new(
            "pkcs12_file",
            format!("{} holds a private key but no certificate", file.display()),
        ));
    }
    let key = PrivateKeyDer::Pkcs8(chain.key().as_der().to_vec().into());
    client_certificate(certs, key, "pkcs12_file", "pkcs12_file", now)
}

/// Checks that the key belongs to the leaf certificate and that the certificate has not expired,
/// then turns both into the PEM identity reqwest takes.
fn client_certificate(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_setting: &str,
    key_setting: &str,
    now: i64,
) -> Result<ClientCertificate, SettingsError> {
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| {
            SettingsError::new(key_setting, format!("the private key cannot be used: {e}"))
        })?;
    match CertifiedKey::new(certs.clone(), signing_key).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(SettingsError::new(
                key_setting,
                format!("the private key does not belong to the certificate in {cert_setting}"),
            ));
        }
    }
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).map_err(|e| {
        SettingsError::new(cert_setting, format!("is not an X.509 certificate: {e}"))
    })?;
    let not_after = leaf.validity().not_after;
    if not_after.timestamp() <= now {
        return Err(SettingsError::new(
            cert_setting,
            format!(
                "the certificate ({}) expired on {not_after}; renew it in the Apple developer account",
                leaf.subject()
            ),
        ));
    }
    let mut pem = String::new();
    for cert in &certs {
        pem.push_str(&pem_block("CERTIFICATE", cert));
    }
    let label = match &key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pem.push_str(&pem_block(label, key.secret_der()));
    let identity = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| {
        SettingsError::new(
            cert_setting,
            format!("cannot be used as a TLS identity: {e}"),
        )
    })?;
    Ok(ClientCertificate {
        identity,
        not_after: not_after.timestamp(),
    })
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use p12_keystore::{Certificate, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    const NOW: i64 = 1_700_000_000;

    /// A file holding `contents`, removed when the returned path is dropped.
    fn temp(contents: &[u8]) -> tempfile::TempPath {
        let mut file = tempfile::Builder::new()
            .prefix("callrelay-cred-")
            .tempfile()
            .unwrap();
        std::io::Write::write_all(&mut file, contents).unwrap();
        file.into_temp_path()
    }

    /// A self-signed certificate valid from 2020 until `not_after` (Unix seconds).
    fn certificate(not_after: i64) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["Apple Push Services: a.b".into()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_577_836_800).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        (params.self_signed(&key).unwrap().pem(), key)
    }

    #[test]
    fn p8_keys_are_checked_by_signing() {
        let good = KeyPair::generate().unwrap().serialize_pem();
        assert!(load_p8(&Secret::new(good), "key_file").is_ok());
        // A P-384 key is a PKCS#8 EC key too, but ES256 cannot use it.
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .unwrap()
            .serialize_pem();
        for bad in [
            p384.as_str(),
            "not a key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let e = load_p8(&Secret::new(bad), "key_file").unwrap_err();
            assert_eq!(e.key, "key_file");
            assert!(e.message.contains("PKCS#8"), "{}", e.message);
        }
    }

    #[test]
    fn pem_pair_gives_identity_and_expiry() {
        let not_after = NOW + 86_400 * 30;
        let (cert, key) = certificate(not_after);
        let file = temp(cert.as_bytes());
        let loaded = load_pem_pair(
            &file,
            &Secret::new(key.serialize_pem()),
            "private_key_file",
            NOW,
        )
        .unwrap();
        assert_eq!(loaded.not_after, not_after);
    }

    #[test]
    fn pem_pair_problems_are_named() {
        let (cert, key) = certificate(NOW + 86_400);
        let file = temp(cert.as_bytes());
        let key_pem = Secret::new(key.serialize_pem());
        let other_key = Secret::new(KeyPair::generate().unwrap().serialize_pem());
        let expired = || {
            let (cert, key) = certificate(NOW - 1);
            (temp(cert.as_bytes()), Secret::new(key.serialize_pem()))
        };
        let missing = std::path::PathBuf::from("/nonexistent/cert.pem");
        let not_pem = temp(b"hello");
        let (expired_file, expired_key) = expired();
        let cases: Vec<(Result<ClientCertificate, SettingsError>, &str, &str)> = vec![
            (
                load_pem_pair(&missing, &key_pem, "private_key_file", NOW),
                "cert_file",
                "cannot read",
            ),
            (
                load_pem_pair(&not_pem, &key_pem, "private_key_file", NOW),
                "cert_file",
                "holds no certificate",
            ),
            (
                load_pem_pair(&file, &Secret::new("junk"), "private_key", NOW),
                "private_key",
                "not a PEM private key",
            ),
            (
                load_pem_pair(&file, &other_key, "private_key_file", NOW),
                "private_key_file",
                "does not belong",
            ),
            (
                load_pem_pair(&expired_file, &expired_key, "private_key_file", NOW),
                "cert_file",
                "expired",
            ),
        ];
        for (result, key, needle) in cases {
            let e = result.err().expect("an error");
            assert_eq!(e.key, key, "{}", e.message);
            assert!(e.message.contains(needle), "{}", e.message);
        }
    }

    fn pkcs12(cert_pem: &str, key: &KeyPair, password: &str) -> Vec<u8> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let chain = PrivateKeyChain::new(
            b"callrelay".as_slice(),
            PrivateKey::from_der(&key.serialize_der()).unwrap(),
            [Certificate::from_der(&cert_der).unwrap()],
        );
        let mut store = KeyStore::new();
        store.add_entry("voip", KeyStoreEntry::PrivateKeyChain(chain));
        store.writer(password).write().unwrap()
    }

    #[test]
    fn pkcs12_gives_identity_and_expiry_and_names_a_wrong_password() {
        let not_after = NOW + 86_400 * 365;
        let (cert, key) = certificate(not_after);
        let file = temp(&pkcs12(&cert, &key, "s3cret"));
        let loaded = load_pkcs12(&file, &Secret::new("s3cret"), NOW).unwrap();
        assert_eq!(loaded.not_after, not_after);
        let e = load_pkcs12(&file, &Secret::new("wrong"), NOW)
            .err()
            .unwrap();
        assert_eq!(e.key, "pkcs12_password");
        let e = load_pkcs12(&temp(b"not pkcs12"), &Secret::new(""), NOW)
            .err()
            .unwrap();
        assert_eq!(e.key, "pkcs12_file");
        // Expiry is checked whatever the container.
        let (cert, key) = certificate(NOW - 10);
        let file = temp(&pkcs12(&cert, &key, ""));
        let e = load_pkcs12(&file, &Secret::new(""), NOW).err().unwrap();
        assert_eq!(e.key, "pkcs12_file");
        assert!(e.message.contains("expired"), "{}", e.message);
    }

    #[test]
    fn pem_blocks_wrap_at_64_columns() {
        let block = pem_block("CERTIFICATE", &[0u8; 100]);
        let lines: Vec<&str> = block.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
    }
}
