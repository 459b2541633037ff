-- pauses: the paused queues, one field each of the hash `pauses` (see common.lua):
-- queue -> "<until> <since> <reason>", until and since in microseconds (until 0: until
-- resumed), reason '-' for none or '+' and its text. fetch.lua reads the until (HMGET of
-- its queues, one call) and skips a queue whose pause is live (0, or later than now).
-- ARGV[2] the operation:
--   'pause', queue, reason ('-' or '+text'), until seconds ('' for none):
--       {1, value stored} (a live pause keeps its since), or {0, now} when until <= now;
--       wakes the queue's blocked fetches, so that they sleep until the new until.
--   'resume', queue: 1 if the queue was paused (live), else 0; wakes its blocked fetches.
--   'list': {now, queue, value, ...} of every stored pause, expired ones included.

local op = ARGV[2]
local key = B .. 'pauses'

local function live(value)
  local until_ = tonumber(string.match(value, '^%d+'))
  return until_ == 0 or until_ > NOW
end

if op == 'list' then
  local out = {NOW}
  local all = redis.call('HGETALL', key)
  for i = 1, #all do
    out[#out + 1] = all[i]
  end
  return out
end

local queue = ARGV[3]
if op == 'resume' then
  local previous = replay()
  if previous then
    return tonumber(previous)
  end
  local held = redis.call('HGET', key, queue)
  redis.call('HDEL', key, queue)
  notified[queue] = true -- a fetch blocked on the queue looks again
  publish()
  local was = (held and live(held)) and 1 or 0
  remember(tostring(was))
  return was
end

-- pause
local until_ = 0
if ARGV[5] ~= '' then
  until_ = micros(tonumber(ARGV[5]))
  if until_ <= NOW then
    return {0, NOW}
  end
end
local since = NOW
local held = redis.call('HGET', key, queue)
if held and live(held) then
  since = tonumber(string.match(held, '^%d+ (%d+)'))
end
local value = num(until_) .. ' ' .. num(since) .. ' ' .. ARGV[4]
redis.call('HSET', key, queue, value)
notified[queue] = true -- a blocked fetch looks again and learns when the pause ends
publish()
return {1, value}
