-- release: make held messages due again ARGV[2] seconds from now (scheduled when > 0),
-- counting neither a failure nor a lost lease.
-- ARGV[3..]: id, attempt, id, attempt, ...
-- Returns how many were released.

local previous = replay()
if previous then
  return tonumber(previous)
end

local due = NOW + math.max(micros(tonumber(ARGV[2])), 0)
local freed = {}
for i = 3, #ARGV, 2 do
  local id, attempt = ARGV[i], ARGV[i + 1]
  local key = B .. 'm:' .. id
  local h = redis.call('HMGET', key, 'st', 'a', 'q', 'p')
  if h[1] == 'leased' and h[2] == attempt then
    freed[#freed + 1] = id
    count_leased(h[3], -1)
    redis.call('HSET', key, 'st', 'pending', 'due', num(due))
    redis.call('HDEL', key, 'w')
    place(id, h[3], tonumber(h[4]), due)
  end
end
if #freed > 0 then
  zrem_all(B .. 'leases', freed)
end
apply_leased()
publish()
remember(num(#freed))
return #freed
