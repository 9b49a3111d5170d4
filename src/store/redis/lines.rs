//! How an identity's bindings are written in Redis: one string per identity
//! (`<p>:{AC…:bob}:b`), one line per binding, fields separated by tabs.
//!
//! ```text
//! <id>\t<channel>\t<address>\t<app>\t<environment>\t<push type>\t<device id>\t<ttl>\t<created ms>\t<updated ms>\t<claim>
//! ```
//!
//! Why a string of lines and not a hash of JSON: a device token (an FCM token is about 150
//! characters) makes every value longer than Redis's `hash-max-listpack-value` (64 bytes), so
//! a hash of bindings is a hashtable, which costs about 170 bytes more than the same bytes in a
//! string; and JSON repeats the account, the identity, every member's name and three RFC 3339
//! times. The line keeps every field of a binding: the account and the identity are in the
//! key, `expires_at` is `updated_at` plus the TTL, and times are whole milliseconds (callrelay
//! makes them so when it registers or refreshes a binding: `Binding::at_millis`).
//!
//! - `channel` is `a` (APNs) or `f` (FCM); `environment` is `p`, `s` or empty; `push type` is
//!   `v`, `a`, `b` or empty; `ttl` is empty for the default (a year).
//! - No field can hold a tab or a newline: ids, app names and tokens are checked against small
//!   alphabets and identities and device ids may not hold control characters.
//! - A line whose id starts with `?` is a binding being registered (`index.rs`): readers skip
//!   it. Binding ids cannot start with `?`.
//! - `claim` is the claim number the binding was committed under (`index.rs`), always last, so
//!   the scripts find it with one pattern.
//!
//! The scripts that change these strings (`binding_scripts.rs`) read and write the same lines.

use time::OffsetDateTime;

use crate::domain::{
    AccountSid, ApnsEnvironment, Binding, BindingId, DEFAULT_TTL_SECONDS, Identity, PushChannel,
    PushType,
};

/// The code of a channel in a line.
pub fn channel_code(channel: PushChannel) -> &'static str {
    match channel {
        PushChannel::Apns => "a",
        PushChannel::Fcm => "f",
    }
}

/// A binding's line (without its claim number and the tab before it).
pub fn body(b: &Binding) -> String {
    let env = match b.apns_environment {
        Some(ApnsEnvironment::Production) => "p",
        Some(ApnsEnvironment::Sandbox) => "s",
        None => "",
    };
    let push = match b.push_type {
        Some(PushType::Voip) => "v",
        Some(PushType::Alert) => "a",
        Some(PushType::Background) => "b",
        None => "",
    };
    let ttl = if b.ttl_seconds == DEFAULT_TTL_SECONDS {
        String::new()
    } else {
        b.ttl_seconds.to_string()
    };
    format!(
        "{}\t{}\t{}\t{}\t{env}\t{push}\t{}\t{ttl}\t{}\t{}",
        b.id,
        channel_code(b.channel),
        b.address,
        b.app,
        b.device_id.as_deref().unwrap_or(""),
        unix_ms(b.created_at),
        unix_ms(b.updated_at),
    )
}

/// A committed binding's line: its body and the claim number it was committed under.
pub fn line(b: &Binding, claim: u64) -> String {
    format!("{}\t{claim}", body(b))
}

/// The line of a binding being registered: readers skip it.
pub fn provisional(line: &str) -> String {
    format!("?{line}")
}

/// The id a line is about (`?<id>` for a provisional one).
pub fn field(line: &str) -> &str {
    line.split('\t').next().unwrap_or("")
}

pub fn is_provisional(line: &str) -> bool {
    line.starts_with('?')
}

/// The claim number a line was committed under.
pub fn claim_of(line: &str) -> u64 {
    line.rsplit('\t')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Every line of an identity's string, provisional ones included.
pub fn split(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').filter(|l| !l.is_empty())
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(String);

/// The binding a committed line holds, for `account`'s `identity` (the key says which).
pub fn parse(account: &AccountSid, identity: &Identity, line: &str) -> Result<Binding, Unreadable> {
    let bad = |what: &str| Unreadable(format!("{what} in a binding line"));
    let f: Vec<&str> = line.split('\t').collect();
    let [
        id,
        channel,
        address,
        app,
        env,
        push,
        device,
        ttl,
        created,
        updated,
        _claim,
    ] = f[..]
    else {
        return Err(bad(&format!("{} fields", f.len())));
    };
    let channel = match channel {
        "a" => PushChannel::Apns,
        "f" => PushChannel::Fcm,
        _ => return Err(bad("an unknown channel")),
    };
    let apns_environment = match env {
        "p" => Some(ApnsEnvironment::Production),
        "s" => Some(ApnsEnvironment::Sandbox),
        "" => None,
        _ => return Err(bad("an unknown environment")),
    };
    let push_type = match push {
        "v" => Some(PushType::Voip),
        "a" => Some(PushType::Alert),
        "b" => Some(PushType::Background),
        "" => None,
        _ => return Err(bad("an unknown push type")),
    };
    let ttl_seconds = match ttl {
        "" => DEFAULT_TTL_SECONDS,
        n => n.parse().map_err(|_| bad("a bad ttl"))?,
    };
    let time = |ms: &str| {
        ms.parse::<i128>()
            .ok()
            .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok())
            .ok_or_else(|| bad("a bad time"))
    };
    let updated_at = time(updated)?;
    Ok(Binding {
        id: BindingId::parse(id).map_err(|_| bad("a bad id"))?,
        account_sid: account.clone(),
        identity: identity.clone(),
        channel,
        address: address.to_owned(),
        app: app.to_owned(),
        apns_environment,
        push_type,
        device_id: (!device.is_empty()).then(|| device.to_owned()),
        ttl_seconds,
        created_at: time(created)?,
        updated_at,
        expires_at: updated_at + std::time::Duration::from_secs(ttl_seconds),
    })
}

fn unix_ms(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos().div_euclid(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> AccountSid {
        AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap()
    }

    fn example() -> Binding {
        let now = OffsetDateTime::from_unix_timestamp(1_765_148_251).unwrap()
            + std::time::Duration::from_millis(123);
        let mut b = Binding::example(PushChannel::Apns, "ios", &"ab".repeat(32), now);
        b.apns_environment = Some(ApnsEnvironment::Sandbox);
        b.push_type = Some(PushType::Voip);
        b.device_id = Some("Bob's iPhone: ünïcode, \"quotes\" and }{".into());
        b
    }

    #[test]
    fn a_line_holds_every_field_of_a_binding() {
        let b = example();
        let text = line(&b, 1_765_150_000_123_456);
        assert_eq!(parse(&account(), &b.identity, &text).unwrap(), b);
        assert_eq!(claim_of(&text), 1_765_150_000_123_456);
        assert_eq!(field(&text), "b1");
        // Every default and empty member, too.
        let mut plain = Binding::example(PushChannel::Fcm, "android", "t:1", b.created_at);
        plain.ttl_seconds = DEFAULT_TTL_SECONDS;
        plain.expires_at = plain.updated_at + plain.ttl();
        let text = line(&plain, 7);
        assert_eq!(parse(&account(), &plain.identity, &text).unwrap(), plain);
        assert_eq!(
            text,
            format!(
                "b1\tf\tt:1\tandroid\t\t\t\t\t{0}\t{0}\t7",
                1_765_148_251_123i64
            )
        );
    }

    #[test]
    fn a_line_read_back_is_written_the_same() {
        // The scripts compare lines byte for byte: reading and writing again changes nothing.
        let text = line(&example(), 42);
        let b = parse(&account(), &example().identity, &text).unwrap();
        assert_eq!(line(&b, 42), text);
    }

    #[test]
    fn an_fcm_binding_fits_the_256_byte_allocation_its_memory_figure_assumes() {
        // Redis keeps a string of n bytes in n + 4 (header and terminator), rounded up to
        // the allocator's class: up to 252 bytes take 256, one more takes 320. The figure of
        // BENCHMARKS.md (scenario 9: a 152-character FCM token, a 32-character id, an
        // identity's one binding) holds only while the line stays within 252.
        let now = OffsetDateTime::from_unix_timestamp(1_765_148_251).unwrap();
        let mut b = Binding::example(PushChannel::Fcm, "android", &"x".repeat(152), now);
        b.id = BindingId::parse(&"a".repeat(32)).unwrap();
        b.ttl_seconds = DEFAULT_TTL_SECONDS;
        let text = line(&b, 1_765_150_000_123_456);
        assert!(text.len() <= 252, "{} bytes", text.len());
    }

    #[test]
    fn provisional_lines_are_told_apart_and_broken_lines_are_refused() {
        let text = provisional(&line(&example(), 1));
        assert!(is_provisional(&text));
        assert_eq!(field(&text), "?b1");
        assert!(BindingId::parse(field(&text)).is_err());
        for bad in [
            "",
            "b1\tf",
            "b1\tx\tt\tapp\t\t\t\t\t1\t1\t1",
            "b1\tf\tt\tapp\t\t\t\tttl\t1\t1\t1",
        ] {
            assert!(
                parse(&account(), &example().identity, bad).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(split("a\n\nb\n").collect::<Vec<_>>(), vec!["a", "b"]);
    }
}
