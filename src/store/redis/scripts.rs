//! Lua scripts for the few updates that must be atomic on one key (those on bindings and the
//! device-token index are in `binding_scripts.rs`). Each touches only the keys
//! it is given, all in one hash slot.

use std::sync::LazyLock;

use redis::Script;

/// Deletes a hash field only if it holds exactly the given value. Returns 1 when deleted.
pub static HDEL_IF_EQUAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
",
    )
});

/// Deletes a string key only if it holds the given value.
pub static DEL_IF_EQUAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Settles a dedupe claim as delivered: writes `delivered` for `ARGV[2]` milliseconds if the
/// marker is still the owner's claim (`ARGV[1]`, `pending:<owner>`) or is gone (the claim
/// lapsed and nobody took it since: the delivery did happen). Another owner's claim or a
/// `delivered` marker is left alone. Returns 1 when written. (Redis 7.0 has no `SET IFEQ`.)
pub static SETTLE_DELIVERED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'delivered', 'PX', ARGV[2])
return 1
",
    )
});

/// Writes socket presences into one sockets hash with their lease's end stamped by Redis's
/// clock, and keeps the hash's own expiry, in the hash and as its `PEXPIREAT`, past every
/// lease in it (see `presence.rs`). ARGV: (connection id, JSON, lease ms) for each presence.
/// Calls `TIME` before writing, which Redis allows since 5.0 (scripts replicate their effects).
pub static STAMP_PRESENCES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep = tonumber(redis.call('HGET', KEYS[1], '~expires_ms') or '0') or 0
for i = 1, #ARGV, 3 do
  local lease = tonumber(ARGV[i + 2])
  local ends = now + lease
  local json = ARGV[i + 1]
  redis.call('HSET', KEYS[1], ARGV[i],
    string.sub(json, 1, -2) .. string.format(',"lease_end_ms":%.0f}', ends))
  -- The hash outlives every lease in it, so a replica that dies leaves nothing for long.
  if ends + lease + 1000 > keep then keep = ends + lease + 1000 end
end
redis.call('HSET', KEYS[1], '~expires_ms', string.format('%.0f', keep))
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', keep))
return now
"#,
    )
});
