-- requeue: move dead letters back to pending with fresh counts; forget their outcomes. A
-- relative expiry (the stored message's expires) is resolved afresh from now.
-- ARGV[2..]: ids. Returns how many were requeued.

local previous = replay()
if previous then
  return tonumber(previous)
end

local count = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local letter = B .. 'd:' .. id
  local d = redis.call('HMGET', letter, 'q', 't', 'b', 'p', 'll', 'md', 'ex', 'ttl')
  if d[1] then
    local queue = d[1]
    redis.call('DEL', letter, B .. 'r:' .. id)
    redis.call('ZREM', B .. 'dead', id)
    redis.call('ZREM', B .. 'dq:' .. queue, id)
    redis.call('ZREM', B .. 'results', id)
    forget_history(id)
    local key = B .. 'm:' .. id
    if redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'st', 'pending', 'q', queue, 't', d[2], 'p', d[4], 'due', NOW,
        'll', d[5], 'md', d[6], 'ttl', d[8], 'sa', NOW, 'b', d[3])
      local ex = d[7]
      local ok, m = pcall(cjson.decode, d[3])
      if ok and type(m) == 'table' and type(m.expires) == 'number' then
        ex = expiry(type(m.expires_at) == 'number' and m.expires_at or NULL, m.expires)
      end
      if ex then
        redis.call('HSET', key, 'ex', ex)
      end
      redis.call('ZADD', B .. 'live', 0, id)
      place(id, queue, tonumber(d[4]), NOW)
      redis.call('SADD', B .. 'queues', queue)
    end
    count = count + 1
  end
end
publish()
remember(num(count))
return count
