-- Queue a stranded message again: the sent copy of task ``id`` is still ``entry`` as the
-- sweep saw it, kombu's ``unacked`` hash does not hold its ``tag``, its ``record`` (an
-- invocation's; a map job's, for a chunk: ``owner`` names it) is still one of ``wanted``
-- (space separated: queued or retrying; a chunk's job running), and the message is not on
-- its ``queue_list``. Returns 'requeued', or why not: 'moved', 'held', 'dropped' (the copy
-- of a finished one goes), 'listed'.
-- KEYS: record sent sent_messages unacked queue_list sent_sequence
-- ARGV: id entry tag wanted owner
local entry = redis.call('HGET', K.sent, A.id)
if entry ~= A.entry then return 'moved' end
if redis.call('HEXISTS', K.unacked, A.tag) == 1 then return 'held' end
local status = redis.call('HGET', K.record, 'status')
if not status or not string.find(' ' .. A.wanted .. ' ', ' ' .. status .. ' ', 1, true) then
  redis.call('HDEL', K.sent, A.id)
  redis.call('HDEL', K.sent_messages, A.id)
  return 'dropped'
end
local message = redis.call('HGET', K.sent_messages, A.id)
if not message then return 'moved' end
if redis.call('LPOS', K.queue_list, message) then return 'listed' end
redis.call('LPUSH', K.queue_list, message)
local seq = redis.call('INCR', K.sent_sequence)
local copy = K.queue_list .. ' ' .. seq .. ' ' .. A.tag
if A.owner ~= '' then copy = copy .. ' ' .. A.owner end
redis.call('HSET', K.sent, A.id, copy)
return 'requeued'
