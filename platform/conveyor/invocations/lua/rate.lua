-- Fragment: [limits] rate, a GCRA across every worker. ``rate_key`` holds the function's
-- theoretical arrival time (TAT); each start moves it on by ``emission`` (the period over
-- the count). A start that comes early is given the next free turn (the record's
-- ``rate_at``, the TAT moved on for it) and parked in ``rate_parked`` until then, so the
-- waiting ones start one per turn, in order, rather than all retrying at once; an API
-- process moves each back to its queue when its turn comes.

-- A GCRA's theoretical arrival time (``key``) set to ``tat``, kept a second past it (so
-- a holder woken a little late still finds it: invocations/take_places).
local function set_arrival(key, tat, now)
  redis.call('SET', key, string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end

-- nil: start now; else the time it may start (its turn, reserved on its record).
local function rate_turn(rate_key, record, now, emission)
  now = tonumber(now)
  local reserved = redis.call('HGET', record, 'rate_at')
  if reserved then
    if now + 0.005 >= tonumber(reserved) then
      redis.call('HDEL', record, 'rate_at')
      return nil
    end
    return tonumber(reserved)
  end
  local tat = tonumber(redis.call('GET', rate_key) or '0')
  if tat < now then tat = now end
  local after = tat + emission
  set_arrival(rate_key, after, now)
  if tat <= now then return nil end
  redis.call('HSET', record, 'rate_at', string.format('%.6f', tat))
  return tat
end
