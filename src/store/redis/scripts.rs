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
