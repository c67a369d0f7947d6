-- Fragment: [limits] concurrency. A function's running attempts hold slots (``slots``: ids
-- by when their lease ends, renewed by the worker that runs them, so a SIGKILLed worker's
-- slot comes back by itself); an invocation that finds them all taken is parked
-- (``parked``: "<queue list> <message>" entries, oldest first) and its message acknowledged.
-- A slot let go moves the oldest parked message back to its queue, where a worker takes it
-- next; api/limits.py does the same for slots whose lease ran out.

-- Whether ``id`` may run now: a free (or its own) slot is taken until ``lease_end``.
local function take_slot(slots, id, concurrency, now, lease_end)
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  if not redis.call('ZSCORE', slots, id) and redis.call('ZCARD', slots) >= concurrency then
    return false
  end
  redis.call('ZADD', slots, lease_end, id)
  return true
end

-- A parked entry ("<queue list> <message>") back on its queue, to be taken next.
local function requeue(entry)
  local space = string.find(entry, ' ', 1, true)
  redis.call('RPUSH', string.sub(entry, 1, space - 1), string.sub(entry, space + 1))
end

-- Move up to ``n`` parked messages back to their queues.
local function unpark(parked, n)
  for _ = 1, n do
    local entry = redis.call('LPOP', parked)
    if not entry then return end
    requeue(entry)
  end
end

local function release_slot(slots, parked, id)
  if redis.call('ZREM', slots, id) == 1 then unpark(parked, 1) end
end
