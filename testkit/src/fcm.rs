//! A local FCM over the real protocol (HTTP/2 over TLS): Google's OAuth token endpoint, which
//! checks each RS256 assertion against the test key's public half, and `messages:send`, which
//! checks the bearer token, records what it received and answers what each test scripts.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::tls::{TestCa, TlsServer, serve, temp_file};
use tempfile::TempPath;

/// The test-only service-account key (it signs nothing real) and its public half.
pub const PRIVATE_KEY: &str = include_str!("../../tests/fixtures/fcm/test-service-account-key.pem");
pub const PUBLIC_KEY: &str =
    include_str!("../../tests/fixtures/fcm/test-service-account-key.pub.pem");
/// The `private_key_id` of the service-account files the mock writes; assertions carry it as
/// `kid`.
pub const KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How the mock answers one authorised `messages:send` request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// The FCM `errorCode` put in `error.details[]`.
    pub code: Option<&'static str>,
    pub retry_after: Option<u64>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            status: 200,
            code: None,
            retry_after: None,
            delay: None,
        }
    }

    /// Google's error answer for an FCM error code, with the HTTP status FCM uses for it.
    pub fn error(code: &'static str) -> Self {
        let status = match code {
            "UNREGISTERED" => 404,
            "INVALID_ARGUMENT" => 400,
            "SENDER_ID_MISMATCH" => 403,
            "QUOTA_EXCEEDED" => 429,
            "UNAVAILABLE" => 503,
            "INTERNAL" => 500,
            "THIRD_PARTY_AUTH_ERROR" => 401,
            other => panic!("no HTTP status known for {other}"),
        };
        Self {
            status,
            code: Some(code),
            retry_after: None,
            delay: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// One request to `messages:send`, as received.
#[derive(Clone, Debug)]
pub struct Sent {
    pub project: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// Whether its bearer token was one the mock issued and still honours.
    pub authorised: bool,
    pub at: Instant,
}

impl Sent {
    pub fn message(&self) -> &Value {
        &self.body["message"]
    }
}

#[derive(Default)]
struct MockState {
    token_url: OnceLock<String>,
    /// `client_email`s of the service-account files handed out; the only valid `iss`.
    accounts: Mutex<HashSet<String>>,
    token_requests: AtomicUsize,
    /// Why assertions were refused; a correct client never causes one.
    rejections: Mutex<Vec<String>>,
    valid_tokens: Mutex<HashSet<String>>,
    /// `expires_in` of issued tokens.
    expires_in: AtomicU64,
    /// Answer the token endpoint with this status instead of a token.
    token_failure: Mutex<Option<u16>>,
    /// Refuse every bearer token, even fresh ones.
    refuse_all_tokens: AtomicBool,
    sent: Mutex<Vec<Sent>>,
    script: Mutex<VecDeque<Reply>>,
    /// Successful answers whose body the client dropped before it was sent.
    unread_answers: Arc<AtomicUsize>,
    /// How long after its headers a successful answer's body goes out (microseconds).
    body_delay_us: AtomicU64,
    /// The service-account files handed out, removed with the mock.
    files: Mutex<Vec<TempPath>>,
}

/// Counts an answer body that was dropped before it went out.
struct Unread(Arc<AtomicUsize>, bool);

impl Drop for Unread {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The running mock, with the CA the app must trust (`ca_file`).
pub struct MockFcm {
    pub ca: TestCa,
    server: TlsServer,
    state: Arc<MockState>,
}

impl MockFcm {
    pub async fn start() -> Self {
        let ca = TestCa::new("fcm");
        let state = Arc::new(MockState {
            expires_in: AtomicU64::new(3600),
            body_delay_us: AtomicU64::new(1000),
            ..MockState::default()
        });
        let router = Router::new()
            .route("/token", post(token))
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(metadata_token),
            )
            .route("/v1/projects/{project}/messages:send", post(send))
            .with_state(state.clone());
        let server = serve(router, ca.server_config(None)).await;
        state
            .token_url
            .set(format!("{}/token", server.url()))
            .unwrap();
        Self { ca, server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.server.url())
    }

    /// A Google service-account key file's JSON for `project`, its `token_uri` pointing here.
    pub fn service_account_json(&self, project: &str) -> String {
        let email = format!("callrelay@{project}.iam.gserviceaccount.com");
        self.state.accounts.lock().unwrap().insert(email.clone());
        json!({
            "type": "service_account",
            "project_id": project,
            "private_key_id": KEY_ID,
            "private_key": PRIVATE_KEY,
            "client_email": email,
            "client_id": "109876543210987654321",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_url(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{email}"),
            "universe_domain": "googleapis.com"
        })
        .to_string()
    }

    /// A service-account key file for `project`, kept until the mock is dropped.
    pub fn service_account_file(&self, project: &str) -> PathBuf {
        let file = temp_file("firebase.json", self.service_account_json(project));
        let path = file.to_path_buf();
        self.state.files.lock().unwrap().push(file);
        path
    }

    /// An `[[apps]]` entry for an FCM app of `project` served by this mock.
    pub fn app_toml(&self, name: &str, project: &str) -> String {
        format!(
            "\n[[apps]]\nname = \"{name}\"\nchannel = \"fcm\"\nservice_account_file = \"{}\"\nbase_url = \"{}\"\nca_file = \"{}\"\n",
            self.service_account_file(project).display(),
            self.url(),
            self.ca.ca_file.display(),
        )
    }

    /// The next authorised sends answer these, in order; afterwards, 200.
    pub fn answer(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Every request to `messages:send`, authorised or not.
    pub fn sent(&self) -> Vec<Sent> {
        self.state.sent.lock().unwrap().clone()
    }

    /// How many requests reached `messages:send`, authorised or not.
    pub fn sent_count(&self) -> usize {
        self.state.sent.lock().unwrap().len()
    }

    /// The messages of the authorised sends.
    pub fn messages(&self) -> Vec<Value> {
        self.sent()
            .into_iter()
            .filter(|s| s.authorised)
            .map(|s| s.message().clone())
            .collect()
    }

    /// Requests to the token endpoint, granted or not.
    pub fn token_fetches(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    pub fn rejections(&self) -> Vec<String> {
        self.state.rejections.lock().unwrap().clone()
    }

    /// Forgets every token issued so far: the next send with one gets a 401.
    pub fn revoke_tokens(&self) {
        self.state.valid_tokens.lock().unwrap().clear();
    }

    pub fn refuse_all_tokens(&self) {
        self.state.refuse_all_tokens.store(true, Ordering::SeqCst);
    }

    pub fn fail_token_requests(&self, status: u16) {
        *self.state.token_failure.lock().unwrap() = Some(status);
    }

    pub fn connection_count(&self) -> usize {
        self.server.connection_count()
    }

    /// Successful answers' bodies go out with their headers (for measurements; by default
    /// they follow a millisecond later, which shows a client that stops reading early).
    pub fn answer_at_once(&self) {
        self.state.body_delay_us.store(0, Ordering::SeqCst);
    }

    /// Successful answers the client stopped reading (its HTTP/2 stream reset) before the
    /// body came.
    pub fn unread_answers(&self) -> usize {
        self.state.unread_answers.load(Ordering::SeqCst)
    }
}

/// `application/x-www-form-urlencoded` pairs.
fn form(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    std::str::from_utf8(body)
        .unwrap()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The metadata server's token endpoint (GKE Workload Identity, Compute Engine): it answers
/// only requests carrying `Metadata-Flavor: Google`, and here only for FCM's scope.
async fn metadata_token(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        state
            .rejections
            .lock()
            .unwrap()
            .push("metadata request without Metadata-Flavor: Google".into());
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    let scopes: Vec<(String, String)> = form(query.unwrap_or_default().as_bytes())
        .into_iter()
        .filter(|(k, _)| k == "scopes")
        .collect();
    if scopes.len() != 1 || scopes[0].1 != SCOPE {
        return token_error(&state, format!("metadata scopes {scopes:?}"));
    }
    let access_token = format!("ya29.metadata-{}", uuid::Uuid::new_v4().simple());
    state
        .valid_tokens
        .lock()
        .unwrap()
        .insert(access_token.clone());
    axum::Json(json!({
        "access_token": access_token,
        "expires_in": state.expires_in.load(Ordering::SeqCst),
        "token_type": "Bearer"
    }))
    .into_response()
}

fn token_error(state: &MockState, why: String) -> Response {
    state.rejections.lock().unwrap().push(why.clone());
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": "invalid_grant", "error_description": why})),
    )
        .into_response()
}

async fn token(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let n = state.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(status) = *state.token_failure.lock().unwrap() {
        return (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(
                json!({"error": "internal_failure", "error_description": "mock told to fail"}),
            ),
        )
            .into_response();
    }
    if headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| !v.starts_with("application/x-www-form-urlencoded"))
    {
        return token_error(&state, "not a form".into());
    }
    let pairs = form(&body);
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if field("grant_type").as_deref() != Some(GRANT_TYPE) {
        return token_error(&state, format!("grant_type is {:?}", field("grant_type")));
    }
    let Some(assertion) = field("assertion") else {
        return token_error(&state, "no assertion".into());
    };
    let header = match jsonwebtoken::decode_header(&assertion) {
        Ok(h) => h,
        Err(e) => return token_error(&state, format!("bad JWT header: {e}")),
    };
    if header.alg != Algorithm::RS256 || header.kid.as_deref() != Some(KEY_ID) {
        return token_error(
            &state,
            format!("alg {:?}, kid {:?}", header.alg, header.kid),
        );
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[state.token_url.get().unwrap()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    validation.leeway = 5;
    let key = DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
    let claims = match jsonwebtoken::decode::<Value>(&assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return token_error(&state, format!("assertion refused: {e}")),
    };
    let iss = claims["iss"].as_str().unwrap_or_default();
    if !state.accounts.lock().unwrap().contains(iss) {
        return token_error(&state, format!("unknown iss {iss}"));
    }
    if claims["scope"] != SCOPE {
        return token_error(&state, format!("scope is {}", claims["scope"]));
    }
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if iat.abs_diff(now) > 60 || exp <= iat || exp - iat > 3600 {
        return token_error(&state, format!("iat {iat}, exp {exp}, now {now}"));
    }
    let access_token = format!("ya29.mock-{n}-{}", uuid::Uuid::new_v4().simple());
    state
        .valid_tokens
        .lock()
        .unwrap()
        .insert(access_token.clone());
    axum::Json(json!({
        "access_token": access_token,
        "expires_in": state.expires_in.load(Ordering::SeqCst),
        "token_type": "Bearer"
    }))
    .into_response()
}

fn google_error(status: u16, code: Option<&str>, message: &str) -> Value {
    let api_status = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    let details: Vec<Value> = code
        .map(|c| {
            vec![json!({
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": c
            })]
        })
        .unwrap_or_default();
    json!({"error": {"code": status, "message": message, "status": api_status, "details": details}})
}

async fn send(
    State(state): State<Arc<MockState>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let authorised = !state.refuse_all_tokens.load(Ordering::SeqCst)
        && state.valid_tokens.lock().unwrap().contains(&bearer);
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    state.sent.lock().unwrap().push(Sent {
        project: project.clone(),
        headers,
        body: parsed.clone().unwrap_or(Value::Null),
        authorised,
        at: Instant::now(),
    });
    if !authorised {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(google_error(
                401,
                None,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            )),
        )
            .into_response();
    }
    if parsed.is_none() {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(google_error(400, None, "Invalid JSON payload received.")),
        )
            .into_response();
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
    if reply.status == 200 {
        let id = uuid::Uuid::new_v4().as_u128() % 10u128.pow(16);
        let body = json!({"name": format!("projects/{project}/messages/0:{id}")}).to_string();
        // The body a moment after the headers, in a frame of its own, as Google's front ends
        // may send it: a client that drops the answer unread resets the stream.
        let unread = Unread(state.unread_answers.clone(), false);
        let delay = Duration::from_micros(state.body_delay_us.load(Ordering::SeqCst));
        let body = futures_util::stream::once(async move {
            let mut unread = unread;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            unread.1 = true;
            Ok::<_, std::convert::Infallible>(Bytes::from(body))
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(axum::body::Body::from_stream(body))
            .unwrap();
    }
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        axum::Json(google_error(
            reply.status,
            reply.code,
            &format!("mock FCM answers {}", reply.code.unwrap_or("an error")),
        )),
    )
        .into_response();
    if let Some(secs) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}
