//! The device-token index: one device token rings for one identity, without cross-key
//! atomicity.
//!
//! A binding lives in its identity's hash (`<p>:{AC…:bob}:bindings`); who owns a token lives
//! under the token's own hash tag (`<p>:addr:{AC…:apns:<token>}`, owner JSON), beside a
//! claims hash (`…:claims`: owner JSON → claim number) listing everyone who may hold the
//! token. On Redis Cluster these are different slots, so no script or transaction covers a
//! binding and its token together. The protocol orders the writes instead:
//!
//! 1. **Claim** (one script on the token's slot): the registration becomes the owner, gets a
//!    claim number above every earlier claim on the token, is listed in the claims hash, and
//!    learns everyone else listed there: the previous owner, and anyone whose registration or
//!    removal never finished.
//! 2. **Displace** every listed holder of *another* identity: remove from its hash the binding
//!    that holds the token under a claim numbered at most ours (committed or provisional), then
//!    strike it from the claims hash (unless it claimed again since).
//! 3. **Write provisionally**: the binding goes into the field `?<id>` (binding ids cannot
//!    contain `?`), with a `?` before its JSON. Readers skip such fields: a provisional binding
//!    never rings.
//! 4. **Check**: still the owner, under this claim number? If not, a later registration of the
//!    token won: withdraw the provisional binding and stop.
//! 5. **Commit** (one script on the identity's slot): if the provisional binding is still
//!    exactly ours, it becomes the binding `<id>`, its JSON ending with `"claim":<number>`.
//! 6. Afterwards, displace holders of the *same* identity (the same device under an older
//!    binding id: until now it rang there, so re-registering under a new id never leaves the
//!    device unreachable for a moment) and give up the binding's previous token, if it had
//!    another.
//!
//! Why one device never rings for two identities: a binding rings only once committed, and a
//! registration commits only after its check saw it as the owner. A later claimant of another
//! identity displaces it (step 2) before committing itself. Either the earlier binding was
//! committed before that removal, and is removed; or its commit comes after, finds its
//! provisional binding gone and does nothing. (Its provisional write was acknowledged before its
//! check, which came before the later claim, which came before the removal.) A registration
//! that dies or times out between steps leaves at worst a provisional binding, which never
//! rings, or an owner whose binding is not committed yet while the previous holder still rings
//! (one identity); it is still listed in the claims hash, so the next claimant displaces it.
//! A command that timed out may still be applied later (a frozen Redis runs what was queued
//! when it thaws): each step is conditional on claim numbers or exact values, so a late one
//! can only do what it would have done on time, or nothing.
//!
//! Claim numbers also keep a slow registration from deleting a newer one: a binding is removed
//! only if it was claimed before the remover's claim. A binding stored by an earlier version
//! has no claim number (0), and an owner recorded by one is listed with claim 0, so upgrading
//! needs no migration. Earlier versions also kept APNs tokens as sent: a registration looks
//! for an owner of its token spelt in upper case too, and displaces it the same way. `docs/decisions.md` ("The device-token index") has the rationale.

use super::scripts::{
    CLAIM_TOKEN, COMMIT_BINDING, DEL_IF_EQUAL, FORGET_CLAIM, HSET_KEEP_ALIVE, REFRESH_TOKEN,
    RELEASE_TOKEN, REMOVE_CLAIMED,
};
use super::{RedisStore, millis, owner_json, parse_owner, to_json};
use redis::AsyncCommands;

use crate::domain::{Binding, BindingId, Identity, PushChannel};
use crate::store::{PutOutcome, StoreError};

/// The hash field of a binding being registered.
pub fn provisional_field(id: &BindingId) -> String {
    format!("?{id}")
}

pub fn is_provisional(field: &str) -> bool {
    field.starts_with('?')
}

/// A committed binding as stored: its JSON with the claim number appended. `Binding` (and
/// earlier versions) ignore the extra member.
pub fn committed_json(binding: &Binding, claim: u64) -> String {
    let json = to_json(binding);
    format!("{},\"claim\":{claim}}}", &json[..json.len() - 1])
}

/// The claim number a stored binding was committed under; 0 when written by an earlier version.
pub fn claim_of(text: &str) -> u64 {
    text.strip_suffix('}')
        .and_then(|t| t.rsplit_once(",\"claim\":"))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

struct TokenClaim {
    number: u64,
    /// Owner JSON of everyone else who may hold the token.
    others: Vec<String>,
}

impl RedisStore {
    /// `Store::put_binding`, by the protocol above.
    pub(super) async fn register(&self, binding: Binding) -> Result<PutOutcome, StoreError> {
        let key = self.keys.bindings(&binding.account_sid, &binding.identity);
        let me = owner_json(&binding.identity, &binding.id);
        let ttl_ms = millis(binding.ttl());
        // What the id holds now: its `created_at` carries over, and its token, if another, is
        // given up once this one is committed.
        let current = self.hget(&key, binding.id.as_str()).await?;
        let current_binding = current
            .as_deref()
            .and_then(|t| serde_json::from_str::<Binding>(t).ok());
        // An expired binding counts as absent: the new one starts a new life.
        let previous = current_binding
            .clone()
            .filter(|b| !b.is_expired(binding.updated_at));
        let mut stored = binding;
        if let Some(p) = &previous {
            stored.created_at = p.created_at;
        }

        let claim = self.claim_token(&stored, &me, ttl_ms).await?;
        let mut holders: Vec<(String, String)> = claim
            .others
            .into_iter()
            .map(|holder| (stored.address.clone(), holder))
            .collect();
        holders.extend(self.upper_case_holder(&stored).await?);
        let mut displaced = Vec::new();
        let mut same_identity = Vec::new();
        for (address, holder) in holders {
            match parse_owner(&holder) {
                Some((identity, id)) if identity == stored.identity => {
                    same_identity.push((address, holder, identity, id));
                }
                Some((identity, id)) => {
                    if self
                        .displace(&stored, &address, &holder, &identity, &id, claim.number)
                        .await?
                    {
                        displaced.push((identity, id));
                    }
                }
                None => self.forget_claim(&stored, &holder, claim.number).await?,
            }
        }

        let committed = committed_json(&stored, claim.number);
        let provisional = format!("?{committed}");
        let field = provisional_field(&stored.id);
        let mut attempt = 0;
        let won = loop {
            attempt += 1;
            let mut c = self.conn.clone();
            let _: i64 = self
                .run(
                    HSET_KEEP_ALIVE
                        .key(&key)
                        .arg(&field)
                        .arg(&provisional)
                        .arg(ttl_ms)
                        .invoke_async(&mut c),
                )
                .await?;
            if !self.still_owner(&stored, &me, claim.number).await? {
                self.hdel_if_equal(&key, &field, &provisional).await?;
                break false;
            }
            let mut c = self.conn.clone();
            let done: i64 = self
                .run(
                    COMMIT_BINDING
                        .key(&key)
                        .arg(stored.id.as_str())
                        .arg(&committed)
                        .arg(ttl_ms)
                        .invoke_async(&mut c),
                )
                .await?;
            if done == 1 {
                break true;
            }
            // An earlier registration of this very binding wrote its provisional copy over ours
            // late; it will find it lost the token and withdraw. Ours again.
            if attempt >= 3 {
                return Err(StoreError::Unavailable(
                    "the binding kept changing while being registered".into(),
                ));
            }
        };

        if won {
            for (address, holder, identity, id) in same_identity {
                if self
                    .displace(&stored, &address, &holder, &identity, &id, claim.number)
                    .await?
                {
                    displaced.push((identity, id));
                }
            }
            if let (Some(old), Some(text)) = (&current_binding, &current)
                && (old.channel != stored.channel || old.address != stored.address)
            {
                self.release_token(old, claim_of(text)).await?;
            }
        } else {
            // As if it had been registered, then moved by the registration that came after.
            tracing::debug!(binding = %stored.id, identity = %stored.identity, "a later registration of the same token won");
        }
        let address_key = self
            .keys
            .address(&stored.account_sid, stored.channel, &stored.address);
        self.replicated(&[&key, &address_key]).await?;
        Ok(PutOutcome {
            binding: stored,
            created: previous.is_none(),
            displaced,
        })
    }

    async fn claim_token(
        &self,
        b: &Binding,
        me: &str,
        ttl_ms: u64,
    ) -> Result<TokenClaim, StoreError> {
        let mut c = self.conn.clone();
        let reply: Vec<String> = self
            .run(
                CLAIM_TOKEN
                    .key(self.keys.address(&b.account_sid, b.channel, &b.address))
                    .key(self.keys.claims(&b.account_sid, b.channel, &b.address))
                    .arg(me)
                    .arg(ttl_ms)
                    .invoke_async(&mut c),
            )
            .await?;
        let mut reply = reply.into_iter();
        let number = reply
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("the token claim has no number".into()))?;
        Ok(TokenClaim {
            number,
            others: reply.collect(),
        })
    }

    /// The owner of `b`'s token spelt in upper case, as bindings stored before APNs tokens were
    /// kept in lowercase may hold it: (that spelling, owner JSON).
    async fn upper_case_holder(&self, b: &Binding) -> Result<Option<(String, String)>, StoreError> {
        let upper = b.address.to_ascii_uppercase();
        if b.channel != PushChannel::Apns || upper == b.address {
            return Ok(None);
        }
        let mut c = self.conn.clone();
        let owner: Option<String> = self
            .run(c.get(self.keys.address(&b.account_sid, b.channel, &upper)))
            .await?;
        Ok(owner.map(|owner| (upper, owner)))
    }

    /// Removes the binding with which `holder` holds `b`'s token (spelt `address`), if claimed
    /// before `number`, then strikes `holder` from the token's index. Returns whether a
    /// committed binding went.
    async fn displace(
        &self,
        b: &Binding,
        address: &str,
        holder: &str,
        identity: &Identity,
        id: &BindingId,
        number: u64,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let removed: i64 = self
            .run(
                REMOVE_CLAIMED
                    .key(self.keys.bindings(&b.account_sid, identity))
                    .arg(id.as_str())
                    .arg(b.channel.as_str())
                    .arg(address)
                    .arg(number)
                    .invoke_async(&mut c),
            )
            .await?;
        if address == b.address {
            self.forget_claim(b, holder, number).await?;
        } else {
            // An entry of the old spelling: an owner and no claims, from an earlier version.
            let mut c = self.conn.clone();
            let _: i64 = self
                .run(
                    DEL_IF_EQUAL
                        .key(self.keys.address(&b.account_sid, b.channel, address))
                        .arg(holder)
                        .invoke_async(&mut c),
                )
                .await?;
        }
        Ok(removed == 1)
    }

    async fn forget_claim(&self, b: &Binding, holder: &str, number: u64) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(
                FORGET_CLAIM
                    .key(self.keys.claims(&b.account_sid, b.channel, &b.address))
                    .arg(holder)
                    .arg(number)
                    .invoke_async(&mut c),
            )
            .await?;
        Ok(())
    }

    async fn still_owner(&self, b: &Binding, me: &str, number: u64) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let (owner, claimed): (Option<String>, Option<String>) = self
            .run(
                redis::pipe()
                    .get(self.keys.address(&b.account_sid, b.channel, &b.address))
                    .hget(self.keys.claims(&b.account_sid, b.channel, &b.address), me)
                    .query_async(&mut c),
            )
            .await?;
        Ok(owner.as_deref() == Some(me) && claimed == Some(number.to_string()))
    }

    /// Gives up the token of a binding that was removed or now holds another token, unless
    /// it was claimed again since the binding's claim `number`.
    pub(super) async fn release_token(&self, b: &Binding, number: u64) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(
                RELEASE_TOKEN
                    .key(self.keys.address(&b.account_sid, b.channel, &b.address))
                    .key(self.keys.claims(&b.account_sid, b.channel, &b.address))
                    .arg(owner_json(&b.identity, &b.id))
                    .arg(number)
                    .invoke_async(&mut c),
            )
            .await?;
        Ok(())
    }

    /// Extends the token's index entries, only if `b` owns the token: a binding that lost its
    /// token must not keep the new owner's entry alive, nor cut it short.
    pub(super) async fn refresh_token(&self, b: &Binding, ttl_ms: u64) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(
                REFRESH_TOKEN
                    .key(self.keys.address(&b.account_sid, b.channel, &b.address))
                    .key(self.keys.claims(&b.account_sid, b.channel, &b.address))
                    .arg(owner_json(&b.identity, &b.id))
                    .arg(ttl_ms)
                    .invoke_async(&mut c),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::{AccountSid, PushChannel};

    fn binding() -> Binding {
        let now = OffsetDateTime::UNIX_EPOCH;
        Binding {
            id: BindingId::parse("b1").unwrap(),
            account_sid: AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap(),
            identity: Identity::parse("bob").unwrap(),
            channel: PushChannel::Fcm,
            address: "t:1".into(),
            app: "android".into(),
            apns_environment: None,
            push_type: None,
            device_id: Some("claim\",\"claim\":9}".into()),
            ttl_seconds: 60,
            created_at: now,
            updated_at: now,
            expires_at: now,
        }
    }

    #[test]
    fn a_committed_binding_reads_as_the_binding_and_keeps_its_claim_number() {
        let b = binding();
        let text = committed_json(&b, 1_723_456_789_012_345);
        assert_eq!(serde_json::from_str::<Binding>(&text).unwrap(), b);
        assert_eq!(claim_of(&text), 1_723_456_789_012_345);
        // Written by an earlier version: claim 0, whatever a member's value looks like.
        assert_eq!(claim_of(&to_json(&b)), 0);
    }

    #[test]
    fn provisional_fields_cannot_be_binding_ids() {
        let field = provisional_field(&BindingId::parse("b1").unwrap());
        assert!(is_provisional(&field));
        assert!(BindingId::parse(&field).is_err());
        assert!(!is_provisional("b1"));
    }
}
