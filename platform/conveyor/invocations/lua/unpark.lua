-- A function's slots whose lease ran out (their worker is gone) are freed, and as many
-- parked messages as there are free slots go back to their queues. Returns how many moved.
-- KEYS: slots parked
-- ARGV: now concurrency
--! include invocations/slots
redis.call('ZREMRANGEBYSCORE', K.slots, '-inf', A.now)
local free = tonumber(A.concurrency) - redis.call('ZCARD', K.slots)
local before = redis.call('LLEN', K.parked)
if free > 0 then unpark(K.parked, free) end
return before - redis.call('LLEN', K.parked)
