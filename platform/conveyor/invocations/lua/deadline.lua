-- Fragment: deadlines (``deadlines``: ids by when they are due). A submitted invocation
-- with ``start_by`` ([limits] max_queue_time, or its request's Cancel-After) is in it from
-- its submit; when it starts, it is due again at ``cancel_at`` (the request's Cancel-After)
-- if it has one, else it leaves; a final status removes it. An API process ends what is
-- due (api/deadlines.py): expired if it never started, cancelled if it runs.
local function deadline_submitted(deadlines, record, id)
  local start_by = redis.call('HGET', record, 'start_by')
  if start_by then redis.call('ZADD', deadlines, start_by, id) end
end

-- Whether a first attempt may no longer start (its start_by has passed).
local function deadline_passed(record, now)
  local found = redis.call('HMGET', record, 'start_by', 'attempts')
  return found[1] ~= false and found[2] == '0' and tonumber(now) > tonumber(found[1])
end

local function deadline_started(deadlines, record, id)
  if redis.call('HEXISTS', record, 'start_by') == 0 then return end
  local cancel_at = redis.call('HGET', record, 'cancel_at')
  if cancel_at then
    redis.call('ZADD', deadlines, cancel_at, id)
  else
    redis.call('ZREM', deadlines, id)
  end
end
