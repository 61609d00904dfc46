//! The Lua scripts the store runs on Redis, loaded once per store.

/// Writes only if the stored value is older (by `ts_ms`) than ours. A stored value
/// of the wrong type, that does not decode, or stamped later than `ARGV[4]` (now
/// plus the allowed clock skew) is garbage and is overwritten.
const SET_IF_NEWER: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then
  local ok, v = pcall(cjson.decode, redis.call('GET', KEYS[1]))
  if ok and type(v) == 'table' then
    local ts = tonumber(v['ts_ms'])
    if ts and ts >= tonumber(ARGV[2]) and ts <= tonumber(ARGV[4]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"#;

/// Moves a deadline later, never earlier. A stored deadline of the wrong type, not a
/// number, or beyond `ARGV[2]` (now plus the deadline cap) is garbage and replaced.
const EXTEND_DEADLINE: &str = r#"
local cur = 0
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then
  cur = tonumber(redis.call('GET', KEYS[1])) or 0
end
if cur ~= cur or cur > tonumber(ARGV[2]) then cur = 0 end
local new = tonumber(ARGV[1])
if new > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[1] + 1000)
  return 1
end
return 0
"#;

/// Adds usage to a hash, saturating at `i64::MAX` instead of failing on overflow. A
/// key of the wrong type, or a field that is not an integer, is garbage: replaced.
const ADD_USAGE: &str = r#"
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' and t ~= 'none' then redis.call('DEL', KEYS[1]) end
local fields = {'prompt_tokens', 'completion_tokens', 'cost_micros'}
for i, f in ipairs(fields) do
  local r = redis.pcall('HINCRBY', KEYS[1], f, ARGV[i])
  if type(r) == 'table' and r['err'] then
    if string.find(r['err'], 'overflow') then
      redis.call('HSET', KEYS[1], f, '9223372036854775807')
    else
      redis.call('HSET', KEYS[1], f, ARGV[i])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#;

/// Reads string keys, each only if it is a string of at most `ARGV[1]` bytes (anything
/// else reads as nil): a huge or wrongly typed value is never sent to us.
const READ_BOUNDED: &str = r#"
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('TYPE', k)['ok'] == 'string' and redis.call('STRLEN', k) <= tonumber(ARGV[1]) then
    out[i] = redis.call('GET', k)
  else
    out[i] = false
  end
end
return out
"#;

/// A lease's holder and remaining milliseconds, if it is a short string with a TTL.
const READ_LEASE: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' or redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[1]) then
  return false
end
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"#;

/// The Lua scripts, loaded once per store.
pub(crate) struct Scripts {
    pub(crate) set_if_newer: redis::Script,
    pub(crate) extend: redis::Script,
    pub(crate) add_usage: redis::Script,
    pub(crate) read_bounded: redis::Script,
    pub(crate) read_lease: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            set_if_newer: redis::Script::new(SET_IF_NEWER),
            extend: redis::Script::new(EXTEND_DEADLINE),
            add_usage: redis::Script::new(ADD_USAGE),
            read_bounded: redis::Script::new(READ_BOUNDED),
            read_lease: redis::Script::new(READ_LEASE),
        }
    }
}
