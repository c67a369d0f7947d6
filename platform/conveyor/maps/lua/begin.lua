-- A chunk starts: only while its job runs; its task is counted ``active``, and the sent
-- copy of its message goes (it was delivered). Returns {1 or 0, starts of this chunk so
-- far, the job's queue, its priority}.
-- KEYS: job active sent sent_messages
-- ARGV: task_id chunk
redis.call('HDEL', K.sent, A.task_id)
redis.call('HDEL', K.sent_messages, A.task_id)
local found = redis.call('HMGET', K.job, 'status', 'queue', 'priority')
if found[1] ~= 'running' then return {0, 0, '', ''} end
redis.call('SADD', K.active, A.task_id)
return {1, redis.call('HINCRBY', K.job, 'starts:' .. A.chunk, 1), found[2], found[3]}
