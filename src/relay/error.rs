//! What can go wrong in the relay's two jobs. `http::problem` maps each variant to a status.

use crate::auth::AuthError;
use crate::auth::webhook::WebhookAuthError;
use crate::domain::{AccountSid, InvalidBinding, InvalidEvent, InvalidNotification};
use crate::store::StoreError;

use super::Summary;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid call notification: {0}")]
    Invalid(#[from] InvalidNotification),
    #[error("account {0} is not configured")]
    UnknownAccount(AccountSid),
    #[error("webhook authentication failed: {0}")]
    Unauthenticated(#[from] WebhookAuthError),
    #[error("no binding for the callee")]
    NoBinding,
    /// Every binding turned out dead and was removed.
    #[error("every binding of the callee was dead")]
    AllRemoved(Summary),
    /// No binding accepted the notification.
    #[error("no binding accepted the notification")]
    AllFailed(Summary),
    /// Another attempt holds the notification's claim and had not settled it by this one's
    /// deadline: it is still delivering, or it died and its claim lapses within
    /// `retry_after`. Not a duplicate: nothing says it was delivered.
    #[error("another attempt is still delivering the notification")]
    InProgress { retry_after: std::time::Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a status callback or an Event Streams delivery was not kept.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("invalid event: {0}")]
    Invalid(#[from] InvalidEvent),
    #[error("account {0} is not configured")]
    UnknownAccount(AccountSid),
    #[error("webhook authentication failed: {0}")]
    Unauthenticated(#[from] WebhookAuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a forwarding-target request of the admin API was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("authentication failed: {0}")]
    Unauthenticated(#[from] AuthError),
    #[error("forwarding targets are managed with an admin key")]
    AdminOnly,
    #[error("{0}")]
    Invalid(String),
    #[error("account {0} is not configured on this relay")]
    UnknownAccount(AccountSid),
    /// The name belongs to a target of the configuration, which the API does not change.
    #[error("target `{0}` is configured in the configuration file; change it there")]
    Configured(String),
    #[error("no target named `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("{0}")]
    Invalid(#[from] InvalidBinding),
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication failed: {0}")]
    Unauthenticated(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("no such binding")]
    NotFound,
    #[error("the identity already has {0} bindings, the most allowed")]
    TooManyBindings(usize),
    /// The binding names no usable push app.
    #[error("{0}")]
    App(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a call trace or a room ledger cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
