-- A schedule's tick is done: fired as invocation ``id`` ('' when it was not), unless this
-- or a later tick was recorded already. The last fired tick only moves forward, so a
-- process that restarts never fires it again; the runs list keeps the last ``keep``.
-- A run fired by hand (``tick`` = 'manual') is only listed. Returns 1 if this call recorded
-- it.
-- KEYS: state runs
-- ARGV: tick id outcome now keep
local tick = -1
if A.tick ~= 'manual' then
  tick = tonumber(A.tick)
  local last = tonumber(redis.call('HGET', K.state, 'last') or '-1')
  if last >= tick then return 0 end
  redis.call('HSET', K.state, 'last', A.tick)
end
redis.call('LPUSH', K.runs, cjson.encode({tick = tick, id = A.id, outcome = A.outcome,
  at = tonumber(A.now)}))
redis.call('LTRIM', K.runs, 0, tonumber(A.keep) - 1)
return 1
