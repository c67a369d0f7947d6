-- Fragment: an API key's limits, each '' in ``a`` when it has none (``k`` and ``a``: the
-- script's K and A, which name them key_rate key_inflight key_waiting key_daily and
-- key_emission key_tolerance key_max_inflight key_max_queued key_max_daily day_left): a
-- GCRA over ``key_rate`` with ``key_emission`` between requests and a burst of
-- ``key_tolerance`` seconds; its unfinished invocations ``key_inflight``; its waiting ones
-- ``key_waiting``; how many it had accepted today, ``key_daily``.
--! include invocations/rate

-- Which limit a request for ``count`` more reaches (nil: none), and the seconds to retry
-- after.
local function key_limit(k, a, now, count)
  if a.key_max_daily ~= '' and
     tonumber(redis.call('GET', k.key_daily) or '0') + count > tonumber(a.key_max_daily) then
    return 'daily', tonumber(a.day_left)
  end
  if a.key_max_inflight ~= '' and
     redis.call('ZCARD', k.key_inflight) >= tonumber(a.key_max_inflight) then
    return 'max_inflight', 1
  end
  if a.key_max_queued ~= '' and
     redis.call('ZCARD', k.key_waiting) >= tonumber(a.key_max_queued) then
    return 'max_queued', 1
  end
  if a.key_emission ~= '' then
    local tat = math.max(tonumber(redis.call('GET', k.key_rate) or '0'), now)
    local early = tat - now - tonumber(a.key_tolerance)
    if early > 0 then return 'rate', early end
  end
  return nil
end

-- A request accepted: one turn of the rate, and ``count`` more accepted today.
local function key_accepted(k, a, now, count)
  if a.key_max_daily ~= '' then
    redis.call('INCRBY', k.key_daily, count)
    redis.call('EXPIRE', k.key_daily, 2 * 86400)
  end
  if a.key_emission ~= '' then
    local tat = math.max(tonumber(redis.call('GET', k.key_rate) or '0'), now) +
                tonumber(a.key_emission)
    set_arrival(k.key_rate, tat, now)
  end
end
