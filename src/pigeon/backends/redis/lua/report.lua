-- report: store each progress report as the latest of its message, kept ARGV[2] seconds.
-- ARGV[3..]: id, encoded Progress, id, encoded Progress, ...
-- Each is the string B .. 'pg:' .. id, PX its ttl (a later report replaces it).

local ms = math.floor(tonumber(ARGV[2]) * 1000 + 0.5)
for i = 3, #ARGV, 2 do
  local key = B .. 'pg:' .. ARGV[i]
  if ms > 0 then
    redis.call('SET', key, ARGV[i + 1], 'PX', ms)
  else
    redis.call('DEL', key)
  end
end
return 1
