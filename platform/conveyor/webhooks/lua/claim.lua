-- Claim up to ``count`` deliveries due by ``now``: each is held (due again) for
-- ``lease`` seconds. Returns their keys.
-- KEYS: due
-- ARGV: now lease count
local due = redis.call('ZRANGEBYSCORE', K.due, '-inf', A.now, 'LIMIT', 0, A.count)
for _, key in ipairs(due) do redis.call('ZADD', K.due, A.now + A.lease, key) end
return due
