-- A function's slots whose lease ran out (their worker is gone) are freed, and as many
-- parked messages as there are free slots go back to their queues ([limits] concurrency:
-- ``slots``, ``parked``, '' without); those whose rate turn has come go back too ([limits]
-- rate: ``rate_parked``, '' without). Returns how many moved.
-- KEYS: slots parked rate_parked
-- ARGV: now concurrency
--! include invocations/slots
local moved = 0
if K.slots ~= '' then
  redis.call('ZREMRANGEBYSCORE', K.slots, '-inf', A.now)
  local free = tonumber(A.concurrency) - redis.call('ZCARD', K.slots)
  local before = redis.call('LLEN', K.parked)
  if free > 0 then unpark(K.parked, free) end
  moved = before - redis.call('LLEN', K.parked)
end
if K.rate_parked ~= '' then
  for _, entry in ipairs(redis.call('ZRANGEBYSCORE', K.rate_parked, '-inf', A.now)) do
    redis.call('ZREM', K.rate_parked, entry)
    requeue(entry)
    moved = moved + 1
  end
end
return moved
