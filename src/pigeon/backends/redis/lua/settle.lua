-- settle: apply outcomes, each only while its message is leased as the outcome's attempt.
-- ARGV[2]: JSON array, one entry per outcome: [id, attempt, state, result_ttl, retry_in,
--   dead letter reason or null]; ARGV[2 + i]: outcome i's stored result without settled_at
--   ('' for retry).
-- Returns one character per outcome: '1' applied, '0' refused.

local previous = replay()
if previous then
  return previous
end

local outcomes = cjson.decode(ARGV[2])
local verdicts = {}
local freed = {}
for i, o in ipairs(outcomes) do
  local id, attempt, state = o[1], o[2], o[3]
  local key = B .. 'm:' .. id
  local h = redis.call('HMGET', key, 'st', 'a', 'q', 'p', 't')
  if h[1] == 'leased' and tonumber(h[2]) == attempt then
    local queue = h[3]
    freed[#freed + 1] = id
    count_leased(queue, -1)
    if state == 'retry' then
      local due = NOW + micros(o[5])
      redis.call('HINCRBY', key, 'f', 1)
      redis.call('HSET', key, 'st', 'pending', 'due', due)
      redis.call('HDEL', key, 'w')
      place(id, queue, tonumber(h[4]), due)
    else
      local reason = o[6]
      finish(id, queue, state, o[4], ARGV[2 + i], reason ~= NULL and reason or '', h[5])
    end
    verdicts[i] = '1'
  else
    verdicts[i] = '0'
  end
end
if #freed > 0 then
  zrem_all(B .. 'leases', freed)
end
apply_leased()
publish()
return remember(table.concat(verdicts))
