-- The ``places`` take_places held under ``token`` end, ``used`` of them by items that
-- started. A batch's items (``ids``, with ``record_prefix`` their records' keys) take them
-- over: with [limits] concurrency (``slots``, ``parked``: '' without) each item that may
-- still start (queued, retrying, or running when a lost attempt's item comes back) holds
-- a slot until ``lease_end``, marked on its record as an invocation's is, so the step that
-- ends its attempt lets it go (invocations/change); a map job's items (no ``ids``) ran and
-- hold nothing. Each place no item holds moves a parked message back to its queue.
-- With [limits] rate (``rate_key``: '' without) the turns of places not ``used`` are given
-- back (the arrival time moves back ``emission`` each, never before ``now``).
-- Returns how many slots the items hold.
-- KEYS: slots parked rate_key
-- ARGV: now lease_end places used token emission record_prefix ...ids
--! include invocations/slots
--! include invocations/rate
local places = tonumber(A.places)
local held = 0
local used = tonumber(A.used)
for i = A_REST, #ARGV do
  local record = A.record_prefix .. ARGV[i]
  local status = redis.call('HGET', record, 'status')
  if K.slots ~= '' and (status == 'queued' or status == 'retrying' or status == 'running') then
    redis.call('ZADD', K.slots, A.lease_end, ARGV[i])
    redis.call('HSET', record, 'slot', '1')
    held = held + 1
  end
end
if K.slots ~= '' then
  for i = 1, places do redis.call('ZREM', K.slots, A.token .. ':' .. i) end
  if places > held then unpark(K.parked, places - held) end
end
if K.rate_key ~= '' and used < places then
  local now = tonumber(A.now)
  local tat = tonumber(redis.call('GET', K.rate_key) or '0')
  local back = tat - (places - used) * tonumber(A.emission)
  if back < now then back = now end
  if tat > now then
    set_arrival(K.rate_key, back, now)
  end
end
return held
