//! Lua scripts for the few updates that must be atomic on one key. Each touches only the keys
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

// The device-token index protocol (`index.rs`). KEYS[1] and KEYS[2] of a token's scripts are
// its owner key and its claims hash, which share the token's hash tag.

/// Takes a device token for ARGV[1] (owner JSON) for ARGV[2] milliseconds. Numbers the claim
/// (above every earlier claim on the token, and from Redis's microsecond clock, so numbers
/// keep rising even after the claims hash expired) and records it in the claims hash, with an
/// owner recorded before claims were kept (claim 0). Returns the claim number, then every
/// other (identity, binding id) that may hold the token.
pub static CLAIM_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local last = tonumber(redis.call('HGET', KEYS[2], '#seq') or '0') or 0
local seq = math.max(last + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
local seqs = string.format('%.0f', seq)
local old = redis.call('GET', KEYS[1])
if old and old ~= ARGV[1] and redis.call('HEXISTS', KEYS[2], old) == 0 then
  redis.call('HSET', KEYS[2], old, '0')
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], seqs, '#seq', seqs)
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
local out = {seqs}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] and all[i] ~= '#seq' then table.insert(out, all[i]) end
end
return out
",
    )
});

/// Removes from a bindings hash the binding ARGV[1], committed and provisional, if it holds
/// the token (channel ARGV[2], address ARGV[3]) under a claim numbered at most ARGV[4] (a
/// binding written before claims were numbered counts as claim 0). Returns 1 when a committed
/// binding was removed.
pub static REMOVE_CLAIMED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function held(v)
  if not v then return false end
  if not string.find(v, '"channel":"' .. ARGV[2] .. '"', 1, true) then return false end
  if not string.find(v, '"address":"' .. ARGV[3] .. '"', 1, true) then return false end
  local claim = tonumber(string.match(v, ',"claim":(%d+)}$') or '0')
  return claim <= tonumber(ARGV[4])
end
local removed = 0
if held(redis.call('HGET', KEYS[1], ARGV[1])) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  removed = 1
end
local provisional = '?' .. ARGV[1]
if held(redis.call('HGET', KEYS[1], provisional)) then redis.call('HDEL', KEYS[1], provisional) end
return removed
"#,
    )
});

/// Forgets that ARGV[1] (owner JSON) may hold the token, unless it claimed it again after
/// claim ARGV[2]. KEYS[1]: the claims hash.
pub static FORGET_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '')
if v and v <= tonumber(ARGV[2]) then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
",
    )
});

/// Sets a hash field and makes sure the key lives at least ARGV[3] milliseconds.
pub static HSET_KEEP_ALIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
",
    )
});

/// Makes the provisional binding ARGV[1] (field `?` .. ARGV[1], value `?` .. ARGV[2]) the
/// binding, if it is still exactly the one written; keeps the hash alive ARGV[3] ms. Returns 1
/// when committed.
pub static COMMIT_BINDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local provisional = '?' .. ARGV[1]
if redis.call('HGET', KEYS[1], provisional) ~= '?' .. ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], provisional)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
",
    )
});

/// Gives up a token held by ARGV[1] (owner JSON) through a binding claimed as ARGV[2], unless
/// the owner claimed the token again since. Returns 1 when released.
pub static RELEASE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') or 0
if v > tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
",
    )
});

/// Extends a token's index entries to ARGV[2] ms, only if ARGV[1] (owner JSON) owns it.
pub static REFRESH_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
",
    )
});

/// Replaces binding ARGV[1] with ARGV[3] if, its claim number aside, it is exactly ARGV[2]; the
/// claim number is kept. Keeps the hash alive ARGV[4] ms. Returns 1 when written.
pub static REFRESH_BINDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local body, claim = string.match(v, '^(.*),"claim":(%d+)}$')
local new = ARGV[3]
if body then
  body = body .. '}'
  new = string.sub(ARGV[3], 1, -2) .. ',"claim":' .. claim .. '}'
else
  body = v
end
if body ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], new)
local ttl = tonumber(ARGV[4])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"#,
    )
});
