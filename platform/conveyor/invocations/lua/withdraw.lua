-- Take back a submit that Redis could not replicate in time ([redis] min_replicas), while
-- no worker has started it: its record, its idempotency key (if the key still names it),
-- its count in use and its sent copy go; a message or stream item already delivered then
-- finds no record and is skipped. Returns 'withdrawn', or the status that stops it (''
-- when there is no record).
-- KEYS: record in_use sent sent_messages waiting
-- ARGV: id usage
--! include invocations/record
--! include invocations/waiting
local found = redis.call('HMGET', K.record, 'status', 'idempotency_key', 'function', 'version')
if not found[1] then return '' end
if found[1] ~= 'queued' then return found[1] end
wait_out(K.waiting, K.record, A.id, A.usage)
local inflight = usage_key(K.record, A.usage, ':inflight')
if inflight then redis.call('ZREM', inflight, A.id) end
redis.call('DEL', K.record)
redis.call('HDEL', K.sent, A.id)
redis.call('HDEL', K.sent_messages, A.id)
forget_idempotency(found[2], A.id)
count_down(K.in_use, found[3], found[4])
return 'withdrawn'
