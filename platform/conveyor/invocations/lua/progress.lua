-- A running invocation's progress (JSON): only while it runs, and a 'progress' event on
-- its stream if it streams. Returns 1 if it was stored.
-- KEYS: record stream stream_events
-- ARGV: progress id
--! include streams/event
if redis.call('HGET', K.record, 'status') ~= 'running' then return 0 end
redis.call('HSET', K.record, 'progress', A.progress)
stream_event(K.record, K.stream, K.stream_events, A.id, 'progress', A.progress)
return 1
