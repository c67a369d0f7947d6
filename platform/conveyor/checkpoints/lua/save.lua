-- A checkpoint of attempt ``attempt`` of invocation ``id`` was stored as file ``file``
-- (``holders``: its holders set): the record points at it, only while that attempt runs,
-- and the invocation holds the file (kept while it is unfinished; it expires with the
-- result). Returns the file of the checkpoint it replaces ('' none), for the caller to
-- remove, or 0 when the attempt no longer runs (the new file is then the caller's to remove).
-- KEYS: record holders
-- ARGV: id attempt file bytes now
local found = redis.call('HMGET', K.record, 'status', 'attempts', 'checkpoint')
if found[1] ~= 'running' or found[2] ~= A.attempt then return 0 end
redis.call('HSET', K.record, 'checkpoint', A.file, 'checkpoint_bytes', A.bytes,
           'checkpoint_at', A.now, 'checkpoint_attempt', A.attempt)
redis.call('SADD', K.holders, 'job:' .. A.id)
return found[3] or ''
