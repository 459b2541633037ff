-- publish: append events to the app's event log, in the order given. ARGV[2..]: encoded
-- Events. The log is the stream B .. 'events' (field 'e'), trimmed to about EVENTS_KEPT
-- entries (MAXLEN ~ trims whole nodes only, so at least EVENTS_KEPT are kept); a stream
-- id is a reader's cursor. Remembered under the token: a retried call appends nothing twice.

if replay() then
  return 1
end
local key = B .. 'events'
for i = 2, #ARGV do
  redis.call('XADD', key, 'MAXLEN', '~', EVENTS_KEPT, '*', 'e', ARGV[i])
end
remember('1')
return 1
