//! A local APNs: HTTP/2 over TLS with a certificate from the tests' own CA (given to callrelay as
//! `ca_file`), serving `POST [/<prefix>]/3/device/<token>` as Apple does. It checks each
//! provider token (ES256 signature against the team's public key, `kid`, `iss`, `iat`) or, in
//! certificate mode, makes the TLS layer demand a client certificate; records every request;
//! and answers what the test scripted, in order, then `200` with an `apns-id`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Version};
use axum::response::Response;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::tls::{PeerCertificate, TestCa, TlsServer, serve, temp_file};

/// An APNs signing key of a (pretend) team: the `.p8` file callrelay reads and the public half
/// the mock checks signatures with.
pub struct TeamKey {
    pub team_id: String,
    pub key_id: String,
    pub p8_pem: String,
    pub p8_file: tempfile::TempPath,
    public_pem: String,
}

impl TeamKey {
    /// `team_id` and `key_id` are ten letters and digits, like Apple's.
    pub fn generate(team_id: &str, key_id: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let p8_pem = key.serialize_pem();
        Self {
            team_id: team_id.into(),
            key_id: key_id.into(),
            p8_file: temp_file("AuthKey.p8", &p8_pem),
            p8_pem,
            public_pem: key.public_key_pem(),
        }
    }
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub reason: Option<&'static str>,
    pub delay: Option<Duration>,
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            status: 200,
            reason: None,
            delay: None,
            retry_after: None,
        }
    }

    pub fn error(status: u16, reason: &'static str) -> Self {
        Self {
            status,
            reason: Some(reason),
            ..Self::ok()
        }
    }

    /// The same answer, after `delay`.
    pub fn after(self, delay: Duration) -> Self {
        Self {
            delay: Some(delay),
            ..self
        }
    }
}

/// A request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The path before `/3/device/` (`/prod`, `/sandbox`, or empty).
    pub prefix: String,
    pub device_token: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client certificate the TLS connection presented (DER).
    pub client_certificate: Option<Vec<u8>>,
    /// The provider token (`authorization: bearer …`), if any.
    pub bearer: Option<String>,
    /// The `kid` of a provider token that passed every check.
    pub verified_key_id: Option<String>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

enum Mode {
    /// Token authentication: key id → (team id, public key).
    Token(HashMap<String, (String, DecodingKey)>),
    /// Certificate authentication, enforced by TLS.
    Certificate,
}

struct MockState {
    mode: Mode,
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
    /// Provider tokens whose signature already checked out (the mock verifies each once).
    verified: Mutex<HashSet<String>>,
    /// Answers produced, each after its scripted delay.
    answered: AtomicUsize,
}

pub struct MockApns {
    pub server: TlsServer,
    /// The CA that issued the mock's server certificate: callrelay's `ca_file`.
    pub ca: TestCa,
    state: Arc<MockState>,
}

impl MockApns {
    /// A mock that accepts provider tokens signed by any of `keys`.
    pub async fn token_auth(keys: &[&TeamKey]) -> Self {
        let keys = keys
            .iter()
            .map(|k| {
                (
                    k.key_id.clone(),
                    (
                        k.team_id.clone(),
                        DecodingKey::from_ec_pem(k.public_pem.as_bytes()).unwrap(),
                    ),
                )
            })
            .collect();
        Self::start(Mode::Token(keys), None).await
    }

    /// A mock whose TLS layer demands a client certificate issued by `client_ca`.
    pub async fn certificate_auth(client_ca: &TestCa) -> Self {
        Self::start(Mode::Certificate, Some(client_ca)).await
    }

    async fn start(mode: Mode, client_ca: Option<&TestCa>) -> Self {
        let ca = TestCa::new("apns");
        let state = Arc::new(MockState {
            mode,
            requests: Mutex::default(),
            script: Mutex::default(),
            verified: Mutex::default(),
            answered: AtomicUsize::new(0),
        });
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = serve(router, ca.server_config(client_ca)).await;
        Self { server, ca, state }
    }

    /// An `[[apps]]` entry with token authentication signed by `key`, both environments
    /// routed to this mock (under `/prod` and `/sandbox`) and its CA trusted; `extra` is
    /// appended to the entry.
    pub fn token_app(&self, name: &str, topic: &str, key: &TeamKey, extra: &str) -> String {
        let quoted = |p: &std::path::Path| serde_json::to_string(&p.to_str().unwrap()).unwrap();
        format!(
            r#"
[[apps]]
name = "{name}"
channel = "apns"
topic = "{topic}"
team_id = "{team}"
key_id = "{kid}"
key_file = {key_file}
production_url = "{prod}"
sandbox_url = "{sandbox}"
ca_file = {ca}
{extra}
"#,
            team = key.team_id,
            kid = key.key_id,
            key_file = quoted(&key.p8_file),
            prod = self.url("/prod"),
            sandbox = self.url("/sandbox"),
            ca = quoted(&self.ca.ca_file),
        )
    }

    /// The base URL for `prefix` (e.g. `/prod`), for `production_url` and friends.
    pub fn url(&self, prefix: &str) -> String {
        format!("{}{prefix}", self.server.url())
    }

    /// The next requests get these answers, in order; afterwards, `200`.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// How many answers the mock produced, each once its scripted delay ran (a request still
    /// waiting out its delay is counted by `request_count` only).
    pub fn answered_count(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    /// The distinct provider tokens received, in the order first seen.
    pub fn distinct_bearer_tokens(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for r in self.state.requests.lock().unwrap().iter() {
            if let Some(b) = &r.bearer
                && !seen.contains(b)
            {
                seen.push(b.clone());
            }
        }
        seen
    }

    pub fn connection_count(&self) -> usize {
        self.server.connection_count()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn answer(status: u16, reason: Option<&str>, retry_after: Option<u64>) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header("apns-id", uuid::Uuid::new_v4().to_string().to_uppercase());
    if let Some(secs) = retry_after {
        builder = builder.header("retry-after", secs.to_string());
    }
    let body = match reason {
        None => Body::empty(),
        Some(reason) => {
            builder = builder.header("content-type", "application/json");
            let mut doc = serde_json::json!({ "reason": reason });
            if status == 410 {
                doc["timestamp"] = (unix_now() * 1000).into();
            }
            Body::from(doc.to_string())
        }
    };
    builder.body(body).unwrap()
}

#[derive(serde::Deserialize)]
struct Claims {
    iat: i64,
}

/// Checks a provider token as Apple does; `Err` is Apple's reason.
fn verify(
    state: &MockState,
    keys: &HashMap<String, (String, DecodingKey)>,
    jwt: &str,
) -> Result<String, &'static str> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| "InvalidProviderToken")?;
    if header.alg != Algorithm::ES256 {
        return Err("InvalidProviderToken");
    }
    let kid = header.kid.ok_or("InvalidProviderToken")?;
    let (team_id, key) = keys.get(&kid).ok_or("InvalidProviderToken")?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.required_spec_claims = ["iss".to_string()].into();
    validation.set_issuer(&[team_id]);
    let claims = jsonwebtoken::decode::<Claims>(jwt, key, &validation)
        .map_err(|_| "InvalidProviderToken")?
        .claims;
    // Apple refuses tokens older than an hour.
    if (unix_now() - claims.iat).abs() > 3600 {
        return Err("ExpiredProviderToken");
    }
    state.verified.lock().unwrap().insert(jwt.to_owned());
    Ok(kid)
}

async fn handle(
    State(state): State<Arc<MockState>>,
    axum::Extension(PeerCertificate(peer)): axum::Extension<PeerCertificate>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let Some((prefix, device_token)) = parts.uri.path().rsplit_once("/3/device/") else {
        return answer(404, Some("BadPath"), None);
    };
    if parts.method != Method::POST {
        return answer(405, Some("MethodNotAllowed"), None);
    }
    let bearer = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
        .map(str::to_owned);
    let auth: Result<Option<String>, &'static str> = match (&state.mode, &bearer) {
        (Mode::Token(_), None) => Err("MissingProviderToken"),
        (Mode::Token(keys), Some(jwt)) => {
            let known = state.verified.lock().unwrap().contains(jwt);
            if known {
                jsonwebtoken::decode_header(jwt)
                    .map(|h| h.kid)
                    .map_err(|_| "InvalidProviderToken")
            } else {
                verify(&state, keys, jwt).map(Some)
            }
        }
        // The TLS layer has already refused clients without a certificate from the client CA.
        (Mode::Certificate, _) if peer.is_none() => Err("MissingProviderToken"),
        (Mode::Certificate, _) => Ok(None),
    };
    state.requests.lock().unwrap().push(Recorded {
        prefix: prefix.to_owned(),
        device_token: device_token.to_owned(),
        version: parts.version,
        headers: parts.headers.clone(),
        body,
        client_certificate: peer,
        bearer,
        verified_key_id: auth.clone().ok().flatten(),
    });
    if let Err(reason) = auth {
        return answer(StatusCode::FORBIDDEN.as_u16(), Some(reason), None);
    }
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(Reply::ok);
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    state.answered.fetch_add(1, Ordering::SeqCst);
    answer(reply.status, reply.reason, reply.retry_after)
}
