-- A batch's items (``ids``) take the places batch_admit held for ``room`` of them. With
-- [limits] concurrency (``slots``, ``parked``: '' without) each item that may still start
-- (queued, retrying, or running when a lost attempt's item comes back) holds a slot until
-- ``lease_end``, marked on its record (``record_prefix`` and its id) as an invocation's is,
-- so the step that ends its attempt lets it go (invocations/change); the placeholders
-- "<token>:<i>" go, and each slot no item took moves a parked trigger back to its queue.
-- With [limits] rate (``rate_key``: '' without) the turns of places no item took are given
-- back (the arrival time moves back ``emission`` each, never before ``now``).
-- Returns how many slots the items hold.
-- KEYS: slots parked rate_key
-- ARGV: now lease_end room token emission record_prefix ...ids
--! include invocations/slots
local room = tonumber(A.room)
local held = 0
local taken = 0
for i = A_REST, #ARGV do
  taken = taken + 1
  local record = A.record_prefix .. ARGV[i]
  local status = redis.call('HGET', record, 'status')
  if K.slots ~= '' and (status == 'queued' or status == 'retrying' or status == 'running') then
    redis.call('ZADD', K.slots, A.lease_end, ARGV[i])
    redis.call('HSET', record, 'slot', '1')
    held = held + 1
  end
end
if K.slots ~= '' then
  for i = 1, room do redis.call('ZREM', K.slots, A.token .. ':' .. i) end
  if room > held then unpark(K.parked, room - held) end
end
if K.rate_key ~= '' and taken < room then
  local tat = tonumber(redis.call('GET', K.rate_key) or '0')
  local back = tat - (room - taken) * tonumber(A.emission)
  local now = tonumber(A.now)
  if back < now then back = now end
  if tat > now then
    redis.call('SET', K.rate_key, string.format('%.6f', back), 'PX',
               math.ceil((back - now) * 1000) + 1000)
  end
end
return held
