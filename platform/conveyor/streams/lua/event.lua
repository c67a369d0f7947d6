-- Fragment: stream_event(record, stream, channel, id, kind, data) adds one event to a
-- streaming invocation's stream, in the step that makes it happen: the record counts it
-- (``stream_seq``: the event's number, its entry id ``<n>-0``), the stream expires with
-- the record, and "<id> <n> <kind> <data>" is published on ``channel`` for the API's
-- readers. Nothing happens for a record that does not stream (no ``stream`` field).
-- Returns the event's number, or 0.
local function stream_event(record, stream, channel, id, kind, data)
  if stream == '' or redis.call('HEXISTS', record, 'stream') == 0 then return 0 end
  local n = redis.call('HINCRBY', record, 'stream_seq', 1)
  redis.call('XADD', stream, n .. '-0', 'e', kind, 'd', data)
  local ttl = redis.call('PTTL', record)
  if ttl > 0 then redis.call('PEXPIRE', stream, ttl) else redis.call('PERSIST', stream) end
  redis.call('PUBLISH', channel, id .. ' ' .. n .. ' ' .. kind .. ' ' .. data)
  return n
end
-- The attempt's number and whether it was redelivered, as events carry them.
local function stream_attempt(record)
  local found = redis.call('HMGET', record, 'attempts', 'redelivered')
  local attempt = {attempt = tonumber(found[1] or '0')}
  if found[2] == '1' then attempt.redelivered = true end
  return attempt
end
