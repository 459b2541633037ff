-- unlock: free lock ARGV[2] at once if owner ARGV[3] holds it; otherwise do nothing.

local key = B .. 'lock:' .. ARGV[2]
if redis.call('GET', key) == ARGV[3] then
  redis.call('DEL', key)
end
return 1
