-- enqueue: store messages, each once; the id standing for each input.
-- ARGV[2]: JSON array, one entry per message: [id, queue, task, priority, delay, run_at,
--   max_deliveries, lease, key, expires_at, result_ttl, after, join_mode, join_members,
--   expires] (absent values are null; expires is relative, resolved on the server's clock); ARGV[3], ARGV[4]: the lowest and the highest id (byte order);
--   ARGV[4 + i]: message i's stored body.
-- Returns {the ids, in input order; one character per input: '1' stored now, else '0'}.

local specs = cjson.decode(ARGV[2])
mark_ids(ARGV[3], ARGV[4]) -- raised for the ids stored below; the lookups are still made
local ids = {}
local stored = {}
local queues = {}
for i, s in ipairs(specs) do
  local id, queue, task, priority, delay, run_at = s[1], s[2], s[3], s[4], s[5], s[6]
  local max_deliveries, lease, key, expires_at, ttl = s[7], s[8], s[9], s[10], s[11]
  local after, join_mode, members, expires = s[12], s[13], s[14], s[15]
  local holder = false
  if key ~= NULL then
    holder = redis.call('GET', B .. 'k:' .. key)
  end
  stored[i] = '0'
  if holder then
    ids[i] = holder
  else
    ids[i] = id
    local mkey = B .. 'm:' .. id
    if redis.call('EXISTS', mkey, B .. 'r:' .. id, B .. 'd:' .. id) == 0 then
      stored[i] = '1'
      if key ~= NULL and ttl > 0 then
        local ms = math.max(1, math.floor(ttl * 1000 + 0.5))
        redis.call('SET', B .. 'k:' .. key, id, 'PX', ms)
      end
      local due = NOW + micros(delay)
      if run_at ~= NULL then
        due = math.max(due, micros(run_at))
      end
      local waiting = false
      if join_mode ~= NULL then
        local settled, succeeded = 0, 0
        for _, member in ipairs(members) do
          local stored = redis.call('GET', B .. 'r:' .. member)
          if stored then
            settled = settled + 1
            if cjson.decode(stored).state == 'succeeded' then
              succeeded = succeeded + 1
            end
          else
            redis.call('HINCRBY', B .. 'jm:' .. member, id, 1)
          end
        end
        local fired = join_fired(join_mode, #members, settled, succeeded)
        redis.call('HSET', B .. 'j:' .. id, 'mode', join_mode, 'total', #members,
          'settled', settled, 'succeeded', succeeded, 'fired', fired and 1 or 0)
        waiting = not fired
      elseif after ~= NULL then
        if redis.call('EXISTS', B .. 'r:' .. after) == 0 then
          redis.call('SADD', B .. 'f:' .. after, id)
          waiting = true
        end
      end
      redis.call('HSET', mkey, 'st', waiting and 'waiting' or 'pending', 'q', queue, 't', task,
        'p', priority, 'due', due, 'll', string.format('%.17g', lease), 'md', max_deliveries,
        'ttl', string.format('%.17g', ttl), 'sa', NOW, 'b', ARGV[4 + i])
      local ex = expiry(expires_at, expires)
      if ex then
        redis.call('HSET', mkey, 'ex', ex)
      end
      if after ~= NULL and join_mode == NULL then
        redis.call('HSET', mkey, 'af', after)
      end
      redis.call('ZADD', B .. 'live', 0, id)
      if waiting then
        redis.call('SADD', B .. 'w:' .. queue, id)
      else
        place(id, queue, priority, due)
      end
      queues[queue] = true
    end
  end
end
for queue in pairs(queues) do
  redis.call('SADD', B .. 'queues', queue)
end
publish()
return {ids, table.concat(stored)}
