-- lock: take lock ARGV[2] for owner ARGV[3] for ARGV[4] seconds when it is free, expired or
-- already the owner's (a renewal). Returns 1 when the owner holds it after the call.
-- The lock is a key with an expiry: an expired lock is simply gone.

local key = B .. 'lock:' .. ARGV[2]
local holder = redis.call('GET', key)
if holder and holder ~= ARGV[3] then
  return 0
end
redis.call('SET', key, ARGV[3], 'PX', math.max(1, math.floor(tonumber(ARGV[4]) * 1000 + 0.5)))
return 1
