-- Fragment: each function's invocations waiting to start, in one sorted set (``waiting``,
-- members "<function>\0<id>", all scored 0), so a function's count is one ZLEXCOUNT
-- (waiting_count) and a purge one range. Only records made by a submit are counted (their
-- field ``waits``): queued, then again while retrying or requeued after a lost worker;
-- ``waiting`` on the record says it is in the set, so leaving it happens once. A record
-- made with an API key (``owner``) is counted for the key too, under ``usage`` (the prefix
-- of each key's usage keys: ``<usage><key id>:waiting``; '' or nil: not counted).
local function waiting_member(record, id)
  return redis.call('HGET', record, 'function') .. '\0' .. id
end

-- The key ``<usage><owner><part>`` of the record's API key, or nil (no key, no usage).
local function usage_key(record, usage, part)
  if not usage or usage == '' then return nil end
  local owner = redis.call('HGET', record, 'owner')
  if not owner then return nil end
  return usage .. owner .. part
end

local function wait_in(waiting, record, id, usage)
  if redis.call('HEXISTS', record, 'waits') == 1 and
     redis.call('HSETNX', record, 'waiting', '1') == 1 then
    redis.call('ZADD', waiting, 0, waiting_member(record, id))
    local mine = usage_key(record, usage, ':waiting')
    if mine then redis.call('ZADD', mine, 0, id) end
  end
end

local function wait_out(waiting, record, id, usage)
  if redis.call('HDEL', record, 'waiting') == 1 then
    redis.call('ZREM', waiting, waiting_member(record, id))
    local mine = usage_key(record, usage, ':waiting')
    if mine then redis.call('ZREM', mine, id) end
  end
end

local function waiting_count(waiting, name)
  return redis.call('ZLEXCOUNT', waiting, '[' .. name .. '\0', '(' .. name .. '\1')
end
