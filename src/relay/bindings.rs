//! Managing push bindings on behalf of a caller: an Access Token holder manages its own
//! identity's bindings; an admin caller names the account and identity.

use super::{BindingError, Relay};
use crate::auth::Caller;
use crate::domain::SocketPresence;
use crate::domain::{AccountSid, Binding, BindingId, BindingRequest, Identity};

/// The (account, identity) a request acts on, once the caller is allowed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingScope {
    pub account_sid: AccountSid,
    pub identity: Identity,
}

/// Everything an identity has: stored push bindings and the sockets open right now.
#[derive(Debug, Clone)]
pub struct Listing {
    pub bindings: Vec<Binding>,
    pub sockets: Vec<SocketPresence>,
}

impl Relay {
    /// Decides which (account, identity) `caller` may act on, given what the request names.
    pub fn scope(
        &self,
        caller: &Caller,
        account_sid: Option<AccountSid>,
        identity: Option<Identity>,
    ) -> Result<BindingScope, BindingError> {
        match caller {
            Caller::Client {
                account_sid: own_account,
                identity: own_identity,
            } => {
                if account_sid.as_ref().is_some_and(|a| a != own_account) {
                    return Err(BindingError::Forbidden(
                        "the access token belongs to another account".into(),
                    ));
                }
                if identity.as_ref().is_some_and(|i| i != own_identity) {
                    return Err(BindingError::Forbidden(
                        "an access token may only manage its own identity's bindings".into(),
                    ));
                }
                Ok(BindingScope {
                    account_sid: own_account.clone(),
                    identity: own_identity.clone(),
                })
            }
            Caller::Admin { .. } => {
                let account_sid = account_sid.ok_or_else(|| {
                    BindingError::BadRequest("account_sid is required with an admin key".into())
                })?;
                if self.config.account(&account_sid).is_none() {
                    return Err(BindingError::Forbidden(format!(
                        "account {account_sid} is not configured on this relay"
                    )));
                }
                let identity = identity.ok_or_else(|| {
                    BindingError::BadRequest("identity is required with an admin key".into())
                })?;
                Ok(BindingScope {
                    account_sid,
                    identity,
                })
            }
        }
    }

    /// Creates (`id` absent: server-assigned) or replaces a binding. Returns the stored
    /// binding and whether it is new.
    /// `named` is the (account, identity) the query string names, if any; the body may name
    /// them too, but not differently.
    pub async fn register(
        &self,
        caller: &Caller,
        id: Option<BindingId>,
        request: BindingRequest,
        named: (Option<AccountSid>, Option<Identity>),
    ) -> Result<(Binding, bool), BindingError> {
        let id = match (id, &request.id) {
            (Some(path), Some(body)) if path != *body => {
                return Err(BindingError::BadRequest(format!(
                    "the body's id `{body}` differs from the URL's `{path}`"
                )));
            }
            (Some(path), _) => path,
            (None, Some(_)) => {
                return Err(BindingError::BadRequest(
                    "to choose the id, use PUT /v1/bindings/{id}".into(),
                ));
            }
            (None, None) => BindingId::generate(),
        };
        let account_sid = agree("account_sid", request.account_sid.clone(), named.0)?;
        let identity = agree("identity", request.identity.clone(), named.1)?;
        let scope = self.scope(caller, account_sid, identity)?;
        let app = self.resolve_app(&request)?;
        let binding =
            request.into_binding(id, scope.account_sid, scope.identity, app, self.clock.now());
        self.check_binding_limit(&binding).await?;
        let outcome = self.store.put_binding(binding).await?;
        for (identity, id) in &outcome.displaced {
            tracing::info!(
                binding = %outcome.binding.id,
                identity = %outcome.binding.identity,
                previous_identity = %identity,
                previous_binding = %id,
                "device token moved to a new binding"
            );
        }
        Ok((outcome.binding, outcome.created))
    }

    /// Refuses a new binding past the per-identity limit. Replacing a binding, or registering a
    /// token the identity already holds, adds nothing and is always allowed. Concurrent
    /// registrations may pass the limit by a few; it bounds abuse, not exact counts.
    async fn check_binding_limit(&self, new: &Binding) -> Result<(), BindingError> {
        let limit = self.config.limits.max_bindings_per_identity;
        let existing = self
            .store
            .list_bindings(&new.account_sid, &new.identity, self.clock.now())
            .await?;
        let replaces = existing
            .iter()
            .any(|b| b.id == new.id || (b.channel == new.channel && b.address == new.address));
        if !replaces && existing.len() >= limit {
            return Err(BindingError::TooManyBindings(limit));
        }
        Ok(())
    }

    fn resolve_app(&self, request: &BindingRequest) -> Result<String, BindingError> {
        let channel = request.channel;
        match &request.app {
            Some(name) => {
                let app = self
                    .config
                    .apps
                    .iter()
                    .find(|a| &a.name == name)
                    .ok_or_else(|| {
                        BindingError::App(format!("no app named `{name}` is configured"))
                    })?;
                if app.channel != channel {
                    return Err(BindingError::App(format!(
                        "app `{name}` serves {}, not {}",
                        app.channel.as_str(),
                        channel.as_str()
                    )));
                }
                Ok(app.name.clone())
            }
            None => {
                let mut serving = self.config.apps.iter().filter(|a| a.channel == channel);
                match (serving.next(), serving.next()) {
                    (Some(app), None) => Ok(app.name.clone()),
                    (None, _) => Err(BindingError::App(format!(
                        "no {} app is configured on this relay",
                        channel.as_str()
                    ))),
                    (Some(_), Some(_)) => Err(BindingError::App(format!(
                        "several {} apps are configured: name one in `app`",
                        channel.as_str()
                    ))),
                }
            }
        }
    }

    pub async fn binding(
        &self,
        scope: &BindingScope,
        id: &BindingId,
    ) -> Result<Binding, BindingError> {
        self.store
            .get_binding(&scope.account_sid, &scope.identity, id, self.clock.now())
            .await?
            .ok_or(BindingError::NotFound)
    }

    pub async fn listing(&self, scope: &BindingScope) -> Result<Listing, BindingError> {
        let now = self.clock.now();
        let targets = self
            .store
            .targets(&scope.account_sid, &scope.identity, now)
            .await?;
        Ok(Listing {
            bindings: targets.bindings,
            sockets: targets.sockets,
        })
    }

    pub async fn remove(&self, scope: &BindingScope, id: &BindingId) -> Result<(), BindingError> {
        if self
            .store
            .delete_binding(&scope.account_sid, &scope.identity, id)
            .await?
        {
            Ok(())
        } else {
            Err(BindingError::NotFound)
        }
    }

    pub async fn remove_all(&self, scope: &BindingScope) -> Result<usize, BindingError> {
        Ok(self
            .store
            .delete_bindings(&scope.account_sid, &scope.identity)
            .await?)
    }
}

/// The value the body or the query string gives, refusing two different ones.
fn agree<T: PartialEq + std::fmt::Display>(
    name: &str,
    body: Option<T>,
    query: Option<T>,
) -> Result<Option<T>, BindingError> {
    match (body, query) {
        (Some(b), Some(q)) if b != q => Err(BindingError::BadRequest(format!(
            "{name} is `{b}` in the body but `{q}` in the query string"
        ))),
        (b, q) => Ok(b.or(q)),
    }
}
