-- An API process takes the oldest training waiting in ``pending`` whose claim is due (never
-- claimed, or claimed by a process that did not finish it within ``lease`` seconds).
-- Returns its id, or '' when none is due.
-- KEYS: pending
-- ARGV: now lease
local due = redis.call('ZRANGEBYSCORE', K.pending, '-inf', A.now, 'LIMIT', 0, 1)
if #due == 0 then return '' end
redis.call('ZADD', K.pending, tonumber(A.now) + tonumber(A.lease), due[1])
return due[1]
