-- fetch: lease up to `limit` due messages from the queues, in the order given; within a
-- queue highest priority first, then earliest due, then id. First reclaims lapsed leases
-- (due again, or dead as poison after max_deliveries) and promotes due scheduled messages;
-- an expired message is settled dead instead of being leased.
-- ARGV[2] worker, ARGV[3] lease seconds ('' for each message's own), ARGV[4] limit,
-- ARGV[5..] queues.
-- Returns {now, next due time or -1, id, attempt, failures, body, lease seconds, waited
-- microseconds (since the message was due), ...}.
-- The next due time (earliest scheduled message of these queues or lease deadline) is
-- given when the queues were drained (fewer than `limit` leased), for the caller to sleep
-- until. A queue left with due work gets a wake-up token, for the next blocked fetch.
-- A paused queue (pauses.lua) is skipped whole: not promoted, not leased, its due times
-- not given, but the time its pause ends by itself is.
-- RedisBackend sends this script right behind a BLPOP on the queues' wake lists when it
-- waits: Redis runs it the moment the BLPOP is served, without another round trip.

local worker, override, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {NOW, -1}

local function deliver(id, attempt, failures, body, lease, due)
  out[#out + 1] = id
  out[#out + 1] = attempt
  out[#out + 1] = failures
  out[#out + 1] = body
  out[#out + 1] = lease
  out[#out + 1] = math.max(NOW - (tonumber(due) or NOW), 0)
end

-- A retried call: hand back what the first run leased, if it is still held as leased.
local previous = replay()
if previous then
  local taken = cjson.decode(previous)
  for i = 1, #taken, 3 do
    local id, attempt = taken[i], taken[i + 1]
    local h = redis.call('HMGET', B .. 'm:' .. id, 'st', 'a', 'f', 'b', 'due')
    if h[1] == 'leased' and tonumber(h[2]) == attempt then
      deliver(id, attempt, tonumber(h[3] or 0), h[4], taken[i + 2], h[5])
    end
  end
  return out
end

-- Leases that ran out: due again, or poison once they ran out max_deliveries times.
local lapsed = redis.call('ZRANGEBYSCORE', B .. 'leases', '-inf', NOW, 'LIMIT', 0, 1000)
if #lapsed > 0 then
  zrem_all(B .. 'leases', lapsed)
  for _, id in ipairs(lapsed) do
    local key = B .. 'm:' .. id
    local h = redis.call('HMGET', key, 'st', 'q', 'p', 'lu', 'x', 'md', 'ttl')
    if h[1] == 'leased' then
      local queue, until_ = h[2], tonumber(h[4])
      if until_ > NOW then -- extended meanwhile (extend moves its score too)
        redis.call('ZADD', B .. 'leases', until_, id)
      else
        count_leased(queue, -1)
        local lost = tonumber(h[5] or 0) + 1
        if lost >= tonumber(h[6]) then
          local message = string.format('poison: lease expired %d times without a settle '
            .. '(the worker running it probably crashed)', lost)
          finish(id, queue, 'dead', tonumber(h[7]), failure_record(id, 'dead', 'Poison', message),
            'Poison: ' .. message)
        else
          redis.call('HSET', key, 'st', 'pending', 'x', lost, 'due', until_)
          redis.call('HDEL', key, 'w')
          place(id, queue, tonumber(h[3]), until_)
        end
      end
    end
  end
end

-- The queues not paused now: one HMGET of the pauses for all of them.
local active = {}
local resumes = -1 -- the earliest time a pause of these queues ends by itself
local pauses = redis.call('HMGET', B .. 'pauses', unpack(ARGV, 5))
for qi = 5, #ARGV do
  local pause = pauses[qi - 4]
  local until_ = pause and tonumber(string.match(pause, '^%d+'))
  if not until_ or (until_ > 0 and until_ <= NOW) then
    active[#active + 1] = ARGV[qi]
  elseif until_ > 0 and (resumes < 0 or until_ < resumes) then
    resumes = until_
  end
end

local taken = {}
local n = 0
for _, queue in ipairs(active) do
  local ready, scheduled = B .. 'q:' .. queue, B .. 's:' .. queue
  -- scheduled messages that are due now join the ready set
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, 1000)
  if #due > 0 then
    local ids = {}
    for i = 1, #due, 2 do
      local id = due[i]
      ids[#ids + 1] = id
      local priority = tonumber(redis.call('HGET', B .. 'm:' .. id, 'p') or 0)
      redis.call('ZADD', ready, ready_score(priority, tonumber(due[i + 1])), id)
    end
    zrem_all(scheduled, ids)
  end
  local emptied = false -- the ready set is known to be empty: no ZPOPMIN or ZCARD to ask it
  while n < limit and not emptied do
    local asked = limit - n
    local popped = redis.call('ZPOPMIN', ready, asked)
    emptied = #popped < 2 * asked
    for i = 1, #popped, 2 do
      local id = popped[i]
      local key = B .. 'm:' .. id
      local h = redis.call('HMGET', key, 'st', 'ex', 'a', 'f', 'b', 'll', 'ttl', 'due')
      if h[1] == 'pending' then
        if h[2] and tonumber(h[2]) <= NOW then
          finish(id, queue, 'dead', tonumber(h[7]), failure_record(id, 'dead', 'Expired',
            'the message expired before it could run'),
            'Expired: the message expired before it could run')
        else
          local attempt = tonumber(h[3] or 0) + 1
          local lease = override ~= '' and override or h[6]
          local until_ = NOW + micros(tonumber(lease))
          redis.call('HSET', key, 'st', 'leased', 'a', attempt, 'w', worker, 'lu', until_)
          redis.call('ZADD', B .. 'leases', until_, id)
          count_leased(queue, 1)
          deliver(id, attempt, tonumber(h[4] or 0), h[5], lease, h[8])
          taken[#taken + 1] = id
          taken[#taken + 1] = attempt
          taken[#taken + 1] = lease
          n = n + 1
        end
      end
    end
  end
  if not emptied and redis.call('ZCARD', ready) > 0 then
    notified[queue] = true -- due work left behind: the next blocked fetch takes it at once
  end
end
apply_leased()
publish()

if n > 0 then
  remember(cjson.encode(taken))
end
if n < limit then
  local next_due = -1
  local function consider(key)
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #first > 0 then
      local at = tonumber(first[2])
      if next_due < 0 or at < next_due then
        next_due = at
      end
    end
  end
  consider(B .. 'leases')
  for _, queue in ipairs(active) do
    consider(B .. 's:' .. queue)
  end
  if resumes >= 0 and (next_due < 0 or resumes < next_due) then
    next_due = resumes
  end
  out[2] = next_due
end
return out
