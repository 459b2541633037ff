-- dead_letters: up to ARGV[3] dead letters (of queue ARGV[2], or of all when ''), oldest
-- first. Returns {id, queue, task, reason, died (microseconds), body, ...}.

local index = ARGV[2] == '' and B .. 'dead' or B .. 'dq:' .. ARGV[2]
local ids = redis.call('ZRANGE', index, 0, tonumber(ARGV[3]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local d = redis.call('HMGET', B .. 'd:' .. id, 'q', 't', 'reason', 'died', 'b')
  if d[1] then
    out[#out + 1] = id
    out[#out + 1] = d[1]
    out[#out + 1] = d[2]
    out[#out + 1] = d[3]
    out[#out + 1] = tonumber(d[4])
    out[#out + 1] = d[5]
  end
end
return out
