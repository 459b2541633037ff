-- purge: delete up to ARGV[3] waiting, scheduled and pending messages of queue ARGV[2].
-- Returns how many were deleted (the caller repeats while a call deletes its limit).

local queue, limit = ARGV[2], tonumber(ARGV[3])
local count = 0

local function drop(id, after)
  redis.call('DEL', B .. 'm:' .. id, B .. 'j:' .. id, B .. 'f:' .. id, B .. 'jm:' .. id)
  redis.call('ZREM', B .. 'live', id)
  if after then
    redis.call('SREM', B .. 'f:' .. after, id)
  end
  count = count + 1
end

for _, key in ipairs({B .. 'q:' .. queue, B .. 's:' .. queue}) do
  if count < limit then
    local popped = redis.call('ZPOPMIN', key, limit - count)
    for i = 1, #popped, 2 do
      drop(popped[i], false)
    end
  end
end
if count < limit then
  local waiting = redis.call('SPOP', B .. 'w:' .. queue, limit - count)
  for _, id in ipairs(waiting) do
    drop(id, redis.call('HGET', B .. 'm:' .. id, 'af'))
  end
end
return count
