-- Fragment: change(ctx, keys, id, allowed, to, ttl, final, fields) changes a record's
-- status, if it is one of ``allowed`` (space separated), to ``to``, setting ``fields``
-- (a list of name/value pairs); returns {changed, previous status}. ``keys``: the
-- record's own keys (record, delivery: its 'completed' webhook, stream); ``ctx``: the
-- script's shared keys (events, due, wake, in_use, the counters: '' each when [metrics]
-- is off, stream_events, sent, sent_messages) and ``kill``, the ids of running attempts
-- a cancel must stop; ``waiting`` (invocations/waiting), ``deadlines``
-- (invocations/deadline), ``slots_prefix``/``parked_prefix`` (invocations/slots: the
-- attempt's slot let go) and ``usage`` (an API key's waiting and unfinished invocations),
-- where the script passes them. ``ttl``: 0 keeps the record, 'record' expires it after the ttl it
-- was created with. A final status (``final`` true) publishes "<id> <record as JSON>" on
-- ``events`` (a waiter never misses it and needs no further read), counts the record's
-- version down in ``in_use``, queues the 'completed' webhook and counts the record; a
-- streaming record's stream gets the attempt's 'error', 'status' retrying and 'done' in
-- the same step; and a pipeline's run or step goes on (``pipeline.ended``, filled in by
-- pipelines/advance, included at the end).
--! include db/decode
--! include invocations/record
--! include invocations/waiting
--! include invocations/deadline
--! include invocations/slots
--! include webhooks/enqueue
--! include metrics/count
--! include streams/event
local pipeline = {}
local function change(ctx, keys, id, allowed, to, ttl, final, fields)
  local status = redis.call('HGET', keys.record, 'status')
  if not status then return {0, ''} end
  if not string.find(' ' .. allowed .. ' ', ' ' .. status .. ' ', 1, true) then
    return {0, status}
  end
  redis.call('HSET', keys.record, 'status', to, unpack(fields))
  if ctx.waiting then  -- (the scripts that change submitted records pass it)
    if to == 'queued' or to == 'retrying' then
      wait_in(ctx.waiting, keys.record, id, ctx.usage)
    else
      wait_out(ctx.waiting, keys.record, id, ctx.usage)
    end
    local inflight = final and usage_key(keys.record, ctx.usage, ':inflight')
    if inflight then redis.call('ZREM', inflight, id) end
  end
  if ttl == 'record' then ttl = redis.call('HGET', keys.record, 'ttl') or '3600' end
  if ttl ~= '0' then
    redis.call('EXPIRE', keys.record, ttl)
    local idempotency = redis.call('HGET', keys.record, 'idempotency_key')
    if idempotency then redis.call('EXPIRE', idempotency, ttl) end
  end
  if to == 'retrying' and ctx.retries ~= '' then
    redis.call('HINCRBY', ctx.retries, redis.call('HGET', keys.record, 'function'), 1)
  end
  if keys.stream ~= '' and redis.call('HEXISTS', keys.record, 'stream') == 1 then
    local attempt = stream_attempt(keys.record)
    local error = redis.call('HGET', keys.record, 'error')
    if (to == 'retrying' or to == 'failed') and error then
      local failed = {attempt = attempt.attempt, redelivered = attempt.redelivered}
      failed.error = decoded(error, {type = 'Error', message = error})
      stream_event(keys.record, keys.stream, ctx.stream_events, id, 'error', cjson.encode(failed))
    end
    if to == 'retrying' then
      local retrying = cjson.encode({status = 'retrying', attempt = attempt.attempt + 1})
      stream_event(keys.record, keys.stream, ctx.stream_events, id, 'status', retrying)
    elseif final then
      stream_event(keys.record, keys.stream, ctx.stream_events, id, 'done',
                   cjson.encode({status = to}))
    end
  end
  if final and ctx.deadlines then redis.call('ZREM', ctx.deadlines, id) end
  if ctx.slots_prefix and redis.call('HDEL', keys.record, 'slot') == 1 then
    local fn = redis.call('HGET', keys.record, 'function')
    release_slot(ctx.slots_prefix .. fn, ctx.parked_prefix .. fn, id)
  end
  if final then
    local record = hash_table(keys.record)
    local output = record.output
    record.logs = nil  -- read on their own (GET .../logs), not carried to every waiter
    redis.call('PUBLISH', ctx.events, id .. ' ' .. cjson.encode(record))
    count_down(ctx.in_use, record['function'], record.version)
    webhook('completed', record, id, keys.record, keys.delivery, ctx.due, ctx.wake)
    if ctx.invocations ~= '' then
      count_finished(id, record, ctx.invocations, ctx.failures, ctx.durations, ctx.bucket,
                     ctx.recent)
    end
    if record.run or record.pipeline or record.map_job then
      record.output = output
      pipeline.ended(ctx, id, record, to)
    end
  end
  return {1, status}
end
--! include maps/chunks
--! include pipelines/advance
--! include maps/runs
