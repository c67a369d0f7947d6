-- Fragment: feed(...) moves due retries, then waiting items, into chunk k and queues its
-- message, if the job runs and chunk k is the next; finish(...) ends a job with nothing
-- left to run (its version counted down in use, its keys expiring, its 'completed'
-- webhook); ended(...) says whether nothing is left. ``sent`` ({hash, messages, sequence,
-- id}: the sent copies, the queue's sequence, the chunk's task id) keeps a copy of the
-- chunk's message until it begins, as a submit does (invocations/stranded.py: a message
-- kombu took off its list but never recorded, as Redis went away, is queued again).
--! include webhooks/enqueue
local function feed(job, inputs, retries, chunk, queue, k, n, message, now, sent)
  if redis.call('HGET', job, 'status') ~= 'running' then return 0 end
  if tonumber(redis.call('HGET', job, 'chunks')) ~= tonumber(k) then return 0 end
  local due = redis.call('ZRANGEBYSCORE', retries, '-inf', now, 'LIMIT', 0, n)
  for _, entry in ipairs(due) do
    redis.call('RPUSH', chunk, entry)
    redis.call('ZREM', retries, entry)
  end
  local want = tonumber(n) - #due
  if want > 0 then
    local items = redis.call('LPOP', inputs, want)
    if items then redis.call('RPUSH', chunk, unpack(items)) end
  end
  if redis.call('EXISTS', chunk) == 0 then return 0 end
  redis.call('HINCRBY', job, 'chunks', 1)
  redis.call('HINCRBY', job, 'outstanding', 1)
  redis.call('LPUSH', queue, message)
  if sent and sent.sequence and sent.id ~= '' then
    local seq = redis.call('INCR', sent.sequence)
    redis.call('HSET', sent.hash, sent.id, queue .. ' ' .. seq .. ' ' .. sent.id .. ' ' .. job)
    redis.call('HSET', sent.messages, sent.id, message)
  end
  return 1
end

local function finish(job, id, now, delivery, due, wake, related, in_use)
  local version = redis.call('HGET', job, 'function') .. '@' .. redis.call('HGET', job, 'version')
  if redis.call('HINCRBY', in_use, version, -1) <= 0 then redis.call('HDEL', in_use, version) end
  local status = redis.call('HGET', job, 'status')
  if status == 'running' then
    if tonumber(redis.call('HGET', job, 'failed') or '0') > 0 then status = 'failed'
    else status = 'succeeded' end
  end
  redis.call('HSET', job, 'status', status, 'finished_at', now)
  local ttl = redis.call('HGET', job, 'ttl') or '3600'
  redis.call('EXPIRE', job, ttl)
  for _, key in ipairs(related) do redis.call('EXPIRE', key, ttl) end
  local idempotency = redis.call('HGET', job, 'idempotency_key')
  if idempotency then redis.call('EXPIRE', idempotency, ttl) end
  if delivery ~= '' then
    local record = hash_table(job)
    webhook('completed', record, id, job, delivery, due, wake)
  end
end

local function ended(job, inputs, retries)
  return tonumber(redis.call('HGET', job, 'outstanding')) == 0
    and redis.call('LLEN', inputs) == 0 and redis.call('ZCARD', retries) == 0
end
