-- release_slots: give places back at once. ARGV[2..]: name, holder, name, holder, ...
-- An unknown one is left alone; an emptied limit's set is deleted by Redis.

for i = 2, #ARGV, 2 do
  redis.call('ZREM', B .. 'sl:' .. ARGV[i], ARGV[i + 1])
end
return 1
