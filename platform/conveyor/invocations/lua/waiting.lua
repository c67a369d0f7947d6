-- Fragment: each function's invocations waiting to start, in one sorted set (``waiting``,
-- members "<function>\0<id>", all scored 0), so a function's count is one ZLEXCOUNT
-- (waiting_count) and a purge one range. Only records made by a submit are counted (their
-- field ``waits``): queued, then again while retrying or requeued after a lost worker;
-- ``waiting`` on the record says it is in the set, so leaving it happens once.
local function waiting_member(record, id)
  return redis.call('HGET', record, 'function') .. '\0' .. id
end

local function wait_in(waiting, record, id)
  if redis.call('HEXISTS', record, 'waits') == 1 and
     redis.call('HSETNX', record, 'waiting', '1') == 1 then
    redis.call('ZADD', waiting, 0, waiting_member(record, id))
  end
end

local function wait_out(waiting, record, id)
  if redis.call('HDEL', record, 'waiting') == 1 then
    redis.call('ZREM', waiting, waiting_member(record, id))
  end
end

local function waiting_count(waiting, name)
  return redis.call('ZLEXCOUNT', waiting, '[' .. name .. '\0', '(' .. name .. '\1')
end
