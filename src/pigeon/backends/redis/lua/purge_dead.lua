-- purge_dead: delete dead letters: the ids ARGV[3..] when ARGV[2] is 'ids', else up to
-- ARGV[3] of all of them. Returns how many were deleted.

local ids
if ARGV[2] == 'ids' then
  ids = {}
  for i = 3, #ARGV do
    ids[#ids + 1] = ARGV[i]
  end
else
  ids = redis.call('ZRANGE', B .. 'dead', 0, tonumber(ARGV[3]) - 1)
end
local count = 0
for _, id in ipairs(ids) do
  local letter = B .. 'd:' .. id
  local queue = redis.call('HGET', letter, 'q')
  if queue then
    redis.call('DEL', letter)
    redis.call('ZREM', B .. 'dq:' .. queue, id)
    count = count + 1
  end
  redis.call('ZREM', B .. 'dead', id)
end
return count
