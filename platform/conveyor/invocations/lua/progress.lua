-- A running invocation's progress (JSON): only while it runs. Returns 1 if it was stored.
-- KEYS: job
-- ARGV: progress
if redis.call('HGET', K.job, 'status') ~= 'running' then return 0 end
redis.call('HSET', K.job, 'progress', A.progress)
return 1
