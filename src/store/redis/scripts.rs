//! Lua scripts for the few updates that must be atomic on one key. Each touches only the keys
//! it is given, all in one hash slot.

use std::sync::LazyLock;

use redis::Script;

/// Sets a hash field only if it still holds the expected value (`''`: absent), then makes sure
/// the key lives at least `ttl` milliseconds. Returns 1 when written.
pub static HSET_IF_UNCHANGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local ttl = tonumber(ARGV[4])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
",
    )
});

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

/// Deletes a hash field and returns what it held.
pub static HTAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
",
    )
});

/// Deletes a hash and returns its fields and values.
pub static HTAKE_ALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return v
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
