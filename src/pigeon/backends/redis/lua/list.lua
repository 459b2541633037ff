-- list: one page's walk of the live index and of one history index (list_messages).
-- ARGV[2], ARGV[3]: the id range, lo (inclusive, '' for none) and hi (exclusive); ARGV[4]:
-- at most this many entries walked per index; ARGV[5]: '1' to walk the live index; ARGV[6]:
-- the history index to walk ('h', 'hq:<queue>' or 'ht:<task>'; '' for none); ARGV[7]: an
-- idempotency key ('' for none): only the id it stands for is walked.
-- Returns {live, live_cut, history, history_cut}: live is id, state, queue, task, later
-- ('1' when pending but not due yet) per entry walked ('' fields for one gone meanwhile);
-- history the members walked ('' for one whose outcome and dead letter are gone); a cut is
-- the id of the last entry walked when the walk stopped at its limit, else ''.

local lo, hi, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
if ARGV[7] ~= '' then
  local id = redis.call('GET', B .. 'k:' .. ARGV[7])
  if not id then
    return {{}, '', {}, ''}
  end
  if not after(lo, id) then
    lo = id
  end
  if after(hi, id .. '~') then
    hi = id .. '~'
  end
end
if not after(hi, lo) then
  return {{}, '', {}, ''}
end
local low = lo == '' and '-' or '[' .. lo

local live, live_cut = {}, ''
if ARGV[5] == '1' then
  local ids = redis.call('ZREVRANGEBYLEX', B .. 'live', '(' .. hi, low, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local h = redis.call('HMGET', B .. 'm:' .. id, 'st', 'q', 't', 'due')
    live[#live + 1] = id
    live[#live + 1] = h[1] or ''
    live[#live + 1] = h[2] or ''
    live[#live + 1] = h[3] or ''
    live[#live + 1] = (h[1] == 'pending' and tonumber(h[4]) > NOW) and '1' or '0'
  end
  if #ids >= limit then
    live_cut = ids[#ids]
  end
end

local history, history_cut = {}, ''
if ARGV[6] ~= '' then
  local members = redis.call('ZREVRANGEBYLEX', B .. ARGV[6], '(' .. hi, low, 'LIMIT', 0, limit)
  for i, member in ipairs(members) do
    local id = string.sub(member, 1, string.find(member, '\t', 1, true) - 1)
    if redis.call('EXISTS', B .. 'r:' .. id, B .. 'd:' .. id) > 0 then
      history[i] = member
    else
      history[i] = ''
    end
    if i == limit then
      history_cut = id
    end
  end
end
return {live, live_cut, history, history_cut}
