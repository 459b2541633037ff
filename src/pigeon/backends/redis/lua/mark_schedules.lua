-- mark_schedules: ARGV[2..] are pairs (schedule name, mark): raise the mark of each schedule
-- in the hash B .. 'schedules' to the one given, never lowering it. A mark is stored as the
-- string given (Python's repr of the float: tostring would keep only 14 digits) and only
-- compared as a number. Safe to retry: raising to the same marks again changes nothing.

local key = B .. 'schedules'
for i = 2, #ARGV, 2 do
  local stored = redis.call('HGET', key, ARGV[i])
  if not stored or tonumber(ARGV[i + 1]) > tonumber(stored) then
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  end
end
return 1
