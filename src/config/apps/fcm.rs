//! An FCM app's settings and its service-account key, read and checked once at start-up so
//! that `callrelay check-config` names a broken key before a call needs it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::EncodingKey;
use serde::Deserialize;
use serde_json::Value;

use super::fcm_credentials::{self, Credentials, Source};
use super::{SettingsError, check_base_url, check_connections, extra_ca, parse_settings, secret};
use crate::config::lenient;

pub const DEFAULT_BASE_URL: &str = "https://fcm.googleapis.com";
/// A call rings for well under a minute; a push that arrives later only confuses the callee.
pub const DEFAULT_TTL_SECS: u64 = 30;
/// FCM's own maximum (28 days).
pub const MAX_TTL_SECS: u64 = 2_419_200;
pub const MAX_CONNECTIONS: u64 = 16;
/// Google's project ids are at most 30 characters; leave room for legacy `domain:project` ids.
const MAX_PROJECT_ID_LEN: usize = 100;

/// The keys of an `[[apps]]` table with `channel = "fcm"`, as written.
///
/// No `Debug`: `service_account` holds a private key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    credentials: Option<String>,
    metadata_url: Option<String>,
    service_account: Option<String>,
    service_account_file: Option<PathBuf>,
    project_id: Option<String>,
    base_url: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient::number")]
    ttl_secs: Option<u64>,
    #[serde(default, deserialize_with = "lenient::number")]
    connections: Option<u64>,
}

/// An FCM app's settings, validated, its key and extra CA loaded.
#[derive(Debug, Clone)]
pub struct FcmSettings {
    pub credentials: Credentials,
    /// The project messages are sent to: `project_id` if set, else the key's.
    pub project_id: String,
    /// `<base_url>/v1/projects/<project_id>/messages:send`.
    pub send_url: String,
    pub extra_ca: Vec<reqwest::Certificate>,
    pub ttl: Duration,
    pub connections: usize,
}

/// The members of a Google service-account key file that the OAuth grant needs.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    /// Becomes the assertion's `kid`, so Google can pick the right public key at once.
    pub private_key_id: Option<String>,
    pub project_id: String,
    pub token_uri: String,
    pub private_key: PrivateKey,
}

/// The service account's RSA key, ready to sign. Its `Debug` never shows it.
#[derive(Clone)]
pub struct PrivateKey(pub(crate) EncodingKey);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FcmSettings {
    pub fn parse(table: &toml::Table) -> Result<Self, SettingsError> {
        let raw: RawSettings = parse_settings(table)?;

        let source = Source::parse(raw.credentials.as_deref())?;
        let has_key = raw.service_account.is_some() || raw.service_account_file.is_some();
        let credentials = match source {
            Source::ServiceAccount => {
                if raw.metadata_url.is_some() {
                    return Err(SettingsError::new(
                        "metadata_url",
                        "is used only with credentials = \"metadata_server\" or \"application_default\"",
                    ));
                }
                Credentials::ServiceAccount(service_account(
                    raw.service_account,
                    raw.service_account_file,
                )?)
            }
            _ if has_key => {
                return Err(SettingsError::new(
                    "credentials",
                    "a service-account key (service_account or service_account_file) is given too: keep one or the other",
                ));
            }
            Source::MetadataServer => Credentials::MetadataServer {
                url: fcm_credentials::metadata_url(raw.metadata_url)?,
            },
            Source::ApplicationDefault => fcm_credentials::application_default(
                fcm_credentials::metadata_url(raw.metadata_url)?,
            )?,
        };

        let project_id = match (raw.project_id, credentials.project_id()) {
            (Some(p), _) => {
                check_project_id(&p).map_err(|m| SettingsError::new("project_id", m))?;
                p
            }
            (None, Some(p)) => p.to_owned(),
            (None, None) => {
                return Err(SettingsError::new(
                    "project_id",
                    "is required with credentials from the metadata server (no key file names the project)",
                ));
            }
        };
        let base_url = match raw.base_url {
            None => DEFAULT_BASE_URL.to_owned(),
            Some(url) => check_base_url("base_url", &url)?,
        };
        let extra_ca = extra_ca(raw.ca_file.as_deref())?;
        let ttl_secs = raw.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
        if ttl_secs > MAX_TTL_SECS {
            return Err(SettingsError::new(
                "ttl_secs",
                format!("{ttl_secs} is out of range (0..={MAX_TTL_SECS} seconds, FCM's limit)"),
            ));
        }
        let connections = check_connections(raw.connections.unwrap_or(1), MAX_CONNECTIONS)?;
        Ok(Self {
            send_url: format!("{base_url}/v1/projects/{project_id}/messages:send"),
            credentials,
            project_id,
            extra_ca,
            ttl: Duration::from_secs(ttl_secs),
            connections,
        })
    }
}

/// The key given inline (`service_account`) or as a file (`service_account_file`).
fn service_account(
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<ServiceAccount, SettingsError> {
    let key = match (&inline, &file) {
        (None, None) => {
            return Err(SettingsError::new(
                "service_account_file",
                "is required (or service_account with the key's JSON inline, or credentials = \"metadata_server\" or \"application_default\" without a key)",
            ));
        }
        (_, Some(_)) => "service_account_file",
        (Some(_), None) => "service_account",
    };
    let json = secret("service_account", inline, file)?.expect("one of the two is set");
    ServiceAccount::parse(json.expose()).map_err(|m| SettingsError::new(key, m))
}

impl ServiceAccount {
    /// Reads a service-account key file's JSON. Error messages name the member at fault and
    /// never quote the file, which holds the private key.
    pub fn parse(json: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            // Syntax errors say where, never what: the text may be the private key.
            format!(
                "is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        let Value::Object(members) = value else {
            return Err("is not a service-account key: expected a JSON object".into());
        };
        let text = |name: &str| -> Result<String, String> {
            match members.get(name) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                Some(Value::String(_)) => Err(format!("`{name}` is empty")),
                Some(_) => Err(format!("`{name}` must be a string")),
                None => Err(format!("`{name}` is missing")),
            }
        };
        match members.get("type") {
            Some(Value::String(t)) if t == "service_account" => {}
            Some(Value::String(t)) => {
                return Err(format!(
                    "is not a service-account key: `type` is `{}`, expected `service_account`",
                    t.chars().take(40).collect::<String>()
                ));
            }
            _ => {
                return Err(
                    "is not a service-account key: `type` must be `service_account`".into(),
                );
            }
        }
        let client_email = text("client_email")?;
        let project_id = text("project_id")?;
        check_project_id(&project_id).map_err(|m| format!("`project_id` {m}"))?;
        let token_uri = text("token_uri")?;
        check_token_uri(&token_uri).map_err(|m| format!("`token_uri` {m}"))?;
        let private_key_id = match members.get("private_key_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("`private_key_id` must be a string".into()),
        };
        let pem = text("private_key")?;
        let private_key = PrivateKey::from_pem(&pem)?;
        Ok(Self {
            client_email,
            private_key_id,
            project_id,
            token_uri,
            private_key,
        })
    }
}

impl PrivateKey {
    /// Loads the key and signs once with it: a key that parses but cannot sign (a truncated or
    /// mangled one) is refused now rather than at the first call.
    fn from_pem(pem: &str) -> Result<Self, String> {
        let bad =
            "`private_key` is not an RSA private key in PEM form (PKCS#8, as Google issues them)";
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| bad.to_owned())?;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &serde_json::json!({"check": true}),
            &key,
        )
        .map_err(|_| format!("{bad}: it cannot sign"))?;
        Ok(Self(key))
    }
}

fn check_project_id(id: &str) -> Result<(), String> {
    // It becomes a path segment of the send URL: keep to the characters project ids use.
    if id.is_empty()
        || id.len() > MAX_PROJECT_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(format!(
            "must be a Firebase project id (letters, digits, - _ . :, at most {MAX_PROJECT_ID_LEN})"
        ));
    }
    Ok(())
}

fn check_token_uri(uri: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(uri).map_err(|e| format!("is not a URL: {e}"))?;
    // The assertion travels to it: never in the clear.
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err("must be an https:// URL".into());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const TEST_KEY: &str =
        include_str!("../../../tests/fixtures/fcm/test-service-account-key.pem");

    pub fn key_json(overrides: Value) -> String {
        let mut v = serde_json::json!({
            "type": "service_account",
            "project_id": "callrelay-test",
            "private_key_id": "kid-1",
            "private_key": TEST_KEY,
            "client_email": "relay@callrelay-test.iam.gserviceaccount.com",
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": "https://oauth2.googleapis.com/token",
            "universe_domain": "googleapis.com"
        });
        for (k, val) in overrides.as_object().unwrap() {
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val.clone();
            }
        }
        v.to_string()
    }

    fn table(extra: &str, json: &str) -> toml::Table {
        let mut t: toml::Table = toml::from_str(extra).unwrap();
        t.insert("service_account".into(), toml::Value::String(json.into()));
        t
    }

    #[test]
    fn reads_a_google_key_file_and_fills_the_defaults() {
        let s = FcmSettings::parse(&table("", &key_json(serde_json::json!({})))).unwrap();
        assert_eq!(s.project_id, "callrelay-test");
        assert_eq!(
            s.send_url,
            "https://fcm.googleapis.com/v1/projects/callrelay-test/messages:send"
        );
        assert_eq!(s.ttl, Duration::from_secs(30));
        assert_eq!(s.connections, 1);
        assert!(s.extra_ca.is_empty());
        let Credentials::ServiceAccount(sa) = &s.credentials else {
            panic!("a key file's credentials are its service account");
        };
        assert_eq!(
            sa.client_email,
            "relay@callrelay-test.iam.gserviceaccount.com"
        );
        assert_eq!(sa.private_key_id.as_deref(), Some("kid-1"));
        assert_eq!(sa.token_uri, "https://oauth2.googleapis.com/token");
    }

    fn keyless(extra: &str) -> Result<FcmSettings, SettingsError> {
        FcmSettings::parse(&toml::from_str(extra).unwrap())
    }

    #[test]
    fn the_metadata_server_needs_no_key_but_a_project() {
        let s = keyless(
            "credentials = \"metadata_server\"\nproject_id = \"p1\"\nmetadata_url = \"http://169.254.169.254/\"",
        )
        .unwrap();
        let Credentials::MetadataServer { url } = &s.credentials else {
            panic!("metadata server credentials");
        };
        assert_eq!(url, "http://169.254.169.254");
        assert_eq!(
            s.send_url,
            "https://fcm.googleapis.com/v1/projects/p1/messages:send"
        );
        let e = keyless("credentials = \"metadata_server\"").err().unwrap();
        assert_eq!(e.key, "project_id");
    }

    #[test]
    fn keyless_credentials_and_a_key_are_not_given_together() {
        let mut t = table(
            "credentials = \"metadata_server\"\nproject_id = \"p1\"",
            &key_json(serde_json::json!({})),
        );
        t.remove("project_id");
        let e = FcmSettings::parse(&t).err().unwrap();
        assert_eq!(e.key, "credentials");
        let e = keyless("credentials = \"magic\"\nproject_id = \"p1\"")
            .err()
            .unwrap();
        assert_eq!(e.key, "credentials");
        let e = keyless(
            "credentials = \"metadata_server\"\nproject_id = \"p1\"\nmetadata_url = \"ftp://x\"",
        )
        .err()
        .unwrap();
        assert_eq!(e.key, "metadata_url");
        let e = FcmSettings::parse(&table(
            "metadata_url = \"http://x\"",
            &key_json(serde_json::json!({})),
        ))
        .err()
        .unwrap();
        assert_eq!(e.key, "metadata_url");
    }

    #[test]
    fn without_a_key_the_message_names_the_keyless_choices() {
        let e = keyless("project_id = \"p1\"").err().unwrap();
        assert_eq!(e.key, "service_account_file");
        assert!(e.message.contains("metadata_server"), "{}", e.message);
    }

    #[test]
    fn overrides_project_base_url_ttl_and_connections() {
        let extra = r#"
project_id = "other-project"
base_url = "https://proxy.internal/fcm/"
ttl_secs = "60"
connections = 4
"#;
        let s = FcmSettings::parse(&table(extra, &key_json(serde_json::json!({})))).unwrap();
        assert_eq!(
            s.send_url,
            "https://proxy.internal/fcm/v1/projects/other-project/messages:send"
        );
        assert_eq!(s.ttl, Duration::from_secs(60));
        assert_eq!(s.connections, 4);
    }

    #[test]
    fn each_bad_setting_is_named() {
        let good = key_json(serde_json::json!({}));
        let cases = [
            ("ttl_secs = 2419201", "ttl_secs"),
            ("connections = 0", "connections"),
            ("connections = 17", "connections"),
            ("base_url = \"http://fcm.internal\"", "base_url"),
            ("base_url = \"https://fcm.internal/?x=1\"", "base_url"),
            ("base_url = \"not a url\"", "base_url"),
            ("project_id = \"a/b\"", "project_id"),
            ("project_id = \"\"", "project_id"),
            ("ca_file = \"/nonexistent/ca.pem\"", "ca_file"),
            ("topic = \"com.example\"", "topic"),
        ];
        for (extra, key) in cases {
            let err = FcmSettings::parse(&table(extra, &good)).unwrap_err();
            assert_eq!(err.key, key, "{extra}: {err:?}");
        }
        let mut both = table("", &good);
        both.insert(
            "service_account_file".into(),
            toml::Value::String("/x".into()),
        );
        assert_eq!(
            FcmSettings::parse(&both).unwrap_err().key,
            "service_account"
        );
        let err = FcmSettings::parse(&toml::Table::new()).unwrap_err();
        assert_eq!(err.key, "service_account_file");
        let mut missing = toml::Table::new();
        missing.insert(
            "service_account_file".into(),
            toml::Value::String("/nonexistent/firebase.json".into()),
        );
        let err = FcmSettings::parse(&missing).unwrap_err();
        assert_eq!(err.key, "service_account_file");
        assert!(err.message.contains("cannot read"), "{err:?}");
    }

    #[test]
    fn each_broken_key_file_is_explained_without_quoting_it() {
        use serde_json::json;
        let mangled = TEST_KEY.replacen("MII", "MIA", 1);
        let cases = [
            (
                String::from("{\"type\": \"service_account\","),
                "not valid JSON",
            ),
            (String::from("[]"), "expected a JSON object"),
            (
                key_json(json!({"type": "authorized_user"})),
                "`type` is `authorized_user`",
            ),
            (key_json(json!({"type": null})), "`type` must be"),
            (
                key_json(json!({"client_email": null})),
                "`client_email` is missing",
            ),
            (
                key_json(json!({"private_key": null})),
                "`private_key` is missing",
            ),
            (
                key_json(json!({"token_uri": null})),
                "`token_uri` is missing",
            ),
            (
                key_json(json!({"project_id": null})),
                "`project_id` is missing",
            ),
            (
                key_json(json!({"project_id": 7})),
                "`project_id` must be a string",
            ),
            (
                key_json(json!({"token_uri": "http://oauth2.googleapis.com/token"})),
                "`token_uri` must be an https:// URL",
            ),
            (
                key_json(
                    json!({"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"}),
                ),
                "`private_key` is not an RSA private key",
            ),
            (
                key_json(json!({"private_key": mangled})),
                "`private_key` is not an RSA private key",
            ),
        ];
        for (json, expected) in cases {
            let err = ServiceAccount::parse(&json).unwrap_err();
            assert!(err.contains(expected), "{json:.60}: {err}");
            assert!(!err.contains("MII"), "the key leaks into: {err}");
        }
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let s = FcmSettings::parse(&table("", &key_json(serde_json::json!({})))).unwrap();
        let shown = format!("{s:?}");
        assert!(shown.contains("private_key: [redacted]"), "{shown}");
        assert!(!shown.contains("MII"), "{shown}");
    }
}
