-- Serve the latest deploy again. Returns 'unpinned', 'unchanged' or 'no-function'.
-- KEYS: state serving channel
-- ARGV: name now
if redis.call('EXISTS', K.state) == 0 then return 'no-function' end
local st = redis.call('HMGET', K.state, 'pinned', 'latest')
if not st[1] then return 'unchanged' end
redis.call('HSET', K.state, 'serving', st[2], 'updated_at', A.now)
redis.call('HDEL', K.state, 'pinned')
redis.call('HSET', K.serving, A.name, st[2])
redis.call('PUBLISH', K.channel, A.name)
return 'unpinned'
