-- One attempt's outcome: ``status`` (pending, delivered, failed), ``attempts``,
-- ``error`` ('' for none), when to try again (``retry_at``: '' when done). The record
-- (if it still exists) shows the outcome; a late 'start' or 'output' outcome does not
-- overwrite the state of an invocation that has finished.
-- KEYS: delivery due job
-- ARGV: status attempts error retry_at event
if A.retry_at ~= '' then
  redis.call('HSET', K.delivery, 'attempts', A.attempts)
  redis.call('ZADD', K.due, A.retry_at, K.delivery)
else
  redis.call('DEL', K.delivery)
  redis.call('ZREM', K.due, K.delivery)
end
local status = redis.call('HGET', K.job, 'status')
if not status then return 0 end
local final = status == 'succeeded' or status == 'failed' or status == 'cancelled' or
  status == 'expired'
if (A.event == 'start' or A.event == 'output') and final then return 0 end
redis.call('HSET', K.job, 'webhook_status', A.status, 'webhook_attempts', A.attempts)
if A.error ~= '' then
  redis.call('HSET', K.job, 'webhook_error', A.error)
else
  redis.call('HDEL', K.job, 'webhook_error')
end
return 1
