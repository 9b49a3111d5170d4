//! Developer helpers: mint an Access Token, send a correctly signed sample call notification,
//! listen on a WebSocket as an identity. They read the same configuration as the server, so
//! the secrets never have to be typed.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::auth::access_token;
use crate::auth::signature::{self, SignatureAlgorithm};
use crate::config::{AccountConfig, Config};
use crate::domain::{AccountSid, Identity};

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Print a Twilio Access Token for an identity, signed with the account's first API key.
    Token {
        #[arg(long)]
        identity: String,
        /// Account SID (default: the first configured account).
        #[arg(long)]
        account: Option<String>,
        /// Lifetime in seconds (at most 86400).
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Send a sample call notification for `client:<to>`, signed like Twilio signs it.
    SendWebhook {
        /// The callee identity.
        #[arg(long)]
        to: String,
        /// The caller shown in twi_from.
        #[arg(long, default_value = "alice")]
        from: String,
        #[arg(long)]
        account: Option<String>,
        /// callrelay's base URL (default: server.public_url, else the local listener).
        #[arg(long)]
        url: Option<String>,
        /// twi_message_id (default: a fresh one).
        #[arg(long)]
        message_id: Option<String>,
    },
    /// Connect to /v1/ws as an identity and print every notification received.
    Listen {
        #[arg(long)]
        identity: String,
        #[arg(long)]
        account: Option<String>,
        /// callrelay's base URL (default: the local listener).
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        device_id: Option<String>,
    },
}

pub async fn run(command: DevCommand, config: &Config) -> ExitCode {
    let result = match command {
        DevCommand::Token {
            identity,
            account,
            ttl,
        } => token(config, &identity, account.as_deref(), ttl).map(|t| println!("{t}")),
        DevCommand::SendWebhook {
            to,
            from,
            account,
            url,
            message_id,
        } => send_webhook(config, &to, &from, account.as_deref(), url, message_id).await,
        DevCommand::Listen {
            identity,
            account,
            url,
            device_id,
        } => listen(config, &identity, account.as_deref(), url, device_id).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callrelay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn account<'a>(config: &'a Config, sid: Option<&str>) -> Result<&'a AccountConfig, String> {
    match sid {
        Some(sid) => {
            let sid = AccountSid::parse(sid).map_err(|e| e.to_string())?;
            config
                .account(&sid)
                .ok_or_else(|| format!("account {sid} is not in the configuration"))
        }
        None => config
            .accounts
            .first()
            .ok_or_else(|| "the configuration has no [[accounts]]".to_string()),
    }
}

fn token(config: &Config, identity: &str, sid: Option<&str>, ttl: u64) -> Result<String, String> {
    let account = account(config, sid)?;
    let identity = Identity::parse(identity).map_err(|e| e.to_string())?;
    let (key, secret) = account.api_keys.first().ok_or_else(|| {
        format!(
            "account {} has no api_keys to sign tokens with",
            account.sid
        )
    })?;
    if ttl == 0 || ttl > access_token::MAX_LIFETIME.as_secs() {
        return Err("--ttl must be between 1 and 86400 seconds".into());
    }
    Ok(access_token::mint(
        &account.sid,
        key,
        secret,
        &identity,
        Duration::from_secs(ttl),
    ))
}

/// The local listener's base URL, with a wildcard address replaced by loopback.
fn local_base(config: &Config, scheme: &str) -> String {
    let addr = config.server.listen;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    format!("{scheme}://{host}:{}", addr.port())
}

async fn send_webhook(
    config: &Config,
    to: &str,
    from: &str,
    sid: Option<&str>,
    url: Option<String>,
    message_id: Option<String>,
) -> Result<(), String> {
    let account = account(config, sid)?;
    let token = account
        .auth_tokens
        .first()
        .ok_or_else(|| format!("account {} has no auth_token to sign with", account.sid))?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let body = serde_json::to_vec(&serde_json::json!({
        "twi_account_sid": account.sid,
        "twi_bridge_token": format!("sample-bridge-token-{id}"),
        "twi_call_sid": format!("CA{id}"),
        "twi_from": format!("client:{from}"),
        "twi_to": format!("client:{to}"),
        "twi_message_id": message_id.unwrap_or_else(|| format!("RM{id}")),
        "twi_message_type": "twilio.voice.call",
        "twi_params": "reason=sample",
    }))
    .map_err(|e| e.to_string())?;
    let base = url
        .or_else(|| config.server.public_url.clone())
        .unwrap_or_else(|| local_base(config, "http"));
    let target = format!(
        "{}/v1/twilio/call-notifications?bodySHA256={}",
        base.trim_end_matches('/'),
        signature::body_sha256_hex(&body)
    );
    let sig = signature::compute(
        SignatureAlgorithm::HmacSha1,
        token.expose().as_bytes(),
        &target,
        &[],
    );
    let response = reqwest::Client::new()
        .post(&target)
        .header("content-type", "application/json")
        .header("x-twilio-signature", sig)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("cannot reach {base}: {e}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{} {}", status.as_u16(), text);
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("not delivered ({status})"))
    }
}

async fn listen(
    config: &Config,
    identity: &str,
    sid: Option<&str>,
    url: Option<String>,
    device_id: Option<String>,
) -> Result<(), String> {
    let token = token(config, identity, sid, 3600)?;
    let base = url.unwrap_or_else(|| local_base(config, "ws"));
    let mut target = format!("{}/v1/ws", base.trim_end_matches('/'));
    if let Some(d) = device_id {
        target.push_str(&format!("?device_id={d}"));
    }
    let mut request = target
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad URL {target}: {e}"))?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| "token is not a valid header value".to_string())?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    eprintln!(
        "listening as {identity} on {target}; waiting for call notifications (Ctrl-C to stop)"
    );
    while let Some(message) = socket.next().await {
        match message.map_err(|e| e.to_string())? {
            Message::Text(text) => println!("{text}"),
            Message::Close(frame) => {
                eprintln!("closed by callrelay: {frame:?}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
