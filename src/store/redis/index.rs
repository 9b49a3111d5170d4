//! The device-token index: one device token rings for one identity, without cross-key
//! atomicity.
//!
//! A binding lives in its identity's string (`<p>:{AC…:bob}:b`, `lines.rs`); which identities
//! may hold a token, and which owns it, lives in the token's entry of the index (a field of
//! one of the account's 256 bucket hashes, `<p>:tok:{AC…:<00-ff>}`, named by a digest of the
//! token; `binding_scripts.rs` has its format). On Redis Cluster these are different slots,
//! so no script or transaction covers a binding and its token together. The protocol orders
//! the writes instead:
//!
//! 1. **Claim** (one script on the token's bucket): the registration's identity becomes the
//!    owner, gets a claim number above every earlier claim on the token (replacing its own
//!    earlier claim, if any), is listed in the entry, and learns every other identity listed
//!    there: the previous owner, and any whose registration or removal never finished.
//! 2. **Displace** every other listed identity: remove from its string the bindings that hold
//!    the token under a claim numbered at most ours (committed or provisional), then strike it
//!    from the entry (unless it claimed again since).
//! 3. **Write provisionally**: the binding's line goes in with a `?` before it (binding ids
//!    cannot start with `?`). Readers skip such lines: a provisional binding never rings.
//! 4. **Check**: still the owner, under this claim number? If not, a later registration of the
//!    token won: withdraw the provisional binding and stop.
//! 5. **Commit** (one script on the identity's slot): if the provisional line is still
//!    exactly ours, it becomes the binding `<id>`, its line ending with the claim number; in
//!    the same step the identity's other bindings holding the token under an earlier claim go
//!    (the same device under an older binding id: it rang there until this moment, so
//!    re-registering under a new id never leaves the device unreachable).
//! 6. Afterwards, give up the binding's previous token, if it had another.
//!
//! Why one device never rings for two identities: a binding rings only once committed, and a
//! registration commits only after its check saw it as the owner. A later claimant of another
//! identity displaces it (step 2) before committing itself. Either the earlier binding was
//! committed before that removal, and is removed; or its commit comes after, finds its
//! provisional binding gone and does nothing. (Its provisional write was acknowledged before its
//! check, which came before the later claim, which came before the removal.) A registration
//! that dies or times out between steps leaves at worst a provisional binding, which never
//! rings, or an owner whose binding is not committed yet while the previous holder still rings
//! (one identity); it is still listed in the entry, so the next claimant displaces it.
//! A command that timed out may still be applied later (a frozen Redis runs what was queued
//! when it thaws): each step is conditional on claim numbers or exact values, so a late one
//! can only do what it would have done on time, or nothing.
//!
//! Two registrations of one identity: the later claim replaces the earlier in the entry, so
//! the earlier one's check fails and it withdraws; if it had committed already, the later
//! commit removes it. Claim numbers also keep a slow registration from deleting a newer one: a
//! binding is removed only if it was claimed before the remover's claim. A binding's removal
//! gives up its identity's claim only when no other binding of the identity holds the token. Holders found in the index of versions
//! before 0.2 (`legacy.rs`; APNs tokens spelt in upper case among them) are displaced the same
//! way, and their old entries deleted. `docs/decisions.md` ("The device-token index") has the
//! rationale.

use super::binding_scripts::{
    CLAIM_TOKEN, COMMIT_LINE, DEL_LINE_IF_EQUAL, FORGET_CLAIM, OWNS_TOKEN, PUT_LINE, REFRESH_TOKEN,
    RELEASE_TOKEN, REMOVE_CLAIMED,
};
use super::{RedisStore, lines, millis};

use crate::domain::{AccountSid, Binding, BindingId, Identity, whole_millis};
use crate::store::{PutOutcome, StoreError};

/// How the index names a holder of a token: its identity (which holds no tab or newline).
pub fn holder(identity: &Identity) -> String {
    identity.as_str().to_owned()
}

pub fn parse_holder(text: &str) -> Option<Identity> {
    Identity::parse(text).ok()
}

/// A token's entry in the index, as `binding_scripts.rs` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// The last claim number given out.
    pub seq: u64,
    /// When the entry lapses, in seconds since the epoch.
    pub expires: u64,
    /// Everyone who may hold the token, with their claim numbers.
    pub holders: Vec<(String, u64)>,
}

impl TokenEntry {
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.split('\n');
        let (seq, expires) = lines.next()?.split_once('\t')?;
        let seq: u64 = seq.parse().ok()?;
        let holders = lines
            .map(|l| {
                let (who, n) = l.rsplit_once('\t')?;
                // An empty number is the last one: the owner's.
                let n = if n.is_empty() { seq } else { n.parse().ok()? };
                Some((who.to_owned(), n))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            seq,
            expires: expires.parse().ok()?,
            holders,
        })
    }

    /// The holder whose claim is the last one.
    pub fn owner(&self) -> Option<&str> {
        self.holders
            .iter()
            .find(|(_, n)| *n == self.seq)
            .map(|(who, _)| who.as_str())
    }
}

struct TokenClaim {
    number: u64,
    /// Everyone else who may hold the token.
    others: Vec<String>,
}

/// An identity to displace, and whether it was found in the index of the earlier layout
/// (with the token's spelling there and the binding it named, to delete that entry).
struct Holder {
    identity: Identity,
    legacy: Option<(String, BindingId)>,
}

impl RedisStore {
    /// `Store::put_binding`, by the protocol above.
    pub(super) async fn register(&self, binding: Binding) -> Result<PutOutcome, StoreError> {
        let (account, identity) = (binding.account_sid.clone(), binding.identity.clone());
        let me = holder(&identity);
        let ttl_ms = millis(binding.ttl());
        // What the id holds now: its `created_at` carries over, and its token, if another, is
        // given up once this one is committed.
        let current = self
            .stored_binding(&account, &identity, &binding.id)
            .await?;
        // An expired binding counts as absent: the new one starts a new life.
        let previous = current
            .as_ref()
            .map(|(b, _)| b)
            .filter(|b| !b.is_expired(binding.updated_at));
        let mut stored = binding;
        stored.created_at = whole_millis(stored.created_at);
        stored.updated_at = whole_millis(stored.updated_at);
        stored.expires_at = stored.updated_at + stored.ttl();
        if let Some(p) = previous {
            stored.created_at = whole_millis(p.created_at);
        }
        let created = previous.is_none();

        // The earlier layout's index is read before the claim: `callrelay migrate` merges an
        // old entry into the bucket before deleting it, so a holder is either seen here or
        // listed by the claim.
        let legacy = self.legacy_holders(&stored).await?;
        let claim = self.claim_token(&stored, &me, ttl_ms).await?;
        let mut holders: Vec<Holder> = claim
            .others
            .iter()
            .filter_map(|text| {
                let parsed = parse_holder(text);
                if parsed.is_none() {
                    tracing::warn!(holder = text, "an unreadable holder in the token index");
                }
                parsed
            })
            .map(|identity| Holder {
                identity,
                legacy: None,
            })
            .collect();
        for (address, identity, id) in legacy {
            if identity == stored.identity {
                // The same identity: the commit below replaces or removes its binding.
                self.drop_legacy_entry(&stored, &address, (&identity, &id))
                    .await?;
            } else {
                holders.push(Holder {
                    identity,
                    legacy: Some((address, id)),
                });
            }
        }
        let mut displaced = Vec::new();
        for h in holders {
            for id in self.displace(&stored, &h, claim.number).await? {
                displaced.push((h.identity.clone(), id));
            }
        }

        let committed = lines::line(&stored, claim.number);
        let provisional = lines::provisional(&committed);
        let field = lines::field(&provisional).to_owned();
        let ttl = ttl_ms.to_string();
        let mut attempt = 0;
        let won = loop {
            attempt += 1;
            let _: i64 = self
                .on_lines(
                    &account,
                    &identity,
                    &PUT_LINE,
                    &[&field, &provisional, &ttl],
                )
                .await?;
            if !self.still_owner(&stored, &me, claim.number).await? {
                let _: i64 = self
                    .on_lines(&account, &identity, &DEL_LINE_IF_EQUAL, &[&provisional])
                    .await?;
                break false;
            }
            let done: Vec<String> = self
                .on_lines(
                    &account,
                    &identity,
                    &COMMIT_LINE,
                    &[
                        stored.id.as_str(),
                        &committed,
                        &ttl,
                        lines::channel_code(stored.channel),
                        &stored.address,
                        &claim.number.to_string(),
                    ],
                )
                .await?;
            let mut done = done.into_iter();
            if done.next().as_deref() == Some("1") {
                for id in done.filter_map(|id| BindingId::parse(&id).ok()) {
                    displaced.push((identity.clone(), id));
                }
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
            if let Some((old, number)) = &current
                && (old.channel != stored.channel || old.address != stored.address)
            {
                self.release_token(old, *number).await?;
            }
        } else {
            // As if it had been registered, then moved by the registration that came after.
            tracing::debug!(binding = %stored.id, identity = %stored.identity, "a later registration of the same token won");
        }
        let key = self.keys.bindings(&account, &identity);
        let (bucket, _) = self.keys.token(&account, stored.channel, &stored.address);
        self.replicated(&[&key, &bucket]).await?;
        Ok(PutOutcome {
            binding: stored,
            created,
            displaced,
        })
    }

    /// Runs one of the index's scripts on `b`'s token: KEYS[1] the bucket, ARGV[1] the field,
    /// then `args`.
    async fn on_token<T: redis::FromRedisValue>(
        &self,
        account: &AccountSid,
        b: &Binding,
        script: &redis::Script,
        args: &[&str],
    ) -> Result<T, StoreError> {
        let (bucket, field) = self.keys.token(account, b.channel, &b.address);
        let mut invocation = script.key(&bucket);
        invocation.arg(&field);
        for a in args {
            invocation.arg(*a);
        }
        let mut c = self.conn.clone();
        self.run(invocation.invoke_async(&mut c)).await
    }

    async fn claim_token(
        &self,
        b: &Binding,
        me: &str,
        ttl_ms: u64,
    ) -> Result<TokenClaim, StoreError> {
        let reply: Vec<String> = self
            .on_token(&b.account_sid, b, &CLAIM_TOKEN, &[me, &ttl_ms.to_string()])
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

    /// Removes the bindings with which `h` holds `b`'s token, if claimed before `number`,
    /// then strikes `h` from the token's entry. Returns the ids of the committed bindings
    /// removed.
    async fn displace(
        &self,
        b: &Binding,
        h: &Holder,
        number: u64,
    ) -> Result<Vec<BindingId>, StoreError> {
        let removed: Vec<String> = self
            .on_lines(
                &b.account_sid,
                &h.identity,
                &REMOVE_CLAIMED,
                &[
                    lines::channel_code(b.channel),
                    &b.address,
                    &number.to_string(),
                ],
            )
            .await?;
        if let Some((address, id)) = &h.legacy {
            self.drop_legacy_entry(b, address, (&h.identity, id))
                .await?;
        }
        // Also for a holder found in the old index: moving its identity just now moved its
        // entry into the bucket.
        self.forget_claim(b, &holder(&h.identity), number).await?;
        Ok(removed
            .iter()
            .filter_map(|id| BindingId::parse(id).ok())
            .collect())
    }

    async fn forget_claim(&self, b: &Binding, who: &str, number: u64) -> Result<(), StoreError> {
        let _: i64 = self
            .on_token(
                &b.account_sid,
                b,
                &FORGET_CLAIM,
                &[who, &number.to_string()],
            )
            .await?;
        Ok(())
    }

    async fn still_owner(&self, b: &Binding, me: &str, number: u64) -> Result<bool, StoreError> {
        let owns: i64 = self
            .on_token(&b.account_sid, b, &OWNS_TOKEN, &[me, &number.to_string()])
            .await?;
        Ok(owns == 1)
    }

    /// Gives up the token of a binding that was removed or now holds another token, unless
    /// its identity claimed it again since the binding's claim `number`. Callers release only
    /// when no other binding of the identity holds the token.
    pub(super) async fn release_token(&self, b: &Binding, number: u64) -> Result<(), StoreError> {
        let who = holder(&b.identity);
        let _: i64 = self
            .on_token(
                &b.account_sid,
                b,
                &RELEASE_TOKEN,
                &[&who, &number.to_string()],
            )
            .await?;
        Ok(())
    }

    /// Extends the token's entry, only if `b` owns the token: a binding that lost its token
    /// must not keep the new owner's entry alive.
    pub(super) async fn refresh_token(&self, b: &Binding, ttl_ms: u64) -> Result<(), StoreError> {
        let who = holder(&b.identity);
        let _: i64 = self
            .on_token(
                &b.account_sid,
                b,
                &REFRESH_TOKEN,
                &[&who, &ttl_ms.to_string()],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_an_identity() {
        let bob = Identity::parse("team: bob").unwrap();
        assert_eq!(parse_holder(&holder(&bob)), Some(bob));
        assert_eq!(parse_holder(""), None);
    }

    #[test]
    fn an_entry_names_its_owner_by_an_empty_number() {
        let e = TokenEntry::parse("17\t1800000000\n12345\t\nalice\t9").unwrap();
        assert_eq!(e.seq, 17);
        assert_eq!(e.expires, 1_800_000_000);
        assert_eq!(
            e.holders,
            vec![("12345".to_owned(), 17), ("alice".to_owned(), 9)]
        );
        assert_eq!(e.owner(), Some("12345"));
        assert_eq!(TokenEntry::parse("17\t1800000000").unwrap().owner(), None);
    }
}
