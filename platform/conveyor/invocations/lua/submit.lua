-- Accept an invocation: its record and its message, or (batching) its stream item and,
-- unless one is waiting, a drain trigger -- one command, so a 202 always has both.
-- ``queue``: the message's list, or the batching function's stream (``message`` is then
-- ''); ``armed``, ``trigger_list``, ``trigger``, ``armed_ttl``: the drain trigger and its
-- flag; ``item_id``, ``item_version``, ``item_input``: the stream item.
-- The version (``version_record``) must be in the function store (it is counted in use,
-- ``in_use_field`` of ``in_use``, until the invocation ends); else nothing is written and
-- the answer is 0. With an ``idempotency`` key already used, nothing is written and the
-- answer is "<invocation id> <body digest>" of the first use. A message is kept in
-- ``sent``/``sent_messages`` until a worker starts it (conveyor/invocations/stranded.py).
-- ``holders``: the holders sets of the files its input refers to (files/hold). A streaming
-- invocation (its ``fields`` hold ``stream``) gets its first event: 'status' queued, with
-- the messages waiting ahead of it at its priority.
-- It waits in its function's ``waiting`` set until it starts (invocations/waiting); with
-- ``max_queued`` (its function's [limits] max_queued, '' none) reached, nothing is written
-- and the answer is 'full' (unless the idempotency key was used: that answer comes first).
-- A record with ``start_by`` is added to ``deadlines`` (invocations/deadline).
-- A refusal is counted in ``rejections`` ('' when [metrics] is off).
-- KEYS: record queue armed trigger_list idempotency version_record in_use sent sent_messages sent_sequence stream stream_events waiting deadlines rejections ...holders
-- ARGV: pending_ttl message armed_ttl trigger item_id item_version item_input id digest in_use_field function_name max_queued ...fields
--! include invocations/accept
--! include invocations/waiting
--! include invocations/deadline
--! include streams/event
if A.max_queued ~= '' and (K.idempotency == '' or redis.call('EXISTS', K.idempotency) == 0)
   and waiting_count(K.waiting, A.function_name) >= tonumber(A.max_queued) then
  if K.rejections ~= '' then
    redis.call('HINCRBY', K.rejections, A.function_name .. '\tmax_queued', 1)
  end
  return 'full'
end
local refused = accept(K.record, K.idempotency, K.version_record, K.in_use, A.in_use_field,
                       A.id, A.digest, A.pending_ttl, {unpack(KEYS, K_REST)},
                       {unpack(ARGV, A_REST)})
if refused ~= nil then return refused end
redis.call('HSET', K.record, 'waits', '1')
wait_in(K.waiting, K.record, A.id)
deadline_submitted(K.deadlines, K.record, A.id)
if A.message ~= '' then
  local queued = cjson.encode({status = 'queued', ahead = redis.call('LLEN', K.queue)})
  stream_event(K.record, K.stream, K.stream_events, A.id, 'status', queued)
  redis.call('LPUSH', K.queue, A.message)
  local seq = redis.call('INCR', K.sent_sequence)
  redis.call('HSET', K.sent, A.id, K.queue .. ' ' .. seq)
  redis.call('HSET', K.sent_messages, A.id, A.message)
  return 1
end
redis.call('XADD', K.queue, '*', 'id', A.item_id, 'version', A.item_version, 'input', A.item_input)
if redis.call('SET', K.armed, '1', 'NX', 'EX', A.armed_ttl) then
  redis.call('LPUSH', K.trigger_list, A.trigger)
end
return 1
