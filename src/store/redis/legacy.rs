//! Data written by versions before 0.2: an identity's bindings as a hash of JSON
//! (`<p>:{AC…:bob}:bindings`) and the device-token index as an owner string and a claims hash
//! per token (`<p>:addr:{AC…:apns:<token>}` and `…:claims`), about 1.7 kB per FCM binding where
//! the layout of `keys.rs` takes 500 to 550 bytes (BENCHMARKS.md, scenario 9).
//!
//! Nothing has to be done before upgrading, and nothing is lost:
//! - Readers read the old hash beside the new string, in the same round trip, until the store
//!   is marked as moved (`<p>:layout` = `2`). An identity found with an old hash is moved in
//!   the background.
//! - Every script that changes an identity's string refuses while the old hash exists
//!   (`binding_scripts.rs`); the caller moves the identity (`move_identity`: one script, which
//!   checks the hash did not change meanwhile) and asks again.
//! - A registration looks for holders of its token in the old index too, and displaces them
//!   like any other (`index.rs`); then the old entries are deleted.
//! - `callrelay migrate` moves everything at once (`SCAN` on every master), then marks the
//!   store. A store with no key of the old layout when a replica starts is marked at once.
//!
//! Times of moved bindings keep whole milliseconds, the precision the new layout keeps.
//! While replicas of an earlier version still run, they do not see bindings a new replica
//! registered or moved: finish the rollout before relying on them, and run `callrelay
//! migrate` once no earlier version is left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::{FromRedisValue, Script};

use super::binding_scripts::{MERGE_HOLDERS, MOVE_LEGACY};
use super::keys::{Keys, LegacyKey as Legacy};
use super::link::Link;
use super::scripts::DEL_IF_EQUAL;
use super::{RedisStore, bounded, index, lines, millis};
use crate::domain::{AccountSid, Binding, BindingId, Identity, PushChannel, whole_millis};
use crate::store::StoreError;

/// The value of `<p>:layout` once nothing of the earlier layout is left.
const MOVED: &str = "2";

/// The error code of a script that refused because the identity's old hash is still there.
const LEGACY_CODE: &str = "CALLRELAY_LEGACY";

/// `SCAN` pages per master a replica reads at start looking for the earlier layout (1,000
/// keys each); a larger store waits for `callrelay migrate`.
const FRESH_CHECK_PAGES: usize = 100;

/// How often a replica asks whether the store was marked as moved.
const RECHECK: Duration = Duration::from_secs(60);

/// Whether the earlier layout may still hold data, as far as this replica knows.
#[derive(Debug, Default)]
pub(super) struct Layout {
    moved: AtomicBool,
}

impl Layout {
    pub fn may_hold_legacy(&self) -> bool {
        !self.moved.load(Ordering::Relaxed)
    }

    fn mark_moved(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }
}

/// What `callrelay migrate` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub identities: u64,
    pub bindings: u64,
    pub tokens: u64,
}

/// A binding as an earlier version stored it, with the claim number it was committed under.
fn parse_json(text: &str) -> Option<(Binding, u64)> {
    let binding: Binding = serde_json::from_str(text).ok()?;
    Some((binding, json_claim_of(text)))
}

/// The claim number of a binding stored as JSON; 0 when stored before claims were numbered.
pub(super) fn json_claim_of(text: &str) -> u64 {
    text.strip_suffix('}')
        .and_then(|t| t.rsplit_once(",\"claim\":"))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// The bindings of an old hash that ring (committed ones), with their claim numbers.
pub(super) fn read_hash(entries: &[(String, String)]) -> Vec<(Binding, u64)> {
    entries
        .iter()
        .filter(|(field, _)| !field.starts_with('?'))
        .filter_map(|(field, text)| {
            let parsed = parse_json(text);
            if parsed.is_none() {
                tracing::warn!(
                    field,
                    "skipping an unreadable binding of the earlier layout"
                );
            }
            parsed
        })
        .collect()
}

/// The same binding as the new layout keeps it: whole milliseconds, and an APNs token in
/// lower case (versions before lower-casing kept it as sent; one device, one spelling). A
/// binding read from the old layout is compared with its moved line in this form; any other
/// binding is already in it.
pub(super) fn normalised(mut b: Binding) -> Binding {
    b.created_at = whole_millis(b.created_at);
    b.updated_at = whole_millis(b.updated_at);
    b.expires_at = b.updated_at + b.ttl();
    b.address = spelling(b.channel, &b.address);
    b
}

/// How the new layout spells a token.
fn spelling(channel: PushChannel, address: &str) -> String {
    match channel {
        PushChannel::Apns => address.to_ascii_lowercase(),
        PushChannel::Fcm => address.to_owned(),
    }
}

/// An owner of the old index: `["identity","binding id"]`.
fn parse_owner_json(text: &str) -> Option<(Identity, BindingId)> {
    let (identity, id): (String, String) = serde_json::from_str(text).ok()?;
    Some((
        Identity::parse(&identity).ok()?,
        BindingId::parse(&id).ok()?,
    ))
}

impl RedisStore {
    /// Runs a script of `binding_scripts.rs` on `identity`'s string (and, as its second key,
    /// the old hash it checks for), moving the identity to the new layout first if the
    /// script says it must.
    pub(super) async fn on_lines<T: FromRedisValue>(
        &self,
        account: &AccountSid,
        identity: &Identity,
        script: &Script,
        args: &[&str],
    ) -> Result<T, StoreError> {
        let key = self.keys.bindings(account, identity);
        let old = self.keys.legacy_bindings(account, identity);
        for _ in 0..3 {
            let mut invocation = script.key(&key);
            invocation.key(&old);
            for a in args {
                invocation.arg(*a);
            }
            let mut c = self.conn.clone();
            match self.run_raw(invocation.invoke_async::<T>(&mut c)).await? {
                Err(e) if e.code() == Some(LEGACY_CODE) => {
                    self.move_identity(account, identity).await?;
                }
                result => return result.map_err(super::unavailable),
            }
        }
        Err(StoreError::Unavailable(
            "the identity's bindings kept changing while being moved to the new layout".into(),
        ))
    }

    /// Moves `identity`'s old hash, if it has one, into its string, and its bindings' tokens
    /// into the new index. Returns how many bindings and tokens moved.
    pub(super) async fn move_identity(
        &self,
        account: &AccountSid,
        identity: &Identity,
    ) -> Result<(u64, u64), StoreError> {
        let key = self.keys.bindings(account, identity);
        let old = self.keys.legacy_bindings(account, identity);
        for _ in 0..3 {
            let mut c = self.conn.clone();
            let entries: Vec<(String, String)> = self
                .run(redis::AsyncCommands::hgetall(&mut c, &old))
                .await?;
            if entries.is_empty() {
                return Ok((0, 0));
            }
            // Bindings being registered by an earlier version are left out: they never rang,
            // and that registration, finding its provisional binding gone, gives up.
            let bindings = read_hash(&entries);
            // Their tokens' entries first: once in its string, a binding is refreshed (and its
            // token's entry kept alive) in the new index only.
            let mut tokens = 0;
            for (b, _) in &bindings {
                tokens += u64::from(self.move_token(account, b.channel, &b.address).await?);
            }
            let moved: Vec<String> = bindings
                .into_iter()
                .map(|(b, claim)| {
                    let mut b = normalised(b);
                    b.account_sid = account.clone();
                    b.identity = identity.clone();
                    lines::line(&b, claim)
                })
                .collect();
            let mut invocation = MOVE_LEGACY.key(&key);
            invocation.key(&old).arg(entries.len());
            for (field, value) in &entries {
                invocation.arg(field).arg(value);
            }
            for line in &moved {
                invocation.arg(line);
            }
            let mut c = self.conn.clone();
            let done: i64 = self.run(invocation.invoke_async(&mut c)).await?;
            if done == 1 {
                tracing::debug!(%identity, bindings = moved.len(), "moved an identity's bindings to the new layout");
                return Ok((moved.len() as u64, tokens));
            }
        }
        Err(StoreError::Unavailable(
            "an identity's bindings of the earlier layout kept changing while being moved".into(),
        ))
    }

    /// Who holds `b`'s token in the old index (under its spelling, and for APNs in upper case
    /// as versions before lower-casing kept it): (spelling, identity, binding id).
    pub(super) async fn legacy_holders(
        &self,
        b: &Binding,
    ) -> Result<Vec<(String, Identity, BindingId)>, StoreError> {
        if !self.layout.may_hold_legacy() {
            return Ok(Vec::new());
        }
        let mut spellings = vec![b.address.clone()];
        let upper = b.address.to_ascii_uppercase();
        if b.channel == PushChannel::Apns && upper != b.address {
            spellings.push(upper);
        }
        let mut holders = Vec::new();
        for address in spellings {
            let owner_key = self
                .keys
                .legacy_address(&b.account_sid, b.channel, &address);
            let claims_key = self.keys.legacy_claims(&b.account_sid, b.channel, &address);
            let mut c = self.conn.clone();
            let (owner, claims): (Option<String>, Vec<(String, String)>) = self
                .run(
                    redis::pipe()
                        .get(&owner_key)
                        .hgetall(&claims_key)
                        .query_async(&mut c),
                )
                .await?;
            let listed = owner
                .into_iter()
                .chain(claims.into_iter().map(|(who, _)| who))
                .filter_map(|who| parse_owner_json(&who));
            for (identity, id) in listed {
                if !holders
                    .iter()
                    .any(|(a, i, d)| *a == address && *i == identity && *d == id)
                {
                    holders.push((address.clone(), identity, id));
                }
            }
        }
        Ok(holders)
    }

    /// Deletes the old index's entries of a token (spelt `address`) whose holders were
    /// displaced: the owner only if it is still `owner`, and the claims.
    pub(super) async fn drop_legacy_entry(
        &self,
        b: &Binding,
        address: &str,
        owner: (&Identity, &BindingId),
    ) -> Result<(), StoreError> {
        let owner_key = self.keys.legacy_address(&b.account_sid, b.channel, address);
        let claims_key = self.keys.legacy_claims(&b.account_sid, b.channel, address);
        let owner_json = serde_json::to_string(&(owner.0.as_str(), owner.1.as_str()))
            .expect("strings serialise");
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(
                DEL_IF_EQUAL
                    .key(&owner_key)
                    .arg(&owner_json)
                    .invoke_async(&mut c),
            )
            .await?;
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(redis::AsyncCommands::hdel(&mut c, &claims_key, &owner_json))
            .await?;
        Ok(())
    }

    /// Moves one token's entry of the old index into its bucket, then deletes it.
    async fn move_token(
        &self,
        account: &AccountSid,
        channel: PushChannel,
        address: &str,
    ) -> Result<bool, StoreError> {
        let owner_key = self.keys.legacy_address(account, channel, address);
        let claims_key = self.keys.legacy_claims(account, channel, address);
        let mut c = self.conn.clone();
        type Reply = (Option<String>, Vec<(String, String)>, i64, i64);
        let (owner, claims, owner_ttl, claims_ttl): Reply = self
            .run(
                redis::pipe()
                    .get(&owner_key)
                    .hgetall(&claims_key)
                    .pttl(&owner_key)
                    .pttl(&claims_key)
                    .query_async(&mut c),
            )
            .await?;
        if owner.is_none() && claims.is_empty() {
            return Ok(false);
        }
        let mut seq = 0u64;
        let mut holders: Vec<(String, u64)> = Vec::new();
        for (who, n) in &claims {
            let n: u64 = n.parse().unwrap_or(0);
            if who == "#seq" {
                seq = seq.max(n);
            } else if let Some((identity, _)) = parse_owner_json(who) {
                holders.push((index::holder(&identity), n));
            }
        }
        if let Some((identity, _)) = owner.as_deref().and_then(parse_owner_json) {
            let who = index::holder(&identity);
            if !holders.iter().any(|(h, _)| *h == who) {
                holders.push((who, 0));
            }
        }
        let ttl = owner_ttl.max(claims_ttl);
        let ttl_ms = if ttl > 0 {
            ttl as u64
        } else {
            millis(Duration::from_secs(crate::domain::DEFAULT_TTL_SECONDS))
        };
        let (bucket, field) = self
            .keys
            .token(account, channel, &spelling(channel, address));
        let mut invocation = MERGE_HOLDERS.key(&bucket);
        invocation.arg(&field).arg(seq).arg(ttl_ms);
        for (who, n) in &holders {
            invocation.arg(who).arg(*n);
        }
        let mut c = self.conn.clone();
        let _: i64 = self.run(invocation.invoke_async(&mut c)).await?;
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(redis::AsyncCommands::del(
                &mut c,
                &[&owner_key, &claims_key],
            ))
            .await?;
        Ok(true)
    }

    /// `callrelay migrate`: moves every identity and every token of the earlier layout, then
    /// marks the store as moved. Safe to run again, and beside serving replicas.
    pub async fn migrate(
        &self,
        mut progress: impl FnMut(&MigrationReport),
    ) -> Result<MigrationReport, StoreError> {
        let mut report = MigrationReport::default();
        let mut cursors = Vec::new();
        let pattern = format!("{}:*", self.keys.prefix());
        loop {
            let page = self
                .run(self.conn.scan_masters(&pattern, &mut cursors))
                .await?;
            for key in page {
                match self.keys.parse_legacy(&key) {
                    Some(Legacy::Identity(account, identity)) => {
                        let (bindings, tokens) = self.move_identity(&account, &identity).await?;
                        report.bindings += bindings;
                        report.tokens += tokens;
                        report.identities += u64::from(bindings > 0);
                    }
                    Some(Legacy::Token(account, channel, address)) => {
                        let moved = self.move_token(&account, channel, &address).await?;
                        report.tokens += u64::from(moved);
                    }
                    None => {}
                }
            }
            progress(&report);
            if cursors.is_empty() {
                break;
            }
        }
        let mut c = self.conn.clone();
        let _: () = self
            .run(redis::AsyncCommands::set(&mut c, self.keys.layout(), MOVED))
            .await?;
        self.layout.mark_moved();
        Ok(report)
    }

    /// Asks whether the store was marked as moved, now and every minute until it is. A store
    /// with no key of the earlier layout when asked first (a new one) is marked at once.
    pub(super) fn watch_layout(&self) {
        let (conn, keys, timeout) = (self.conn.clone(), self.keys.clone(), self.timeout);
        let layout = std::sync::Arc::downgrade(&self.layout);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let Some(watched) = layout.upgrade() else {
                    return;
                };
                match layout_moved(&conn, &keys, timeout, first).await {
                    Ok(true) => {
                        watched.mark_moved();
                        tracing::debug!("the store holds nothing of the earlier layout");
                        return;
                    }
                    Ok(false) => first = false,
                    Err(e) => tracing::debug!(error = %e, "could not read the store's layout"),
                }
                drop(watched);
                tokio::time::sleep(RECHECK).await;
            }
        });
    }
}

/// Whether `<p>:layout` says the store was moved. When `fresh_check`, a store whose keys
/// under the prefix hold nothing of the earlier layout (read in at most `FRESH_CHECK_PAGES`
/// pages per master) is marked as moved first.
async fn layout_moved(
    conn: &Link,
    keys: &Keys,
    timeout: Duration,
    fresh_check: bool,
) -> Result<bool, StoreError> {
    let mut c = conn.clone();
    let marker: Option<String> = bounded(
        conn,
        timeout,
        redis::AsyncCommands::get(&mut c, keys.layout()),
    )
    .await?;
    if marker.as_deref() == Some(MOVED) {
        return Ok(true);
    }
    if !fresh_check {
        return Ok(false);
    }
    let mut cursors = Vec::new();
    let pattern = format!("{}:*", keys.prefix());
    for page in 0.. {
        let keys_found = bounded(conn, timeout, conn.scan_masters(&pattern, &mut cursors)).await?;
        if keys_found.iter().any(|k| keys.parse_legacy(k).is_some()) {
            tracing::info!(
                "the store holds bindings of the layout before 0.2: they are read and moved as they change; `callrelay migrate` moves them all"
            );
            return Ok(false);
        }
        if cursors.is_empty() {
            break;
        }
        if page == FRESH_CHECK_PAGES {
            tracing::info!(
                "the store is too large to tell at start whether it holds bindings of the layout before 0.2; `callrelay migrate` settles it"
            );
            return Ok(false);
        }
    }
    let mut c = conn.clone();
    let _: () = bounded(
        conn,
        timeout,
        redis::AsyncCommands::set(&mut c, keys.layout(), MOVED),
    )
    .await?;
    Ok(true)
}
