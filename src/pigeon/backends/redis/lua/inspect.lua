-- inspect: all that is known of the id ARGV[2]: {now, message fields, stored outcome,
-- dead letter fields}; absent parts are nil.

local id = ARGV[2]
local m = redis.call('HMGET', B .. 'm:' .. id, 'st', 'q', 't', 'a', 'f', 'due', 'lu', 'w', 'b',
  'cx', 'sa')
local stored = redis.call('GET', B .. 'r:' .. id)
local d = redis.call('HMGET', B .. 'd:' .. id, 'q', 't', 'reason', 'b')
return {NOW, m, stored, d}
