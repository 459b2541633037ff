-- sweep: delete up to ARGV[2] each of the expired outcomes, dead letters and worker
-- records. Returns {removed, whether any kind hit the limit}.

local limit = tonumber(ARGV[2])
local removed, full = 0, 0

local results = redis.call('ZRANGEBYSCORE', B .. 'results', '-inf', NOW, 'LIMIT', 0, limit)
for _, id in ipairs(results) do
  -- normally gone already (PX); a result stored again since has a later index entry
  if redis.call('PTTL', B .. 'r:' .. id) < 0 then
    redis.call('DEL', B .. 'r:' .. id)
  end
end
zrem_all(B .. 'results', results)

-- the history entries of outcomes and dead letters past their keeping (index_history)
local stale = redis.call('ZRANGEBYSCORE', B .. 'hx', '-inf', NOW, 'LIMIT', 0, limit)
for _, member in ipairs(stale) do
  local queue, task = string.match(member, '^[^\t]*\t([^\t]*)\t([^\t]*)\t')
  redis.call('ZREM', B .. 'h', member)
  redis.call('ZREM', B .. 'hq:' .. queue, member)
  redis.call('ZREM', B .. 'ht:' .. task, member)
end
zrem_all(B .. 'hx', stale)

local letters = redis.call('ZRANGEBYSCORE', B .. 'dead', '-inf', NOW - DEAD_LETTER_TTL_US,
  'LIMIT', 0, limit)
for _, id in ipairs(letters) do
  local letter = B .. 'd:' .. id
  local queue = redis.call('HGET', letter, 'q')
  redis.call('DEL', letter)
  if queue then
    redis.call('ZREM', B .. 'dq:' .. queue, id)
  end
end
zrem_all(B .. 'dead', letters)

local gone = redis.call('ZRANGEBYSCORE', B .. 'wexp', '-inf', NOW, 'LIMIT', 0, limit)
for i = 1, #gone, 1000 do
  redis.call('HDEL', B .. 'workers', unpack(gone, i, math.min(i + 999, #gone)))
end
zrem_all(B .. 'wexp', gone)

removed = #results + #letters + #gone
if #results == limit or #letters == limit or #gone == limit or #stale == limit then
  full = 1
end
return {removed, full}
