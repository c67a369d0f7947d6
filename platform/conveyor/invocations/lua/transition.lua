-- Change an invocation's status, if it is one of ``allowed`` (space separated), to ``to``,
-- setting ``fields`` (name/value pairs). Returns {changed, previous status, ids of the
-- running attempts to kill...}: a pipeline's run or step that ends may cancel others.
-- See invocations/change: a final status (``final`` = 1) publishes the record on
-- ``events``, counts its version down in ``in_use``, queues the 'completed' webhook
-- (``delivery``, ``due``, ``wake``), counts it (``invocations`` .. ``recent``: '' each
-- when [metrics] is off), adds a streaming record's events, and advances the pipeline run
-- it is a step of (which may queue the next step's invocations: ``sent`` and
-- ``sent_messages`` keep their copies). ``ttl``: 0 keeps the record, 'record' expires it
-- after the ttl it was created with. A retry (``retry_message`` not ''): the message goes
-- onto ``retry_list`` in the same step, with a sent copy when ``retry_copied`` is '1'
-- (conveyor/invocations/stranded.py); with ``retry_push`` '0' only the copy is kept (an
-- attempt lost with the broker: kombu should redeliver its message, and the stranded
-- sweep pushes the copy if it never does), and a batch item's ``retry_member`` into the
-- ``delayed`` set, due at ``retry_due``.
-- A submitted invocation enters or leaves its function's ``waiting`` set with the change.
-- A final status takes it out of ``deadlines``; an attempt that ends lets its slot go
-- (``slots_prefix``, ``parked_prefix``: a function's keys are the prefix and its name).
-- KEYS: record events delivery due wake invocations failures durations retries bucket recent in_use retry_list sent sent_messages sent_sequence delayed stream stream_events waiting deadlines
-- ``usage``: the prefix of the API keys' usage keys (invocations/waiting).
-- ARGV: allowed to ttl final id retry_message retry_tag retry_member retry_due retry_copied retry_push slots_prefix parked_prefix usage ...fields
--! include invocations/change
local ctx = {
  events = K.events, due = K.due, wake = K.wake, in_use = K.in_use,
  invocations = K.invocations, failures = K.failures, durations = K.durations,
  retries = K.retries, bucket = K.bucket, recent = K.recent,
  stream_events = K.stream_events, sent = K.sent, sent_messages = K.sent_messages, kill = {},
  waiting = K.waiting, deadlines = K.deadlines,
  slots_prefix = A.slots_prefix, parked_prefix = A.parked_prefix, usage = A.usage,
}
local keys = {record = K.record, delivery = K.delivery, stream = K.stream}
local changed = change(ctx, keys, A.id, A.allowed, A.to, A.ttl, A.final == '1',
                       {unpack(ARGV, A_REST)})
if changed[1] == 0 then return changed end
-- A retry's message goes with the change to 'retrying': no record is ever left retrying
-- without one (a worker killed between two steps would leave it so forever).
if A.retry_message ~= '' then
  if A.retry_push ~= '0' then redis.call('LPUSH', K.retry_list, A.retry_message) end
  if A.retry_copied == '1' then
    local seq = redis.call('INCR', K.sent_sequence)
    redis.call('HSET', K.sent, A.id, K.retry_list .. ' ' .. seq .. ' ' .. A.retry_tag)
    redis.call('HSET', K.sent_messages, A.id, A.retry_message)
  end
end
if A.retry_member ~= '' then redis.call('ZADD', K.delayed, A.retry_due, A.retry_member) end
for _, id in ipairs(ctx.kill) do changed[#changed + 1] = id end
return changed
