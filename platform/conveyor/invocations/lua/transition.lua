-- Change an invocation's status, if it is one of ``allowed`` (space separated), to ``to``,
-- setting ``fields`` (name/value pairs). Returns {changed, previous status}.
-- A final status (``final`` = 1) publishes "<id> <record as JSON>" on ``events`` (a waiter
-- never misses it and needs no further read), counts the record's version down in
-- ``in_use``, queues the 'completed' webhook (``delivery``, ``due``, ``wake``) and counts
-- the invocation (``invocations`` .. ``recent``: '' each when [metrics] is off).
-- ``ttl``: 0 keeps the record, 'record' expires it after the ttl it was created with.
-- A retry (``retry_message`` not ''): the message goes onto ``retry_list`` in the same
-- step, with a sent copy when ``sent`` is not '' (conveyor/invocations/stranded.py), and
-- a batch item's ``retry_member`` into the ``delayed`` set, due at ``retry_due``.
-- A streaming invocation's stream (``stream``, published on ``stream_events``) gets the
-- attempt's 'error' when it failed, 'status' retrying with the next attempt's number, and
-- 'done' with the final status, in the same step.
-- KEYS: record events delivery due wake invocations failures durations retries bucket recent in_use retry_list sent sent_messages sent_sequence delayed stream stream_events
-- ARGV: allowed to ttl final id retry_message retry_tag retry_member retry_due ...fields
--! include invocations/record
--! include webhooks/enqueue
--! include metrics/count
--! include streams/event
local status = redis.call('HGET', K.record, 'status')
if not status then return {0, ''} end
if not string.find(' ' .. A.allowed .. ' ', ' ' .. status .. ' ', 1, true) then
  return {0, status}
end
redis.call('HSET', K.record, 'status', A.to, unpack(ARGV, A_REST))
-- A retry's message goes with the change to 'retrying': no record is ever left retrying
-- without one (a worker killed between two steps would leave it so forever).
if A.retry_message ~= '' then
  redis.call('LPUSH', K.retry_list, A.retry_message)
  if K.sent ~= '' then
    local seq = redis.call('INCR', K.sent_sequence)
    redis.call('HSET', K.sent, A.id, K.retry_list .. ' ' .. seq .. ' ' .. A.retry_tag)
    redis.call('HSET', K.sent_messages, A.id, A.retry_message)
  end
end
if A.retry_member ~= '' then redis.call('ZADD', K.delayed, A.retry_due, A.retry_member) end
local ttl = A.ttl
if ttl == 'record' then ttl = redis.call('HGET', K.record, 'ttl') or '3600' end
if ttl ~= '0' then
  redis.call('EXPIRE', K.record, ttl)
  local idempotency = redis.call('HGET', K.record, 'idempotency_key')
  if idempotency then redis.call('EXPIRE', idempotency, ttl) end
end
if A.to == 'retrying' and K.retries ~= '' then
  redis.call('HINCRBY', K.retries, redis.call('HGET', K.record, 'function'), 1)
end
if K.stream ~= '' and redis.call('HEXISTS', K.record, 'stream') == 1 then
  local attempt = stream_attempt(K.record)
  local error = redis.call('HGET', K.record, 'error')
  if (A.to == 'retrying' or A.to == 'failed') and error then
    local failed = {attempt = attempt.attempt, redelivered = attempt.redelivered}
    failed.error = cjson.decode(error)
    stream_event(K.record, K.stream, K.stream_events, A.id, 'error', cjson.encode(failed))
  end
  if A.to == 'retrying' then
    local retrying = cjson.encode({status = 'retrying', attempt = attempt.attempt + 1})
    stream_event(K.record, K.stream, K.stream_events, A.id, 'status', retrying)
  elseif A.final == '1' then
    stream_event(K.record, K.stream, K.stream_events, A.id, 'done', cjson.encode({status = A.to}))
  end
end
if A.final == '1' then
  local record = hash_table(K.record)
  record.logs = nil  -- read on their own (GET .../logs), not carried to every waiter
  redis.call('PUBLISH', K.events, A.id .. ' ' .. cjson.encode(record))
  count_down(K.in_use, record['function'], record.version)
  webhook('completed', record, A.id, K.record, K.delivery, K.due, K.wake)
  if K.invocations ~= '' then
    count_finished(A.id, record, K.invocations, K.failures, K.durations, K.bucket, K.recent)
  end
end
return {1, status}
