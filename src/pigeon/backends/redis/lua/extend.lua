-- extend: push the lease of each held delivery to now + the message's lease.
-- ARGV[2..]: id, attempt, id, attempt, ...
-- Returns the ids no longer held as that attempt.

local lost = {}
for i = 2, #ARGV, 2 do
  local id, attempt = ARGV[i], ARGV[i + 1]
  local key = B .. 'm:' .. id
  local h = redis.call('HMGET', key, 'st', 'a', 'll')
  if h[1] == 'leased' and h[2] == attempt then
    local until_ = NOW + micros(tonumber(h[3]))
    redis.call('HSET', key, 'lu', until_)
    redis.call('ZADD', B .. 'leases', until_, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
