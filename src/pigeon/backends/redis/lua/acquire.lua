-- acquire: take one place of limit ARGV[i] for holder ARGV[i + 1] (at most ARGV[i + 2]
-- places, for ARGV[i + 3] seconds), one slot at a time in the order given.
-- ARGV[2..]: name, holder, limit, ttl, name, holder, limit, ttl, ...
-- A limit is the sorted set B .. 'sl:' .. name: member holder, score its expiry
-- (microseconds). Expired places are removed before counting; a holder with an unexpired
-- place keeps it (a renewal: its expiry moves to now + ttl). The set expires by itself
-- after its latest place. Returns 1 or 0 per slot: whether the holder has a place after.

local got = {}
local touched = {}
for i = 2, #ARGV, 4 do
  local key = B .. 'sl:' .. ARGV[i]
  local holder, limit = ARGV[i + 1], tonumber(ARGV[i + 2])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', NOW)
  if redis.call('ZSCORE', key, holder) or redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, num(NOW + micros(tonumber(ARGV[i + 3]))), holder)
    touched[key] = true
    got[#got + 1] = 1
  else
    got[#got + 1] = 0
  end
end
for key in pairs(touched) do
  local last = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  if last[2] then
    local ms = math.ceil((tonumber(last[2]) - NOW) / 1000)
    redis.call('PEXPIRE', key, math.max(1, ms))
  end
end
return got
