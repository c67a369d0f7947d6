-- Queue a batching function's drain ``trigger`` onto ``queue_list`` unless one is already
-- waiting (its ``armed`` flag, set for ``armed_ttl`` seconds). Returns 1 if queued.
-- KEYS: armed queue_list
-- ARGV: armed_ttl trigger
if redis.call('SET', K.armed, '1', 'NX', 'EX', A.armed_ttl) then
  redis.call('LPUSH', K.queue_list, A.trigger)
  return 1
end
return 0
