-- A running attempt's events (``...events``: kind, data pairs: 'output' chunks, 'log'
-- lines), added in one step while the record still says this attempt runs. Returns
-- {'ok', last event's number}; {'stopped', status} when the attempt no longer runs
-- (cancelled, or its message was taken over), nothing added; {'full', bytes} when the
-- events would take the stream past ``limit`` bytes (``stream_bytes`` counts them),
-- nothing added. Each output event may queue the 'output' webhook (``delivery``, ``due``,
-- ``wake``): at most one waiting at a time, and one every ``webhook_every`` seconds.
-- KEYS: record stream channel delivery due wake
-- ARGV: id attempt limit webhook_every ...events
--! include streams/event
--! include webhooks/enqueue
local found = redis.call('HMGET', K.record, 'status', 'attempts', 'stream_bytes')
if found[1] ~= 'running' or found[2] ~= A.attempt then return {'stopped', found[1] or ''} end
local size = tonumber(found[3] or '0')
for i = A_REST + 1, #ARGV, 2 do size = size + #ARGV[i] end
if size > tonumber(A.limit) then return {'full', tostring(size)} end
redis.call('HSET', K.record, 'stream_bytes', size)
local n = 0
local output = false
for i = A_REST, #ARGV, 2 do
  n = stream_event(K.record, K.stream, K.channel, A.id, ARGV[i], ARGV[i + 1])
  if ARGV[i] == 'output' then output = true end
end
if output and redis.call('HEXISTS', K.record, 'webhook') == 1
    and redis.call('EXISTS', K.delivery) == 0 then
  local now = redis.call('TIME')
  local ts = now[1] + now[2] / 1000000
  local last = tonumber(redis.call('HGET', K.record, 'webhook_output_at') or '0')
  if ts - last >= tonumber(A.webhook_every) then
    local record = hash_table(K.record)
    record.logs = nil
    webhook('output', record, A.id, K.record, K.delivery, K.due, K.wake)
    if redis.call('EXISTS', K.delivery) == 1 then
      redis.call('HSET', K.delivery, 'id', 'msg_' .. A.id .. '_output_' .. n)
      redis.call('HSET', K.record, 'webhook_output_at', tostring(ts))
    end
  end
end
return {'ok', n}
