-- cancelling: among the held deliveries ARGV[2..] (id, attempt, ...), the ids whose
-- cancellation was requested. Changes nothing.

local out = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local h = redis.call('HMGET', B .. 'm:' .. id, 'st', 'a', 'cx')
  if h[1] == 'leased' and h[2] == ARGV[i + 1] and h[3] then
    out[#out + 1] = id
  end
end
return out
