-- Cancel a running job: nothing is fed after this; the items never fed count as
-- cancelled, and a job with no chunk running finishes now. Returns {1, chunks still
-- running} or {0, status}. ``as``: 'cancelled', or 'expired' (its deadline passed: the job
-- and the items it never ran are expired).
-- KEYS: job inputs retries events results done delivery due wake active in_use
-- ARGV: id now as
--! include maps/chunks
local job = K.job
local status = redis.call('HGET', job, 'status')
if status ~= 'running' then return {0, status or ''} end
local never = redis.call('LLEN', K.inputs) + redis.call('ZCARD', K.retries)
redis.call('HSET', job, 'status', A.as, 'cancelled_at', A.now)
redis.call('HINCRBY', job, A.as, never)
redis.call('HINCRBY', job, 'never_fed', never)
redis.call('DEL', K.inputs, K.retries)
if tonumber(redis.call('HGET', job, 'outstanding')) == 0 then
  finish(job, A.id, A.now, K.delivery, K.due, K.wake, {K.results, K.done}, K.in_use)
end
redis.call('PUBLISH', K.events, A.id)
return {1, redis.call('SCARD', K.active)}
