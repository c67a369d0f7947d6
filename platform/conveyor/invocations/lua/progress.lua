-- A running invocation's progress (JSON): only while it runs. Returns 1 if it was stored.
-- KEYS: record
-- ARGV: progress
if redis.call('HGET', K.record, 'status') ~= 'running' then return 0 end
redis.call('HSET', K.record, 'progress', A.progress)
return 1
