-- enqueue_plain: store messages that have no key, follow-up or join and share every option
-- (a bulk send, a burst of one task's sends), each once: enqueue.lua's work for them, with
-- what they share worked out once and one ZADD for all.
-- ARGV[2]: JSON [queue, task, priority, delay, run_at, max_deliveries, lease, expires_at,
--   result_ttl, expires] (absent values are null; expires is relative, resolved on the
--   server's clock); ARGV[3], ARGV[4]: the lowest and the highest id
--   (byte order); then the n ids, then the n stored bodies.
-- Returns one character per input: '1' stored now, '0' its id was stored already (each id
-- stands for itself: there are no keys).

local s = cjson.decode(ARGV[2])
local queue, task, priority, delay, run_at = s[1], s[2], s[3], s[4], s[5]
local max_deliveries, lease, expires_at, ttl, relative = s[6], s[7], s[8], s[9], s[10]
local n = (#ARGV - 4) / 2
-- ids above the mark are new: no lookups (a bulk send's usual case)
local new = mark_ids(ARGV[3], ARGV[4])

local due = NOW + micros(delay)
if run_at ~= NULL then
  due = math.max(due, micros(run_at))
end
local expires = expiry(expires_at, relative)
-- place() for all of them: the ready set when due, else the scheduled set
local set, score = B .. 'q:' .. queue, ready_score(priority, due)
if due > NOW then
  set, score = B .. 's:' .. queue, due
end
-- Every number as the string Redis would make of it, once: converting Lua numbers is a
-- good part of the cost of each HSET and ZADD.
local function str(number)
  return string.format('%.17g', number)
end
local priority_s, due_s, lease_s, max_deliveries_s, ttl_s, score_s, now_s =
  str(priority), str(due), str(lease), str(max_deliveries), str(ttl), str(score), str(NOW)
local expires_s = expires and str(expires)

local stored = {}
local members = {}
local live = {} -- the ids as members of the live index: 0, id, ...
for i = 1, n do
  local id = ARGV[4 + i]
  local mkey = B .. 'm:' .. id
  if new or redis.call('EXISTS', mkey, B .. 'r:' .. id, B .. 'd:' .. id) == 0 then
    stored[i] = '1'
    redis.call('HSET', mkey, 'st', 'pending', 'q', queue, 't', task, 'p', priority_s,
      'due', due_s, 'll', lease_s, 'md', max_deliveries_s, 'ttl', ttl_s, 'sa', now_s,
      'b', ARGV[4 + n + i])
    if expires_s then
      redis.call('HSET', mkey, 'ex', expires_s)
    end
    members[#members + 1] = score_s
    members[#members + 1] = id
    live[#live + 1] = '0'
    live[#live + 1] = id
  else
    stored[i] = '0'
  end
end
if #members > 0 then
  for i = 1, #members, 2000 do
    redis.call('ZADD', set, unpack(members, i, math.min(i + 1999, #members)))
    redis.call('ZADD', B .. 'live', unpack(live, i, math.min(i + 1999, #live)))
  end
  redis.call('SADD', B .. 'queues', queue)
  notified[queue] = true
end
publish()
return table.concat(stored)
