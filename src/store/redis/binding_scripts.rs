//! Lua scripts on an identity's bindings string (`lines.rs`) and on the device-token index
//! (`index.rs`). Each touches only the keys it is given, all under one hash tag.
//!
//! Scripts on an identity's string take the string as `KEYS[1]` and the identity's hash of the
//! earlier layout (`…:bindings`) as `KEYS[2]`, in the same slot: while that hash exists they
//! change nothing and fail with `CALLRELAY_LEGACY`, and the caller moves the identity to the
//! new layout (`legacy.rs`) and asks again. So every change sees every binding, whichever
//! version wrote it.
//!
//! Scripts on the index take a bucket hash as `KEYS[1]` and the token's field in it (a digest
//! of the token, `Keys::token`) as `ARGV[1]`. A field's value is its entry:
//!
//! ```text
//! <last claim number>\t<expires, seconds since the epoch>
//! <identity>\t<claim number>      one line per holder
//! ```
//!
//! The holders are the identities that may hold the token (`index.rs`); the owner is the one
//! whose claim number is the last one, written as an empty number. A typical entry is then
//! about 40 bytes: small enough for a bucket of up to 128 entries to stay a listpack, the
//! compact encoding Redis keeps for hashes whose values are at most 64 bytes. An entry past its expiry holds nobody (its number stays, so
//! numbers keep rising); an entry whose last holder left lapses within a day. The bucket lives as long as its longest-lived entry, and a claim
//! deletes the lapsed entries among a few it samples, so lapsed tokens do not pile up.

use std::sync::LazyLock;

use redis::Script;

/// What every script that changes an identity's string starts with.
const GUARD: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('CALLRELAY_LEGACY the identity has bindings in the earlier layout')
end
";

/// Reading and writing an identity's lines.
const LINES: &str = r"
local function load()
  local s = redis.call('GET', KEYS[1])
  local t = {}
  if s then for l in string.gmatch(s, '[^\n]+') do t[#t + 1] = l end end
  return t
end
local function field_of(l) return string.match(l, '^[^\t]*') end
local function find(t, f)
  for i = 1, #t do if field_of(t[i]) == f then return i end end
  return nil
end
local function save(t, ttl)
  if #t == 0 then redis.call('DEL', KEYS[1]) return end
  redis.call('SET', KEYS[1], table.concat(t, '\n'), 'KEEPTTL')
  if ttl then
    ttl = tonumber(ttl)
    if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
  end
end
local function claim_of(l) return tonumber(string.match(l, '\t(%d+)$') or '0') end
-- Whether line l holds the token (channel code c, address a).
local function holds(l, c, a)
  local lc, la = string.match(l, '^[^\t]*\t([^\t]*)\t([^\t]*)\t')
  return lc == c and la == a
end
-- Removes the lines, committed and provisional, that hold the token (c, a) under a claim
-- numbered at most n, except binding `keep`'s; returns the ids of the committed ones removed.
local function displace(t, c, a, n, keep)
  local kept, removed = {}, {}
  for i = 1, #t do
    local f = field_of(t[i])
    if f ~= keep and f ~= '?' .. keep and holds(t[i], c, a) and claim_of(t[i]) <= n then
      if string.sub(f, 1, 1) ~= '?' then removed[#removed + 1] = f end
    else
      kept[#kept + 1] = t[i]
    end
  end
  return kept, removed
end
-- Whether a committed line of t holds the token of line l.
local function held(t, l)
  local c, a = string.match(l, '^[^\t]*\t([^\t]*)\t([^\t]*)\t')
  for i = 1, #t do
    if string.sub(t[i], 1, 1) ~= '?' and holds(t[i], c, a) then return 1 end
  end
  return 0
end
";

fn lines_script(body: &str) -> Script {
    Script::new(&format!("{GUARD}{LINES}{body}"))
}

/// Writes line ARGV[2] in place of the line for field ARGV[1] (or adds it), and keeps the
/// string alive at least ARGV[3] ms. Returns 1.
pub static PUT_LINE: LazyLock<Script> = LazyLock::new(|| {
    lines_script(
        r"
local t = load()
local i = find(t, ARGV[1])
if i then t[i] = ARGV[2] else t[#t + 1] = ARGV[2] end
save(t, ARGV[3])
return 1
",
    )
});

/// Deletes the line that is exactly ARGV[1]. Returns 0 when it was not there, 1 when
/// deleted, 2 when deleted but another binding of the identity still holds its token.
pub static DEL_LINE_IF_EQUAL: LazyLock<Script> = LazyLock::new(|| {
    lines_script(
        r"
local t = load()
for i = 1, #t do
  if t[i] == ARGV[1] then
    table.remove(t, i)
    save(t)
    return 1 + held(t, ARGV[1])
  end
end
return 0
",
    )
});

/// Makes the provisional line of binding ARGV[1] the binding's line ARGV[2], if it is still
/// exactly `?` .. ARGV[2], and in the same step removes the identity's other lines holding
/// the same token (channel code ARGV[4], address ARGV[5]) under a claim numbered at most
/// ARGV[6]: the same device under an older id, which rang until now. Keeps the string alive
/// ARGV[3] ms. Returns {1, ids of the committed lines removed…} when committed, {0} if not.
pub static COMMIT_LINE: LazyLock<Script> = LazyLock::new(|| {
    lines_script(
        r"
local t = load()
local p = find(t, '?' .. ARGV[1])
if not p or t[p] ~= '?' .. ARGV[2] then return {0} end
table.remove(t, p)
local i = find(t, ARGV[1])
if i then t[i] = ARGV[2] else t[#t + 1] = ARGV[2] end
local kept, removed = displace(t, ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[1])
save(kept, ARGV[3])
table.insert(removed, 1, 1)
return removed
",
    )
});

/// Deletes binding ARGV[1]'s line and returns {it, "1" if another binding of the identity
/// still holds its token, else "0"}; an empty list when there was no such line.
pub static TAKE_LINE: LazyLock<Script> = LazyLock::new(|| {
    lines_script(
        r"
local t = load()
local i = find(t, ARGV[1])
if not i then return {} end
local l = table.remove(t, i)
save(t)
return {l, tostring(held(t, l))}
",
    )
});

/// Deletes the identity's string and returns it.
pub static TAKE_ALL_LINES: LazyLock<Script> = LazyLock::new(|| {
    lines_script(
        r"
local s = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
return s
",
    )
});

/// Deletes the identity's lines, committed and provisional, that hold the token (channel
/// code ARGV[1], address ARGV[2]) under a claim numbered at most ARGV[3]. Returns the ids of
/// the committed lines removed.
pub static REMOVE_CLAIMED: LazyLock<Script> = LazyLock::new(|| {
    lines_script(
        r"
local t = load()
local kept, removed = displace(t, ARGV[1], ARGV[2], tonumber(ARGV[3]), '')
if #kept ~= #t then save(kept) end
return removed
",
    )
});

/// Replaces binding ARGV[1]'s line with body ARGV[3] if its body (the line without its claim
/// number) is exactly ARGV[2]; the claim number is kept. Keeps the string alive ARGV[4] ms.
/// Returns 1 when written.
pub static REFRESH_LINE: LazyLock<Script> = LazyLock::new(|| {
    lines_script(
        r"
local t = load()
local i = find(t, ARGV[1])
if not i then return 0 end
local body, claim = string.match(t[i], '^(.*)\t(%d+)$')
if body ~= ARGV[2] then return 0 end
t[i] = ARGV[3] .. '\t' .. claim
save(t, ARGV[4])
return 1
",
    )
});

/// Moves an identity to the new layout: if its hash of the earlier layout (KEYS[2]) holds
/// exactly the ARGV[1] fields and values that follow (checked, so nothing written meanwhile
/// is lost), adds the lines after them (one per binding, already converted) for bindings the
/// string does not have, keeps the string alive as long as the hash would have lived, and
/// deletes the hash. Returns 1 when moved, 0 when the hash changed meanwhile.
pub static MOVE_LEGACY: LazyLock<Script> = LazyLock::new(|| {
    // Without the guard: this is the script that clears it.
    Script::new(&format!(
        "{LINES}{}",
        r"
local n = tonumber(ARGV[1])
if redis.call('HLEN', KEYS[2]) ~= n then return 0 end
for i = 0, n - 1 do
  if redis.call('HGET', KEYS[2], ARGV[2 + 2 * i]) ~= ARGV[3 + 2 * i] then return 0 end
end
local ttl = redis.call('PTTL', KEYS[2])
local t = load()
for i = 2 + 2 * n, #ARGV do
  if not find(t, field_of(ARGV[i])) then t[#t + 1] = ARGV[i] end
end
redis.call('DEL', KEYS[2])
if ttl > 0 then save(t, ttl) else save(t) end
return 1
"
    ))
});

/// The functions every script on the index starts with.
const ENTRIES: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function n(x) return string.format('%.0f', x) end
local function parse(v)
  local e = {seq = 0, exp = 0, holders = {}}
  if not v then return e end
  local first = true
  for l in string.gmatch(v, '[^\n]+') do
    if first then
      local s, x = string.match(l, '^(%d+)\t(%d+)$')
      e.seq = tonumber(s) or 0
      e.exp = (tonumber(x) or 0) * 1000
      first = false
    else
      local who, c = string.match(l, '^(.*)\t(%d*)$')
      if who then
        if c == '' then c = e.seq else c = tonumber(c) end
        e.holders[#e.holders + 1] = {who, c}
      end
    end
  end
  -- Lapsed: nobody holds the token; the number stays.
  if e.exp <= now then e.holders = {} end
  return e
end
local function read() return parse(redis.call('HGET', KEYS[1], ARGV[1])) end
local function claim_of(e, who)
  for _, h in ipairs(e.holders) do if h[1] == who then return h[2] end end
  return nil
end
local function drop(e, who)
  for i, h in ipairs(e.holders) do
    if h[1] == who then table.remove(e.holders, i) return end
  end
end
local function write(e)
  -- Nobody left: the number is kept a day (past any command still in flight), not the year
  -- the last holder had.
  if #e.holders == 0 then e.exp = math.min(e.exp, now + 86400000) end
  local out = {n(e.seq) .. '\t' .. n(math.ceil(e.exp / 1000))}
  for _, h in ipairs(e.holders) do
    if h[2] == e.seq then out[#out + 1] = h[1] .. '\t' else out[#out + 1] = h[1] .. '\t' .. n(h[2]) end
  end
  redis.call('HSET', KEYS[1], ARGV[1], table.concat(out, '\n'))
  local ttl = e.exp - now
  if ttl > 0 and redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], n(ttl)) end
end
";

fn entries_script(body: &str) -> Script {
    Script::new(&format!("{ENTRIES}{body}"))
}

/// Takes a device token for identity ARGV[2] for ARGV[3] milliseconds. Numbers
/// the claim above every earlier claim on the token, from Redis's microsecond clock (so numbers
/// keep rising even after the entry lapsed), and lists the claimant with it. Deletes the
/// lapsed entries among three others of the bucket. Returns the claim number, then every other
/// holder.
pub static CLAIM_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    entries_script(
        r"
local e = read()
local seq = math.max(e.seq + 1, now_us)
drop(e, ARGV[2])
e.holders[#e.holders + 1] = {ARGV[2], seq}
e.seq = seq
e.exp = math.max(e.exp, now + tonumber(ARGV[3]))
write(e)
local sample = redis.call('HRANDFIELD', KEYS[1], 3, 'WITHVALUES')
for i = 1, #sample, 2 do
  if sample[i] ~= ARGV[1] then
    local x = tonumber(string.match(sample[i + 1], '^%d+\t(%d+)') or '0') * 1000
    if x <= now then redis.call('HDEL', KEYS[1], sample[i]) end
  end
end
local out = {n(seq)}
for _, h in ipairs(e.holders) do
  if h[1] ~= ARGV[2] then out[#out + 1] = h[1] end
end
return out
",
    )
});

/// Forgets that ARGV[2] may hold the token, unless it claimed it again after claim ARGV[3].
pub static FORGET_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    entries_script(
        r"
local e = read()
local c = claim_of(e, ARGV[2])
if not c or c > tonumber(ARGV[3]) then return 0 end
drop(e, ARGV[2])
write(e)
return 1
",
    )
});

/// Gives up a token held by ARGV[2] through a binding claimed as ARGV[3], unless it claimed
/// the token again since. Returns 1 when released.
pub static RELEASE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    entries_script(
        r"
local e = read()
local c = claim_of(e, ARGV[2])
if not c then return 1 end
if c > tonumber(ARGV[3]) then return 0 end
drop(e, ARGV[2])
write(e)
return 1
",
    )
});

/// Extends the token's entry to ARGV[3] ms from now, only if ARGV[2] owns the token.
pub static REFRESH_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    entries_script(
        r"
local e = read()
if claim_of(e, ARGV[2]) ~= e.seq then return 0 end
e.exp = math.max(e.exp, now + tonumber(ARGV[3]))
write(e)
return 1
",
    )
});

/// Whether ARGV[2] owns the token under claim ARGV[3]: 1 or 0.
pub static OWNS_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    entries_script(
        r"
local e = read()
local c = claim_of(e, ARGV[2])
if c and c == tonumber(ARGV[3]) and c == e.seq then return 1 end
return 0
",
    )
});

/// Adds holders found in the earlier layout's index to the token's entry: ARGV[2] is the
/// last claim number there, ARGV[3] how many ms it still had to live, then (holder, claim)
/// pairs. A holder already listed keeps the higher of its two numbers. Returns 1.
pub static MERGE_HOLDERS: LazyLock<Script> = LazyLock::new(|| {
    entries_script(
        r"
local e = read()
e.seq = math.max(e.seq, tonumber(ARGV[2]))
e.exp = math.max(e.exp, now + tonumber(ARGV[3]))
for i = 4, #ARGV, 2 do
  local c = claim_of(e, ARGV[i])
  local new = tonumber(ARGV[i + 1])
  if not c then
    e.holders[#e.holders + 1] = {ARGV[i], new}
  elseif new > c then
    drop(e, ARGV[i])
    e.holders[#e.holders + 1] = {ARGV[i], new}
  end
end
write(e)
return 1
",
    )
});
