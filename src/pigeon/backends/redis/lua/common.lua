-- Shared by every pigeon script: RedisBackend loads each script as the constants it
-- generates, then this file, then the script itself (one chunk, one SHA).
--
-- KEYS[1] is the app's key base "{prefix}:"; every key a script touches is built from it,
-- so all of them share one hash tag (one Redis Cluster slot). ARGV[1] is a request token:
-- scripts whose reply would differ on a retry remember their reply under it for a while,
-- so that a call retried after a dropped connection gets the first call's answer.
--
-- Times are integer microseconds of the server's clock (TIME), never the client's.
-- Numbers go into strings through string.format only: Lua's tostring keeps 14 digits.
--
-- Keys (B = KEYS[1]):
--   m:<id>        hash   a message that can still run: st (waiting|pending|leased), q, t,
--                        p (priority), due, a (attempt), f (failures), x (leases lost),
--                        lu (lease until), w (worker), ll (lease seconds), md
--                        (max deliveries), ex (expires at), ttl (result ttl seconds),
--                        af (the message it waits for), cx (cancel requested while
--                        leased), sa (sent at: when it was stored), b (the stored message)
--   q:<queue>     zset   pending and due: score (9 - priority) * 1e13 + due in ms, then id
--   s:<queue>     zset   pending, not due yet (or not promoted yet): score due
--   w:<queue>     set    waiting for a parent or a join
--   leases        zset   leased messages by lease deadline
--   leased        hash   queue -> number of leased messages
--   queues        set    every queue that was ever sent to
--   r:<id>        string a stored outcome (codec.encode_result_record), PX result ttl
--   results       zset   stored outcomes by expiry (counting, sweeping)
--   k:<key>       string idempotency key -> message id, PX result ttl
--   f:<id>        set    follow-ups waiting for <id>
--   j:<id>        hash   the counters of join message <id>: mode total settled succeeded fired
--   jm:<id>       hash   join id -> how many times <id> is a member of it, until it settles
--   d:<id>        hash   a dead letter: q t reason died b, and p ll md ex ttl for requeue
--   dead          zset   dead letters by death time;  dq:<queue>: the same per queue
--   workers       hash   worker id -> WorkerInfo JSON;  wexp: zset worker id -> expiry
--   re:<token>    string a remembered reply
--   lock:<name>   string the owner of a lock, PX its ttl
--   schedules     hash   schedule name -> its mark: ticks sent up to (epoch seconds, as given)
--   pauses        hash   paused queue -> "<until> <since> <reason>" (pauses.lua)
--   wake:<queue>  list   a wake-up token (at most one) for the fetches blocked on the queue
--   tb:<bucket>   string the tat of a rate-limit bucket (microseconds), PX until it passes
--   sl:<name>     zset   the places of a concurrency limit: holder -> expiry; PX its latest
--   pg:<id>       string the latest Progress of a message (msgspec JSON), PX its ttl
--   events        stream the event log (field e: an Event as msgspec JSON), ~EVENTS_KEPT long
--   idmark        string the highest message id ever stored, in byte order (mark_ids)
--   live          zset   every message that can still run (m:<id>), score 0: by id (list.lua)
--   h             zset   the history: per kept outcome or dead letter, the member
--                        "<id> TAB <queue> TAB <task> TAB <state> TAB <error type>", score 0
--                        (so by id); hq:<queue> and ht:<task>: the same members per queue
--                        and task; hx: the same members by expiry (sweep drops them)
-- Channel B .. "done": a JSON array [id, outcome, id, outcome, ...] of the messages settled
-- (the outcome as stored, or '' when none was stored now or it is over INLINE_LIMIT bytes:
-- the waiter reads the store then).

local B = KEYS[1]
local TOKEN = ARGV[1]
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local NOW_S = string.format('%s.%06d', clock[1], tonumber(clock[2]))
local NULL = cjson.null

local notified = {} -- queue -> true: it got work, wake a fetch blocked on it at the end
local done = {} -- id, outcome, ... settled by this call: published at the end
local INLINE_LIMIT = 2048

local function num(s)
  return string.format('%.0f', s)
end

local function micros(seconds)
  return math.floor(seconds * 1000000 + 0.5)
end

-- When a message expires, in microseconds (false: never): the earlier of its absolute
-- expires_at and now + its relative expires (seconds; either may be null).
local function expiry(expires_at, expires)
  local at = expires_at ~= NULL and expires_at ~= nil and micros(expires_at)
  if expires ~= NULL and expires ~= nil then
    local relative = NOW + micros(expires)
    if not at or relative < at then
      at = relative
    end
  end
  return at
end

local function ready_score(priority, due)
  return (9 - priority) * 1e13 + math.floor(due / 1000)
end

-- A reply remembered under TOKEN by an earlier run of this very call, or false.
local function replay()
  if TOKEN == '' then
    return false
  end
  return redis.call('GET', B .. 're:' .. TOKEN)
end

local function remember(reply)
  if TOKEN ~= '' then
    redis.call('SET', B .. 're:' .. TOKEN, reply, 'PX', REPLY_TTL_MS)
  end
  return reply
end

-- a > b, comparing bytes (Lua's own string order follows the server's locale).
local function after(a, b)
  if a == b then
    return false
  end
  local n = math.min(#a, #b)
  local i = 1
  while i <= n and string.byte(a, i) == string.byte(b, i) do
    i = i + 1
  end
  if i > n then
    return #a > #b
  end
  return string.byte(a, i) > string.byte(b, i)
end

-- The id mark: every id stored as a message (so every id of an outcome or a dead letter,
-- which were messages first) is at or below it, because each enqueue raises it to its
-- highest id before it stores anything. lo and hi: the lowest and highest id of the batch,
-- in byte order. Returns true when every id of the batch is above the mark as it was, so
-- none of them can be stored already and the batch needs no lookups. Bulk sends from one
-- process make ever higher ids (time-ordered UUIDs), so they take that path; a retried
-- call, a second send of an id and ids made before others were stored do not.
local function mark_ids(lo, hi)
  local mark = redis.call('GET', B .. 'idmark')
  if not mark or after(hi, mark) then
    redis.call('SET', B .. 'idmark', hi)
  end
  return mark ~= false and after(lo, mark)
end

local function zrem_all(key, members)
  for i = 1, #members, 1000 do
    redis.call('ZREM', key, unpack(members, i, math.min(i + 999, #members)))
  end
end

-- Make a message pending: into its queue's ready set when due, else the scheduled set.
local function place(id, queue, priority, due)
  if due > NOW then
    redis.call('ZADD', B .. 's:' .. queue, due, id)
  else
    redis.call('ZADD', B .. 'q:' .. queue, ready_score(priority, due), id)
  end
  notified[queue] = true
end

-- A waiting message (follow-up released, join fired) becomes pending.
local function wake(id)
  local key = B .. 'm:' .. id
  local h = redis.call('HMGET', key, 'st', 'q', 'p', 'due')
  if h[1] ~= 'waiting' then
    return
  end
  redis.call('HSET', key, 'st', 'pending')
  redis.call('SREM', B .. 'w:' .. h[2], id)
  place(id, h[2], tonumber(h[3]), tonumber(h[4]))
end

-- The same rule as pigeon.backends.base.join_fired.
local function join_fired(mode, total, settled, succeeded)
  local failed = settled - succeeded
  if mode == 'all' then
    return failed > 0 or settled >= total
  elseif mode == 'all_settled' then
    return settled >= total
  elseif mode == 'any' then
    return succeeded > 0 or settled >= total
  elseif mode == 'race' then
    return settled > 0
  end
  return false
end

-- The stored form of an outcome made here (poison, expired, cancelled).
local function failure_record(id, state, type, message)
  local jid = cjson.encode(id)
  return '{"id":' .. jid .. ',"state":"' .. state .. '","error":{"type":"' .. type
    .. '","message":' .. cjson.encode(message) .. ',"id":' .. jid .. '}}'
end

-- The index writes of this call, made at its end by write_indexes (from publish): one
-- ZADD per index (results and the history's) and one ZREM of the live index per call, not
-- one per message (a settle of 100 outcomes made 600 calls into Redis for them before).
local zadds = {} -- zset key -> {score, member, score, member, ...}, written by write_indexes
local unlive = {} -- ids that left the live index

local function zadd_later(key, score, member)
  local entries = zadds[key]
  if not entries then
    entries = {}
    zadds[key] = entries
  end
  entries[#entries + 1] = score
  entries[#entries + 1] = member
end

-- A kept outcome's (or dead letter's) entry in the history indexes that list.lua walks,
-- kept until until_us (sweep drops it then). Written at the end of the call.
local function index_history(id, queue, task, state, record, until_us)
  local kind = ''
  if state ~= 'succeeded' then
    kind = string.match(record, '"error":{"type":"([^"\\]*)"') or ''
  end
  local member = id .. '\t' .. queue .. '\t' .. task .. '\t' .. state .. '\t' .. kind
  zadd_later(B .. 'h', 0, member)
  zadd_later(B .. 'hq:' .. queue, 0, member)
  zadd_later(B .. 'ht:' .. task, 0, member)
  zadd_later(B .. 'hx', until_us, member)
end

local function write_indexes()
  for key, entries in pairs(zadds) do
    for i = 1, #entries, 2000 do
      redis.call('ZADD', key, unpack(entries, i, math.min(i + 1999, #entries)))
    end
  end
  zrem_all(B .. 'live', unlive)
end

-- Drop the history entries of id (a dead letter requeued, its outcome forgotten).
local function forget_history(id)
  local members = redis.call('ZRANGEBYLEX', B .. 'h', '[' .. id .. '\t', '(' .. id .. '\t\255')
  for _, member in ipairs(members) do
    local queue, task = string.match(member, '^[^\t]*\t([^\t]*)\t([^\t]*)\t')
    redis.call('ZREM', B .. 'h', member)
    redis.call('ZREM', B .. 'hq:' .. queue, member)
    redis.call('ZREM', B .. 'ht:' .. task, member)
    redis.call('ZREM', B .. 'hx', member)
  end
end

-- Settle a message for good, in one step: store its outcome (the first one stored wins),
-- a dead letter for 'dead', remove the message, release its follow-ups and advance the
-- joins it belongs to. The caller has taken it out of its queue structures already.
-- record is the outcome's JSON without settled_at; reason the dead letter's reason; task
-- the message's task when the caller read it (else it is read here).
local function finish(id, queue, state, ttl, record, reason, task)
  local key = B .. 'm:' .. id
  if state == 'dead' then
    local h = redis.call('HMGET', key, 't', 'b', 'p', 'll', 'md', 'ex', 'ttl')
    task = task or h[1]
    local letter = B .. 'd:' .. id
    redis.call('HSET', letter, 'q', queue, 't', h[1] or '', 'reason', reason, 'died', NOW,
      'b', h[2] or '', 'p', h[3] or 0, 'll', h[4] or 30, 'md', h[5] or 3, 'ttl', h[7] or 86400)
    if h[6] then
      redis.call('HSET', letter, 'ex', h[6])
    end
    redis.call('ZADD', B .. 'dead', NOW, id)
    redis.call('ZADD', B .. 'dq:' .. queue, NOW, id)
  end
  if not task and (ttl > 0 or state == 'dead') then -- only a kept outcome is indexed
    task = redis.call('HGET', key, 't') or ''
  end
  redis.call('DEL', key, B .. 'j:' .. id)
  unlive[#unlive + 1] = id
  local fkey, jkey = B .. 'f:' .. id, B .. 'jm:' .. id
  local followers, joins = {}, {}
  -- One EXISTS for the usual case of a message nothing depends on, instead of two reads.
  if redis.call('EXISTS', fkey, jkey) > 0 then
    followers = redis.call('SMEMBERS', fkey)
    joins = redis.call('HGETALL', jkey)
    redis.call('DEL', fkey, jkey)
    if ttl <= 0 then
      ttl = KEEP_FOR_DEPENDENTS
    end
  end
  local published = ''
  local kept = false -- until when the history keeps it (microseconds)
  if ttl > 0 then
    local ms = math.max(1, math.floor(ttl * 1000 + 0.5))
    local stored = string.sub(record, 1, -2) .. ',"settled_at":' .. NOW_S .. '}'
    if redis.call('SET', B .. 'r:' .. id, stored, 'PX', ms, 'NX') then
      kept = NOW + ms * 1000
      zadd_later(B .. 'results', kept, id)
      if #stored <= INLINE_LIMIT then
        published = stored
      end
    end
  end
  if state == 'dead' then
    kept = math.max(kept or 0, NOW + DEAD_LETTER_TTL_US)
  end
  if kept then
    index_history(id, queue, task, state, record, kept)
  end
  for _, follower in ipairs(followers) do
    wake(follower)
  end
  local success = state == 'succeeded' and 1 or 0
  for i = 1, #joins, 2 do
    local join, times = joins[i], tonumber(joins[i + 1])
    local counters = B .. 'j:' .. join
    local j = redis.call('HMGET', counters, 'mode', 'total', 'settled', 'succeeded', 'fired')
    if j[1] and j[5] ~= '1' then
      local settled = tonumber(j[3]) + times
      local succeeded = tonumber(j[4]) + times * success
      redis.call('HSET', counters, 'settled', settled, 'succeeded', succeeded)
      if join_fired(j[1], tonumber(j[2]), settled, succeeded) then
        redis.call('HSET', counters, 'fired', 1)
        wake(join)
      end
    end
  end
  done[#done + 1] = id
  done[#done + 1] = published
end

-- Tell the waiters: settled ids on the done channel; for each queue that got work, a token
-- in its wake list, which a blocked fetch (BLPOP) takes as soon as this script ends. One
-- token is enough: a fetch that leaves work behind pushes the next one (fetch.lua).
local function publish()
  write_indexes()
  if #done > 0 then
    redis.call('PUBLISH', B .. 'done', cjson.encode(done))
  end
  for queue in pairs(notified) do
    local key = B .. 'wake:' .. queue
    redis.call('LPUSH', key, 1)
    redis.call('LTRIM', key, 0, 0)
  end
end

-- Count changes of the leased gauge, applied once per queue at the end of a call.
local leased_delta = {}
local function count_leased(queue, n)
  leased_delta[queue] = (leased_delta[queue] or 0) + n
end
local function apply_leased()
  for queue, n in pairs(leased_delta) do
    if n ~= 0 then
      redis.call('HINCRBY', B .. 'leased', queue, n)
    end
  end
end
