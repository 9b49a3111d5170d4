//! The file-descriptor budget. Every open connection of the public listener and every
//! WebSocket holds a descriptor, so `limits.max_connections` (HTTP connections, which stop
//! counting once upgraded to a WebSocket) plus `limits.max_sockets` (WebSockets, counted from
//! before the upgrade until the connection is closed) bound what the listener can hold at once.
//! The process's `nofile` limit must exceed their sum plus what the rest needs (listeners,
//! Redis and push connections, files read at start-up); past it, `accept` fails and new clients
//! wait, Twilio's webhooks among them. Checked at start-up where the OS says (Linux), with a
//! warning rather than a refusal: the operator may know the load never comes near the caps.

use crate::config::Limits;

/// Descriptors a replica needs besides public connections and sockets: the two listeners,
/// Redis (a few connections), push services (one per app and environment, more with
/// `connections`), the log and files read at start-up, with room to spare.
pub const RESERVED: u64 = 256;

/// Descriptors the configured limits may need at once.
pub fn budget(limits: &Limits) -> u64 {
    limits.max_connections as u64 + limits.max_sockets as u64 + RESERVED
}

/// The soft `nofile` limit from the text of `/proc/self/limits`.
pub fn parse_open_files_limit(proc_limits: &str) -> Option<u64> {
    let line = proc_limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    // "unlimited" has no number: nothing to warn about.
    soft.parse().ok()
}

/// The process's soft `nofile` limit, where the OS tells (Linux).
pub fn open_files_limit() -> Option<u64> {
    parse_open_files_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// What to tell the operator when `nofile` cannot hold the budget.
pub fn warning(limits: &Limits, nofile: Option<u64>) -> Option<String> {
    let nofile = nofile?;
    let needed = budget(limits);
    (nofile < needed).then(|| {
        format!(
            "the open-files limit (nofile {nofile}) is below the descriptor budget: \
             limits.max_connections ({}) + limits.max_sockets ({}) + {RESERVED} for Redis, push \
             and listeners = {needed}; raise nofile (ulimit -n, LimitNOFILE=, the container \
             runtime's ulimits) or lower the limits, or clients will wait to be accepted",
            limits.max_connections, limits.max_sockets
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max cpu time              unlimited            unlimited            seconds   \n\
        Max open files            1024                 524288               files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    fn limits(connections: usize, sockets: usize) -> Limits {
        let mut limits = crate::config::from_toml_str("").unwrap().limits;
        limits.max_connections = connections;
        limits.max_sockets = sockets;
        limits
    }

    #[test]
    fn reads_the_soft_limit() {
        assert_eq!(parse_open_files_limit(PROC), Some(1024));
        let unlimited = PROC.replace(
            "1024                 524288",
            "unlimited            unlimited",
        );
        assert_eq!(parse_open_files_limit(&unlimited), None);
        assert_eq!(parse_open_files_limit(""), None);
    }

    #[test]
    fn warns_when_the_caps_do_not_fit() {
        let text = warning(&limits(50_000, 20_000), Some(1024)).unwrap();
        assert!(text.contains("nofile 1024"), "{text}");
        assert!(text.contains("= 70256"), "{text}");
        assert_eq!(warning(&limits(512, 256), Some(1024)), None);
        assert_eq!(warning(&limits(50_000, 20_000), None), None);
    }
}
