-- An attempt starts: from queued, retrying, or running (its worker vanished and Redis
-- redelivered the message). Returns {previous status, attempt, 1 if the previous attempt
-- was lost (still running, or marked lost by the parent of a pool child that died)}.
-- The first attempt owes the 'start' webhook (``delivery``, ``due``, ``wake``), if asked
-- for, and counts its queue wait; a redelivered one counts as such (``queue_wait``,
-- ``redeliveries``: '' when [metrics] is off). The message's sent copy (``sent``,
-- ``sent_messages``) is dropped: it was delivered. A streaming invocation's stream gets a
-- 'status' event: running, with the attempt and whether it was redelivered.
-- It leaves its function's ``waiting`` set (invocations/waiting). A first attempt past its
-- ``start_by`` does not start (answered as skipped): an API process ends it expired
-- (invocations/deadline); one that starts is due again at its ``cancel_at``, if any.
-- With [limits] concurrency (``slots``, ``parked``: '' without), it runs only in a free slot
-- (invocations/slots), held until ``lease_end``; else its message (``park_message``, for
-- ``park_list``) is parked and the answer is {'parked', 0, 0}.
-- With [limits] rate (``rate_key``, ``rate_parked``: '' without), a start that comes before
-- its turn is parked until then (invocations/rate), with the same answer.
-- KEYS: record delivery due wake queue_wait redeliveries sent sent_messages stream stream_events waiting deadlines slots parked rate_key rate_parked
-- ``usage``: the prefix of the API keys' usage keys (invocations/waiting).
-- ARGV: now pid id concurrency lease_end park_list park_message emission usage
-- A pipeline step's invocation marks its run running (pipelines/advance).
--! include invocations/change
--! include invocations/slots
--! include invocations/rate
redis.call('HDEL', K.sent, A.id)
redis.call('HDEL', K.sent_messages, A.id)
local status = redis.call('HGET', K.record, 'status')
if not status then return {'', 0, 0} end
if status ~= 'queued' and status ~= 'retrying' and status ~= 'running' then
  return {status, 0, 0}
end
if status ~= 'running' and deadline_passed(K.record, A.now) then return {status, 0, 0} end
if K.rate_key ~= '' and status ~= 'running' then
  local turn = rate_turn(K.rate_key, K.record, A.now, tonumber(A.emission))
  if turn then
    redis.call('ZADD', K.rate_parked, turn, A.park_list .. ' ' .. A.park_message)
    return {'parked', 0, 0}
  end
end
if K.slots ~= '' then
  if not take_slot(K.slots, A.id, tonumber(A.concurrency), A.now, A.lease_end) then
    -- its rate turn (if any) was used: it starts without another when a slot frees
    if K.rate_key ~= '' then redis.call('HSET', K.record, 'rate_at', A.now) end
    redis.call('RPUSH', K.parked, A.park_list .. ' ' .. A.park_message)
    return {'parked', 0, 0}
  end
  redis.call('HSET', K.record, 'slot', '1')
end
local lost = 0
if status == 'running' or redis.call('HDEL', K.record, 'lost') == 1 then lost = 1 end
wait_out(K.waiting, K.record, A.id, A.usage)
deadline_started(K.deadlines, K.record, A.id)
local attempts = redis.call('HINCRBY', K.record, 'attempts', 1)
redis.call('HSET', K.record, 'status', 'running', 'started_at', A.now, 'pid', A.pid,
           'redelivered', lost)
local fn = redis.call('HGET', K.record, 'function')
if attempts == 1 then
  local created = redis.call('HGET', K.record, 'created_at')
  if created and K.queue_wait ~= '' then
    observe(K.queue_wait, fn, tonumber(A.now) - tonumber(created), SECONDS)
  end
  if redis.call('HEXISTS', K.record, 'webhook') == 1 then
    local record = hash_table(K.record)
    webhook('start', record, A.id, K.record, K.delivery, K.due, K.wake)
  end
end
if lost == 1 and K.redeliveries ~= '' then redis.call('HINCRBY', K.redeliveries, fn, 1) end
pipeline.started({stream_events = K.stream_events, due = K.due, wake = K.wake}, K.record)
local running = stream_attempt(K.record)
running.status = 'running'
stream_event(K.record, K.stream, K.stream_events, A.id, 'status', cjson.encode(running))
return {status, attempts, lost}
