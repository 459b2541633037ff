-- stats: {now, {queue, waiting, scheduled, pending, leased, dead, ...}, unexpired results,
-- dead letters, {WorkerInfo JSON of each live worker}, {queue, pause, ...} (pauses.lua)}.

local now = num(NOW)
local counts = {}
for _, queue in ipairs(redis.call('SMEMBERS', B .. 'queues')) do
  local scheduled = redis.call('ZCOUNT', B .. 's:' .. queue, '(' .. now, '+inf')
  local due = redis.call('ZCOUNT', B .. 's:' .. queue, '-inf', now)
  counts[#counts + 1] = queue
  counts[#counts + 1] = redis.call('SCARD', B .. 'w:' .. queue)
  counts[#counts + 1] = scheduled
  counts[#counts + 1] = redis.call('ZCARD', B .. 'q:' .. queue) + due
  counts[#counts + 1] = tonumber(redis.call('HGET', B .. 'leased', queue) or 0)
  counts[#counts + 1] = redis.call('ZCARD', B .. 'dq:' .. queue)
end
local results = redis.call('ZCOUNT', B .. 'results', '(' .. now, '+inf')
local live = redis.call('ZRANGEBYSCORE', B .. 'wexp', '(' .. now, '+inf')
local workers = {}
if #live > 0 then
  workers = redis.call('HMGET', B .. 'workers', unpack(live))
end
return {NOW, counts, results, redis.call('ZCARD', B .. 'dead'), workers,
  redis.call('HGETALL', B .. 'pauses')}
