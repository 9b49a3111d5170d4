//! A test call notification, sent from the console by an admin: a sample payload signed with
//! the account's Auth Token (and carrying its webhook Basic credentials when it has them), put
//! through the very path Twilio's notifications take: authentication, lookup, dedupe claim,
//! delivery, trace.

use std::sync::Arc;

use base64::Engine;
use serde::Serialize;

use super::{RecordError, Relay};
use crate::auth::Caller;
use crate::auth::signature::{self, SignatureAlgorithm};
use crate::auth::webhook::WebhookCredentials;
use crate::domain::{AccountSid, CallNotification, Identity};

/// What the console shows of a test notification's answer.
#[derive(Debug, Clone, Serialize)]
pub struct TestCall {
    pub call_sid: String,
    /// The status Twilio would have been answered.
    pub status: u16,
    pub answer: &'static str,
    pub delivered: usize,
    pub removed: usize,
    pub failed: usize,
}

impl Relay {
    pub async fn send_test_notification(
        self: &Arc<Self>,
        caller: &Caller,
        account: Option<AccountSid>,
        identity: Identity,
    ) -> Result<TestCall, RecordError> {
        if !matches!(caller, Caller::Admin { .. }) {
            return Err(RecordError::Forbidden(
                "test notifications are sent with an admin key".into(),
            ));
        }
        let account = self.admin_account(account)?;
        let settings = self
            .config
            .account(&account)
            .expect("admin_account checked it is configured");
        let token = settings.auth_tokens.first().ok_or_else(|| {
            RecordError::BadRequest(format!(
                "account {account} has no auth_token to sign a test notification with"
            ))
        })?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let call_sid = format!("CA{id}");
        let body = serde_json::to_vec(&serde_json::json!({
            "twi_account_sid": account,
            "twi_bridge_token": format!("callrelay-console-test-{id}"),
            "twi_call_sid": call_sid,
            "twi_from": "client:callrelay-console",
            "twi_to": format!("client:{identity}"),
            "twi_message_id": format!("RM{id}"),
            "twi_message_type": "twilio.voice.call",
            "twi_params": "callrelay_test=1",
        }))
        .expect("a JSON object serialises");
        let base = self
            .config
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| "http://callrelay.invalid".into());
        let url = format!(
            "{base}/v1/twilio/call-notifications?bodySHA256={}",
            signature::body_sha256_hex(&body)
        );
        let signed = signature::compute(
            SignatureAlgorithm::HmacSha1,
            token.expose().as_bytes(),
            &url,
            &[],
        );
        let basic = settings.webhook_basic_auth.as_ref().map(|b| {
            let pair = format!("{}:{}", b.username, b.password.expose());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        let notification = CallNotification::parse(body.clone().into())
            .map_err(|e| RecordError::BadRequest(e.to_string()))?;
        let credentials = WebhookCredentials {
            url: &url,
            signature: Some(&signed),
            signature_settings: None,
            authorization: basic.as_deref(),
            body: &body,
            params: None,
        };
        let answer = self.notify(Arc::new(notification), &credentials).await;
        if let Err(super::WebhookError::Store(e)) = &answer {
            return Err(RecordError::Store(e.clone()));
        }
        let (status, outcome) = crate::http::problem::webhook_status(&answer);
        let summary = match answer {
            Ok(s) | Err(super::WebhookError::AllRemoved(s) | super::WebhookError::AllFailed(s)) => {
                s
            }
            Err(_) => super::Summary::default(),
        };
        Ok(TestCall {
            call_sid,
            status,
            answer: outcome,
            delivered: summary.delivered,
            removed: summary.removed,
            failed: summary.failed,
        })
    }
}
