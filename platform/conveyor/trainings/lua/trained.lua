-- A training's handler returned (attempt ``attempt``): the new version's folder, packed, is
-- file ``file`` (``holders``: its holders set), ``metrics`` what the handler returned. Only
-- while that attempt runs: the record keeps them (it stays running) and the training waits
-- in ``pending`` for an API process to deploy the version and end it. Returns 1, or 0 when
-- the attempt no longer runs (the file is then the caller's to remove). ``logs``: what the
-- attempt printed ('' nothing).
-- KEYS: record pending holders
-- ARGV: id attempt file metrics now logs
local found = redis.call('HMGET', K.record, 'status', 'attempts')
if found[1] ~= 'running' or found[2] ~= A.attempt then return 0 end
redis.call('HSET', K.record, 'trained_file', A.file, 'trained_metrics', A.metrics,
           'trained_at', A.now)
if A.logs ~= '' then redis.call('HSET', K.record, 'logs', A.logs) end
redis.call('SADD', K.holders, 'job:' .. A.id)
redis.call('ZADD', K.pending, A.now, A.id)
return 1
