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
-- Its API key's limits (``key_*``, '' each without: invocations/key_limits) are checked
-- in the same step: one reached answers "limited <limit>
-- <seconds to retry after>" and nothing is written. A refusal is counted in
-- ``rejections`` ('' when [metrics] is off). ``usage``: the prefix of the keys' usage keys.
-- KEYS: record queue armed trigger_list idempotency version_record in_use sent sent_messages sent_sequence stream stream_events waiting deadlines rejections key_rate key_inflight key_waiting key_daily ...holders
-- ARGV: pending_ttl message armed_ttl trigger item_id item_version item_input id digest in_use_field function_name max_queued now usage key_emission key_tolerance key_max_inflight key_max_queued key_max_daily day_left ...fields
--! include invocations/accept
--! include invocations/waiting
--! include invocations/deadline
--! include streams/event
--! include invocations/key_limits
local function count_refusal(limit)
  if K.rejections ~= '' then
    redis.call('HINCRBY', K.rejections, A.function_name .. '\t' .. limit, 1)
  end
end
local now = tonumber(A.now)
local replay = K.idempotency ~= '' and redis.call('EXISTS', K.idempotency) == 1
if not replay then
  if A.max_queued ~= '' and
     waiting_count(K.waiting, A.function_name) >= tonumber(A.max_queued) then
    count_refusal('max_queued')
    return 'full'
  end
  local limit, after = key_limit(K, A, now, 1)
  if limit then
    count_refusal('key:' .. limit)
    return 'limited ' .. limit .. ' ' .. math.ceil(after)
  end
end
local refused = accept(K.record, K.idempotency, K.version_record, K.in_use, A.in_use_field,
                       A.id, A.digest, A.pending_ttl, {unpack(KEYS, K_REST)},
                       {unpack(ARGV, A_REST)})
if refused ~= nil then return refused end
redis.call('HSET', K.record, 'waits', '1')
wait_in(K.waiting, K.record, A.id, A.usage)
local inflight = usage_key(K.record, A.usage, ':inflight')
if inflight then redis.call('ZADD', inflight, now, A.id) end
key_accepted(K, A, now, 1)
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
