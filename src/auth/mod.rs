//! Who is calling: Twilio (webhook signatures), an app holding a Twilio Access Token, or an
//! app backend holding an admin API key.

pub mod access_token;
pub mod signature;
pub mod webhook;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::domain::{AccountSid, Identity};
pub use access_token::{TokenError, TokenVerifier, VerifiedToken};

/// An authenticated caller of the bindings API or the WebSocket endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A device or app acting as one identity of one account.
    Client {
        account_sid: AccountSid,
        identity: Identity,
    },
    /// An app backend that may manage every identity of the configured accounts. `key` is the
    /// admin key's position in the configuration (rate limits count per key).
    Admin { key: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("the Authorization header is not a Bearer credential")]
    Scheme,
    #[error("unknown admin key")]
    UnknownAdminKey,
    #[error("access token refused: {0}")]
    Token(#[from] TokenError),
}

impl Caller {
    /// What rate limits count against: the identity for a token holder, the key for an admin.
    pub fn rate_key(&self) -> String {
        match self {
            Caller::Client {
                account_sid,
                identity,
            } => format!("client:{account_sid}:{identity}"),
            Caller::Admin { key } => format!("admin:{key}"),
        }
    }
}

/// Verifies bearer credentials: Access Tokens (three dot-separated parts) and admin keys.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: TokenVerifier,
    /// SHA-256 of each admin key: the keys themselves are not kept, and comparing digests
    /// reveals nothing useful through timing.
    admin_key_digests: Vec<[u8; 32]>,
}

impl Authenticator {
    pub fn new(config: &Config) -> Self {
        Self {
            tokens: TokenVerifier::new(&config.accounts),
            admin_key_digests: config
                .admin
                .api_keys
                .iter()
                .map(|k| Sha256::digest(k.expose().as_bytes()).into())
                .collect(),
        }
    }

    /// The `Authorization` header's value, if any.
    pub fn authorization_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, credential) = header.trim().split_once(' ').ok_or(AuthError::Scheme)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Scheme);
        }
        self.bearer(credential.trim())
    }

    /// A WebSocket's Access Token: the `Authorization` header's Bearer credential, else the
    /// `access_token` query parameter (browsers cannot set headers on a WebSocket). Admin keys
    /// open no socket: a socket is one identity's.
    pub fn socket_token(
        &self,
        header: Option<&str>,
        query: Option<&str>,
    ) -> Result<VerifiedToken, AuthError> {
        let from_header = header
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let token = from_header.or(query).ok_or(AuthError::Missing)?;
        self.access_token(token)
    }

    pub fn bearer(&self, credential: &str) -> Result<Caller, AuthError> {
        if credential.is_empty() {
            return Err(AuthError::Missing);
        }
        if credential.split('.').count() == 3 {
            return self.access_token(credential).map(|t| Caller::Client {
                account_sid: t.account_sid,
                identity: t.identity,
            });
        }
        let digest: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
        match self.admin_key_digests.iter().position(|d| *d == digest) {
            Some(key) => Ok(Caller::Admin { key }),
            None => Err(AuthError::UnknownAdminKey),
        }
    }

    pub fn access_token(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        Ok(self.tokens.verify(token)?)
    }
}
