-- heartbeat: record worker ARGV[2] (WorkerInfo JSON ARGV[3], without last_seen) as live
-- for ARGV[4] seconds; last_seen is the server's time.

local info = string.sub(ARGV[3], 1, -2) .. ',"last_seen":' .. NOW_S .. '}'
redis.call('HSET', B .. 'workers', ARGV[2], info)
redis.call('ZADD', B .. 'wexp', NOW + micros(tonumber(ARGV[4])), ARGV[2])
return 1
