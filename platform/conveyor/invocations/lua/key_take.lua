-- A map job (``count``: its items) or a pipeline's run, about to be accepted, asks its API
-- key's limits (invocations/key_limits): one reached answers "limited <limit> <seconds to
-- retry after>", counted in ``rejections`` ('' when [metrics] is off) under
-- ``function_name``; else the request takes its turn of the key's rate and ``count`` more
-- are accepted today, and the answer is 'ok'. With an ``idempotency`` key used before
-- nothing is checked or counted: 'replay' (the first request's answer stands). With
-- ``take`` '0' the limits are only asked (a request about to store files: the submit's
-- own step takes them).
-- KEYS: idempotency rejections key_rate key_inflight key_waiting key_daily
-- ARGV: now function_name count take key_emission key_tolerance key_max_inflight key_max_queued key_max_daily day_left
--! include invocations/key_limits
if K.idempotency ~= '' and redis.call('EXISTS', K.idempotency) == 1 then return 'replay' end
local now = tonumber(A.now)
local count = tonumber(A.count)
local limit, after = key_limit(K, A, now, count)
if limit then
  if K.rejections ~= '' then
    redis.call('HINCRBY', K.rejections, A.function_name .. '\tkey:' .. limit, 1)
  end
  return 'limited ' .. limit .. ' ' .. math.ceil(after)
end
if A.take == '1' then key_accepted(K, A, now, count) end
return 'ok'
