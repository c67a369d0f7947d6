-- Remove a finished invocation (a user purging data): its record, output, stream,
-- idempotency key (if the key still names it) and, a pipeline's run, its state (``run``,
-- ``run_items``: its steps' outputs; the steps' own records expire with their results). Returns '' when there is no such invocation of
-- ``function_name``, its status when unfinished (nothing removed), else 'deleted'.
-- Its checkpoint's file is made due at once (``files_expiry``): the sweeper removes it.
-- KEYS: record stream run run_items files_expiry
-- ARGV: function_name id
--! include invocations/record
local found = redis.call('HMGET', K.record, 'status', 'function', 'idempotency_key',
                         'checkpoint')
if not found[1] or found[2] ~= A.function_name then return '' end
if found[1] == 'queued' or found[1] == 'running' or found[1] == 'retrying' then
  return found[1]
end
if found[4] then redis.call('ZADD', K.files_expiry, 0, found[4]) end
redis.call('DEL', K.record, K.stream, K.run, K.run_items)
forget_idempotency(found[3], A.id)
return 'deleted'
