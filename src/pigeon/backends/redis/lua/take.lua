-- take: hand out start slots from token buckets by the generic cell rate algorithm, one
-- take at a time in the order given. ARGV[2..]: bucket, interval, burst, hold (seconds),
-- bucket, interval, burst, hold, ...
-- Bucket B .. 'tb:' .. bucket holds its tat (microseconds), PX until the tat has passed:
-- a bucket whose tat passed is the same as an absent one, so it simply vanishes.
-- For a take, wait = max(0, tat - (burst - 1) * interval - now); when wait <= hold the slot
-- is reserved: tat = max(tat, now) + interval. Returns the waits in microseconds, as
-- 'w1,w2,...' (remembered under the token: a retried call reserves nothing twice).

local previous = replay()
if previous then
  return previous
end

local waits = {}
for i = 2, #ARGV, 4 do
  local key = B .. 'tb:' .. ARGV[i]
  local interval = micros(tonumber(ARGV[i + 1]))
  local burst = tonumber(ARGV[i + 2])
  local hold = micros(tonumber(ARGV[i + 3]))
  local tat = tonumber(redis.call('GET', key) or NOW)
  local wait = math.max(0, tat - (burst - 1) * interval - NOW)
  if wait <= hold then
    tat = math.max(tat, NOW) + interval
    redis.call('SET', key, num(tat), 'PX', math.max(1, math.ceil((tat - NOW) / 1000)))
  end
  waits[#waits + 1] = num(wait)
end
return remember(table.concat(waits, ','))
