-- cancel: settle each waiting, scheduled or pending message as cancelled. A leased one is
-- marked cancel-requested (cx) instead, until it settles: its holder learns of it through
-- cancelling. A settled or unknown one is left alone.
-- ARGV[2..]: ids. Returns a JSON array of the ids cancelled, in the order given.

local previous = replay()
if previous then
  return previous
end

local cancelled = {}
local seen = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if not seen[id] then
    seen[id] = true
    local h = redis.call('HMGET', B .. 'm:' .. id, 'st', 'q', 'af', 'ttl')
    local state, queue = h[1], h[2]
    if state == 'leased' then
      redis.call('HSET', B .. 'm:' .. id, 'cx', 1)
    elseif state == 'pending' or state == 'waiting' then
      if state == 'pending' then
        redis.call('ZREM', B .. 'q:' .. queue, id)
        redis.call('ZREM', B .. 's:' .. queue, id)
      else
        redis.call('SREM', B .. 'w:' .. queue, id)
        if h[3] then
          redis.call('SREM', B .. 'f:' .. h[3], id)
        end
      end
      finish(id, queue, 'cancelled', tonumber(h[4]),
        failure_record(id, 'cancelled', 'Cancelled', 'cancelled before it ran'), '')
      cancelled[#cancelled + 1] = id
    end
  end
end
publish()
if #cancelled == 0 then
  return remember('[]')
end
return remember(cjson.encode(cancelled))
