//! An APNs app's settings: the keys of its `[[apps]]` table, checked and resolved (secrets read,
//! URLs normalised, exactly one authentication method), then its key or certificate and extra CA
//! loaded.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use jsonwebtoken::EncodingKey;

use super::apns_credentials::{load_p8, load_pem_pair, load_pkcs12};
use super::{SettingsError, check_base_url, check_connections, extra_ca, parse_settings, secret};
use crate::config::{Secret, lenient};

pub const DEFAULT_PRODUCTION_URL: &str = "https://api.push.apple.com";
pub const DEFAULT_SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";
pub const DEFAULT_RINGING_WINDOW_SECS: u64 = 30;
pub const DEFAULT_ALERT_TEMPLATE: &str = "Incoming call from {from}";
pub const DEFAULT_NON_CALL_ALERT_TEMPLATE: &str = "Missed call from {from}";

/// What an APNs app sends for a notification whose `twi_message_type` is not
/// `twilio.voice.call` (Twilio has sent `twilio.voice.cancel`): never a VoIP push, because iOS
/// requires every VoIP push to be reported to CallKit as a new call, and an app that does not
/// stops receiving VoIP pushes or is terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonCallPush {
    /// Not sent over APNs (the default); WebSockets and FCM still get it.
    Skip,
    /// A background push (`content-available`), for an app that wakes to update its state.
    Background,
    /// An alert push with `non_call_alert_template` as its text.
    Alert,
}
pub const DEFAULT_CONNECTIONS: u64 = 1;
pub const MAX_CONNECTIONS: u64 = 16;
pub const MAX_RINGING_WINDOW_SECS: u64 = 300;
const MAX_ALERT_TEMPLATE_LEN: usize = 256;

/// The app's table as written (minus `name` and `channel`, which the core reads).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    topic: Option<String>,
    // Token authentication.
    team_id: Option<String>,
    key_id: Option<String>,
    key: Option<String>,
    key_file: Option<PathBuf>,
    // Certificate authentication, PEM.
    cert_file: Option<PathBuf>,
    private_key: Option<String>,
    private_key_file: Option<PathBuf>,
    // Certificate authentication, PKCS#12.
    pkcs12_file: Option<PathBuf>,
    pkcs12_password: Option<String>,
    pkcs12_password_file: Option<PathBuf>,
    // Where to send.
    base_url: Option<String>,
    production_url: Option<String>,
    sandbox_url: Option<String>,
    ca_file: Option<PathBuf>,
    // Delivery. Numbers also as strings: environment overrides always arrive as strings.
    #[serde(default, deserialize_with = "lenient::number")]
    ringing_window_secs: Option<u64>,
    alert_template: Option<String>,
    non_call_push: Option<NonCallPush>,
    non_call_alert_template: Option<String>,
    #[serde(default, deserialize_with = "lenient::number")]
    connections: Option<u64>,
}

/// An APNs app's settings, its key or certificate loaded.
#[derive(Clone)]
pub struct ApnsSettings {
    /// The bundle ID; VoIP pushes go to `<topic>.voip`.
    pub topic: String,
    pub auth: ApnsAuth,
    /// Base URLs without a trailing slash; requests go to `<base>/3/device/<token>`.
    pub production_url: String,
    pub sandbox_url: String,
    /// Trusted besides the system roots (`ca_file`).
    pub extra_ca: Vec<reqwest::Certificate>,
    pub ringing_window: Duration,
    pub alert_template: String,
    pub non_call_push: NonCallPush,
    pub non_call_alert_template: String,
    pub connections: usize,
    tls_setting: &'static str,
}

#[derive(Clone)]
pub enum ApnsAuth {
    /// Token authentication: requests carry a provider token signed with the `.p8` key.
    Token {
        team_id: String,
        key_id: String,
        key: EncodingKey,
    },
    /// Certificate authentication: the TLS client certificate says who we are.
    Certificate {
        identity: reqwest::Identity,
        /// The leaf certificate's notAfter, Unix seconds.
        not_after: i64,
    },
}

impl ApnsSettings {
    /// The setting to name when the app's HTTP client cannot be built with its TLS material.
    pub fn tls_setting(&self) -> &'static str {
        self.tls_setting
    }
}

/// Validated settings; nothing has been loaded or parsed as a key or certificate yet.
#[derive(Debug)]
struct Validated {
    /// The bundle ID; VoIP pushes go to `<topic>.voip`.
    pub topic: String,
    pub auth: AuthSettings,
    /// Base URLs without a trailing slash; requests go to `<base>/3/device/<token>`.
    pub production_url: String,
    pub sandbox_url: String,
    pub ca_file: Option<PathBuf>,
    pub ringing_window: Duration,
    pub alert_template: String,
    pub non_call_push: NonCallPush,
    pub non_call_alert_template: String,
    pub connections: usize,
}

#[derive(Debug)]
enum AuthSettings {
    Token {
        team_id: String,
        key_id: String,
        /// The `.p8` key's PEM text.
        key: Secret,
        /// `key` or `key_file`: the setting to name when the key is unusable.
        key_setting: &'static str,
    },
    Certificate {
        cert_file: PathBuf,
        private_key: Secret,
        /// `private_key` or `private_key_file`.
        key_setting: &'static str,
    },
    Pkcs12 {
        file: PathBuf,
        /// Keychain Access can export without a password; absent means empty.
        password: Secret,
    },
}

pub fn parse(table: &toml::Table) -> Result<ApnsSettings, SettingsError> {
    let raw: Raw = parse_settings(table)?;
    validate(raw)?.load()
}

impl Validated {
    /// Loads the extra CA, then the key or certificate.
    fn load(self) -> Result<ApnsSettings, SettingsError> {
        let extra_ca = extra_ca(self.ca_file.as_deref())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let (auth, tls_setting) = match self.auth {
            AuthSettings::Token {
                team_id,
                key_id,
                key,
                key_setting,
            } => {
                let key = load_p8(&key, key_setting)?;
                let auth = ApnsAuth::Token {
                    team_id,
                    key_id,
                    key,
                };
                (auth, "ca_file")
            }
            AuthSettings::Certificate {
                cert_file,
                private_key,
                key_setting,
            } => {
                let cert = load_pem_pair(&cert_file, &private_key, key_setting, now)?;
                let auth = ApnsAuth::Certificate {
                    identity: cert.identity,
                    not_after: cert.not_after,
                };
                (auth, "cert_file")
            }
            AuthSettings::Pkcs12 { file, password } => {
                let cert = load_pkcs12(&file, &password, now)?;
                let auth = ApnsAuth::Certificate {
                    identity: cert.identity,
                    not_after: cert.not_after,
                };
                (auth, "pkcs12_file")
            }
        };
        Ok(ApnsSettings {
            topic: self.topic,
            auth,
            production_url: self.production_url,
            sandbox_url: self.sandbox_url,
            extra_ca,
            ringing_window: self.ringing_window,
            alert_template: self.alert_template,
            non_call_push: self.non_call_push,
            non_call_alert_template: self.non_call_alert_template,
            connections: self.connections,
            tls_setting,
        })
    }
}

fn validate(raw: Raw) -> Result<Validated, SettingsError> {
    let topic = raw
        .topic
        .ok_or_else(|| SettingsError::new("topic", "is required (the app's bundle ID)"))?;
    check_topic(&topic)?;

    let auth = auth(
        raw.team_id,
        raw.key_id,
        raw.key,
        raw.key_file,
        raw.cert_file,
        raw.private_key,
        raw.private_key_file,
        raw.pkcs12_file,
        raw.pkcs12_password,
        raw.pkcs12_password_file,
    )?;

    let base = raw
        .base_url
        .map(|u| check_base_url("base_url", &u))
        .transpose()?;
    let production_url = match raw.production_url {
        Some(u) => check_base_url("production_url", &u)?,
        None => base
            .clone()
            .unwrap_or_else(|| DEFAULT_PRODUCTION_URL.to_owned()),
    };
    let sandbox_url = match raw.sandbox_url {
        Some(u) => check_base_url("sandbox_url", &u)?,
        None => base.unwrap_or_else(|| DEFAULT_SANDBOX_URL.to_owned()),
    };

    let window = raw
        .ringing_window_secs
        .unwrap_or(DEFAULT_RINGING_WINDOW_SECS);
    if !(1..=MAX_RINGING_WINDOW_SECS).contains(&window) {
        return Err(SettingsError::new(
            "ringing_window_secs",
            format!("{window} is out of range (1..={MAX_RINGING_WINDOW_SECS} seconds)"),
        ));
    }
    let alert_template = template(raw.alert_template, DEFAULT_ALERT_TEMPLATE, "alert_template")?;
    let non_call_alert_template = template(
        raw.non_call_alert_template,
        DEFAULT_NON_CALL_ALERT_TEMPLATE,
        "non_call_alert_template",
    )?;
    let connections = check_connections(
        raw.connections.unwrap_or(DEFAULT_CONNECTIONS),
        MAX_CONNECTIONS,
    )?;
    Ok(Validated {
        topic,
        auth,
        production_url,
        sandbox_url,
        ca_file: raw.ca_file,
        ringing_window: Duration::from_secs(window),
        alert_template,
        non_call_push: raw.non_call_push.unwrap_or(NonCallPush::Skip),
        non_call_alert_template,
        connections,
    })
}

/// An alert text: given or the default, 1 to `MAX_ALERT_TEMPLATE_LEN` bytes.
fn template(
    given: Option<String>,
    default: &str,
    setting: &'static str,
) -> Result<String, SettingsError> {
    let template = given.unwrap_or_else(|| default.to_owned());
    if template.trim().is_empty() || template.len() > MAX_ALERT_TEMPLATE_LEN {
        return Err(SettingsError::new(
            setting,
            format!("must be 1 to {MAX_ALERT_TEMPLATE_LEN} bytes of text"),
        ));
    }
    Ok(template)
}

/// Bundle IDs are letters, digits, `-` and `.`. The `.voip` suffix is callrelay's to add: a
/// topic that already has it would send VoIP pushes to `….voip.voip`, which Apple refuses.
fn check_topic(topic: &str) -> Result<(), SettingsError> {
    let ok = !topic.is_empty()
        && topic.len() <= 255
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        && !topic.starts_with('.')
        && !topic.ends_with('.');
    if !ok {
        return Err(SettingsError::new(
            "topic",
            format!("`{topic}` is not a bundle ID (letters, digits, '-' and '.')"),
        ));
    }
    if topic.ends_with(".voip") {
        return Err(SettingsError::new(
            "topic",
            "give the bundle ID without `.voip`; callrelay adds it for VoIP pushes",
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn auth(
    team_id: Option<String>,
    key_id: Option<String>,
    key: Option<String>,
    key_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    private_key: Option<String>,
    private_key_file: Option<PathBuf>,
    pkcs12_file: Option<PathBuf>,
    pkcs12_password: Option<String>,
    pkcs12_password_file: Option<PathBuf>,
) -> Result<AuthSettings, SettingsError> {
    // The first key of each method that is present, to name in errors.
    let token = [
        ("team_id", team_id.is_some()),
        ("key_id", key_id.is_some()),
        ("key", key.is_some()),
        ("key_file", key_file.is_some()),
    ];
    let pem = [
        ("cert_file", cert_file.is_some()),
        ("private_key", private_key.is_some()),
        ("private_key_file", private_key_file.is_some()),
    ];
    let pkcs12 = [
        ("pkcs12_file", pkcs12_file.is_some()),
        ("pkcs12_password", pkcs12_password.is_some()),
        ("pkcs12_password_file", pkcs12_password_file.is_some()),
    ];
    let first = |group: &[(&'static str, bool)]| group.iter().find(|(_, set)| *set).map(|g| g.0);
    let present: Vec<(&str, &'static str)> = [
        ("token authentication", first(&token)),
        ("certificate authentication (PEM)", first(&pem)),
        ("certificate authentication (PKCS#12)", first(&pkcs12)),
    ]
    .into_iter()
    .filter_map(|(name, key)| key.map(|k| (name, k)))
    .collect();
    match present.as_slice() {
        [] => Err(SettingsError::new(
            "key_file",
            "no APNs authentication is configured: set team_id, key_id and key_file (token \
             authentication), cert_file and private_key_file, or pkcs12_file",
        )),
        [_, (second, key), ..] => Err(SettingsError::new(
            *key,
            format!(
                "{second} is configured as well as {}; configure exactly one",
                present[0].0
            ),
        )),
        [("token authentication", _)] => {
            let team_id =
                team_id.ok_or_else(|| SettingsError::new("team_id", "is required with key_id"))?;
            check_apple_id("team_id", &team_id)?;
            let key_id =
                key_id.ok_or_else(|| SettingsError::new("key_id", "is required with team_id"))?;
            check_apple_id("key_id", &key_id)?;
            let key_setting = if key_file.is_some() {
                "key_file"
            } else {
                "key"
            };
            let key = secret("key", key, key_file)?.ok_or_else(|| {
                SettingsError::new("key_file", "is required: the .p8 key from Apple")
            })?;
            Ok(AuthSettings::Token {
                team_id,
                key_id,
                key,
                key_setting,
            })
        }
        [("certificate authentication (PEM)", _)] => {
            let cert_file = cert_file.ok_or_else(|| {
                SettingsError::new("cert_file", "is required with private_key_file")
            })?;
            let key_setting = if private_key_file.is_some() {
                "private_key_file"
            } else {
                "private_key"
            };
            let private_key =
                secret("private_key", private_key, private_key_file)?.ok_or_else(|| {
                    SettingsError::new("private_key_file", "is required with cert_file")
                })?;
            Ok(AuthSettings::Certificate {
                cert_file,
                private_key,
                key_setting,
            })
        }
        [_] => {
            let file = pkcs12_file.ok_or_else(|| {
                SettingsError::new("pkcs12_file", "is required with pkcs12_password")
            })?;
            let password = secret("pkcs12_password", pkcs12_password, pkcs12_password_file)?
                .unwrap_or_else(|| Secret::new(""));
            Ok(AuthSettings::Pkcs12 { file, password })
        }
    }
}

/// Apple's team and key identifiers are ten letters and digits.
fn check_apple_id(key: &str, value: &str) -> Result<(), SettingsError> {
    if value.len() == 10 && value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(SettingsError::new(
            key,
            "must be the ten letters and digits Apple shows in the developer account",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN_AUTH: &str = r#"
        topic = "com.example.voice"
        team_id = "TEAM123456"
        key_id = "KEY1234567"
        key = "-----BEGIN PRIVATE KEY-----"
    "#;

    /// Validates without loading the key or certificate (the tests name files that do not
    /// exist).
    fn parse_str(text: &str) -> Result<Validated, SettingsError> {
        validate(parse_settings(&toml::from_str(text).unwrap())?)
    }

    fn error_key(text: &str) -> String {
        parse_str(text).unwrap_err().key
    }

    #[test]
    fn defaults() {
        let s = parse_str(TOKEN_AUTH).unwrap();
        assert_eq!(s.topic, "com.example.voice");
        assert_eq!(s.production_url, DEFAULT_PRODUCTION_URL);
        assert_eq!(s.sandbox_url, DEFAULT_SANDBOX_URL);
        assert_eq!(s.ringing_window, Duration::from_secs(30));
        assert_eq!(s.alert_template, "Incoming call from {from}");
        assert_eq!(s.connections, 1);
        assert!(s.ca_file.is_none());
        match s.auth {
            AuthSettings::Token {
                team_id,
                key_id,
                key_setting,
                ..
            } => {
                assert_eq!(team_id, "TEAM123456");
                assert_eq!(key_id, "KEY1234567");
                assert_eq!(key_setting, "key");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn base_url_serves_both_environments_and_the_specific_ones_win() {
        let s = parse_str(&format!(
            "{TOKEN_AUTH}\nbase_url = \"https://proxy.internal:8443/apple/\""
        ))
        .unwrap();
        assert_eq!(s.production_url, "https://proxy.internal:8443/apple");
        assert_eq!(s.sandbox_url, "https://proxy.internal:8443/apple");
        let s = parse_str(&format!(
            "{TOKEN_AUTH}\nbase_url = \"https://proxy\"\nsandbox_url = \"https://127.0.0.1:1/sandbox\""
        ))
        .unwrap();
        assert_eq!(s.production_url, "https://proxy");
        assert_eq!(s.sandbox_url, "https://127.0.0.1:1/sandbox");
    }

    #[test]
    fn each_bad_setting_is_named() {
        let cases: &[(&str, &str)] = &[
            (r#"team_id = "TEAM123456""#, "topic"),
            (
                "topic = \"com.example.voice.voip\"\nkey = \"x\"\nteam_id = \"TEAM123456\"\nkey_id = \"KEY1234567\"",
                "topic",
            ),
            ("topic = \"com example\"", "topic"),
            ("topic = \"com.example\"", "key_file"),
            (
                &format!("{TOKEN_AUTH}\ncert_file = \"/c.pem\""),
                "cert_file",
            ),
            (
                &format!("{TOKEN_AUTH}\npkcs12_file = \"/c.p12\""),
                "pkcs12_file",
            ),
            (
                "topic = \"a.b\"\nprivate_key_file = \"/k\"\npkcs12_file = \"/c.p12\"",
                "pkcs12_file",
            ),
            (
                "topic = \"a.b\"\nteam_id = \"TEAM123456\"\nkey = \"x\"",
                "key_id",
            ),
            (
                "topic = \"a.b\"\nteam_id = \"TEAM123456\"\nkey_id = \"KEY1234567\"",
                "key_file",
            ),
            (
                "topic = \"a.b\"\nteam_id = \"short\"\nkey_id = \"KEY1234567\"\nkey = \"x\"",
                "team_id",
            ),
            (&format!("{TOKEN_AUTH}\nkey_file = \"/k.p8\""), "key"),
            (
                "topic = \"a.b\"\nteam_id = \"TEAM123456\"\nkey_id = \"KEY1234567\"\nkey_file = \"/nonexistent/k.p8\"",
                "key_file",
            ),
            ("topic = \"a.b\"\nprivate_key = \"k\"", "cert_file"),
            ("topic = \"a.b\"\ncert_file = \"/c\"", "private_key_file"),
            ("topic = \"a.b\"\npkcs12_password = \"p\"", "pkcs12_file"),
            (
                &format!("{TOKEN_AUTH}\nbase_url = \"http://x\""),
                "base_url",
            ),
            (
                &format!("{TOKEN_AUTH}\nproduction_url = \"not a url\""),
                "production_url",
            ),
            (
                &format!("{TOKEN_AUTH}\nsandbox_url = \"https://x/?q=1\""),
                "sandbox_url",
            ),
            (
                &format!("{TOKEN_AUTH}\nringing_window_secs = 0"),
                "ringing_window_secs",
            ),
            (
                &format!("{TOKEN_AUTH}\nringing_window_secs = 301"),
                "ringing_window_secs",
            ),
            (&format!("{TOKEN_AUTH}\nconnections = 0"), "connections"),
            (&format!("{TOKEN_AUTH}\nconnections = 17"), "connections"),
            (
                &format!("{TOKEN_AUTH}\nalert_template = \" \""),
                "alert_template",
            ),
            (
                &format!("{TOKEN_AUTH}\nconnections = \"four\""),
                "connections",
            ),
            (
                &format!("{TOKEN_AUTH}\nringing_window_secs = \"-1\""),
                "ringing_window_secs",
            ),
            (&format!("{TOKEN_AUTH}\nprivate_ky = \"x\""), "private_ky"),
        ];
        for (text, key) in cases {
            assert_eq!(&error_key(text), key, "{text}");
        }
    }

    /// Environment overrides (`CALLRELAY__APPS__0__CONNECTIONS=4`) are always strings.
    #[test]
    fn numbers_given_as_strings_are_accepted() {
        let s = parse_str(&format!(
            "{TOKEN_AUTH}\nconnections = \"4\"\nringing_window_secs = \" 45 \""
        ))
        .unwrap();
        assert_eq!(s.connections, 4);
        assert_eq!(s.ringing_window, Duration::from_secs(45));
        // Still range-checked once read.
        assert_eq!(
            error_key(&format!("{TOKEN_AUTH}\nconnections = \"17\"")),
            "connections"
        );
    }

    #[test]
    fn both_methods_are_refused_with_a_message_naming_them() {
        let e = parse_str(&format!(
            "{TOKEN_AUTH}\ncert_file = \"/c.pem\"\nprivate_key_file = \"/k.pem\""
        ))
        .unwrap_err();
        assert_eq!(e.key, "cert_file");
        assert!(e.message.contains("token authentication"), "{}", e.message);
        assert!(e.message.contains("exactly one"), "{}", e.message);
    }

    #[test]
    fn certificate_methods() {
        let s = parse_str("topic = \"a.b\"\ncert_file = \"/c.pem\"\nprivate_key = \"-----BEGIN\"")
            .unwrap();
        assert!(matches!(
            s.auth,
            AuthSettings::Certificate {
                key_setting: "private_key",
                ..
            }
        ));
        let s = parse_str("topic = \"a.b\"\npkcs12_file = \"/c.p12\"").unwrap();
        match s.auth {
            AuthSettings::Pkcs12 { password, .. } => assert_eq!(password.expose(), ""),
            other => panic!("{other:?}"),
        }
        let s = parse_str("topic = \"a.b\"\npkcs12_file = \"/c.p12\"\npkcs12_password = \"pw\"")
            .unwrap();
        match s.auth {
            AuthSettings::Pkcs12 { password, .. } => assert_eq!(password.expose(), "pw"),
            other => panic!("{other:?}"),
        }
    }
}
