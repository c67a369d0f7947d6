-- A chunk's outcome, and the next chunk (``next_k`` of ``next_n`` items, ``next_message``:
-- '' for none) if the job still runs. ``item_seconds``: seconds per item seen ('' for
-- none). ``outcomes``: the number of results, then (index, status, error type, seconds,
-- result) per item; the number of retries, then (entry, due) per retry; the number of
-- items given back (the chunk yielded to more urgent work), then their entries: they go
-- back to the front of the waiting items, or, if the job was cancelled meanwhile, count
-- as cancelled; last, a timer message (for ``timer_list``) due with the earliest of this
-- chunk's retries, pushed unless a chunk was fed: the retries are never left without
-- something to feed them. ``invocations``, ``failures``, ``durations``: '' when
-- [metrics] is off. A pipeline's for_each step (the job has a ``run``) is told in the same
-- step (pipelines/advance: job_settled): a failed item fails its run at once, the job's
-- end starts the next step (``records``, the invocations' events channel, and the keys
-- after it, as a transition has them). Returns {fed, ended, earliest retry or '', ids of
-- running chunks to kill...}.
-- KEYS: job chunk results done retries active inputs next_chunk queue events invocations failures durations delivery due wake in_use timer_list records stream_events sent sent_messages retries_count bucket recent sent_sequence
-- ARGV: id now task_id chunk_number item_seconds next_k next_n next_message next_task_id function_name ...outcomes
--! include maps/chunks
--! include metrics/count
--! include invocations/change
local job, id, now = K.job, A.id, A.now
if redis.call('EXISTS', K.chunk) == 0 then return {0, 0, ''} end  -- settled already
local fn = A.function_name
local n = tonumber(ARGV[A_REST])
local at = A_REST + 1
local failed = {}
for i = 1, n do
  local index, status, error_type, seconds, result = ARGV[at], ARGV[at + 1], ARGV[at + 2],
    ARGV[at + 3], ARGV[at + 4]
  at = at + 5
  if status == 'failed' then failed[#failed + 1] = {index, result} end
  if redis.call('HSETNX', K.results, index, result) == 1 then
    redis.call('HINCRBY', job, status, 1)
    redis.call('RPUSH', K.done, index)
    if K.invocations ~= '' and status ~= 'cancelled' then
      redis.call('HINCRBY', K.invocations, fn .. '\t' .. status, 1)
      if status == 'failed' then redis.call('HINCRBY', K.failures, fn .. '\t' .. error_type, 1) end
      if seconds ~= '' then observe(K.durations, fn, tonumber(seconds), SECONDS) end
    end
  end
end
local retries = tonumber(ARGV[at])
for i = 1, retries do
  redis.call('ZADD', K.retries, ARGV[at + 2 * i], ARGV[at + 2 * i - 1])
end
at = at + 2 * retries + 1
local back = tonumber(ARGV[at])
if back > 0 then
  if redis.call('HGET', job, 'status') == 'running' then
    local entries = {}
    for i = back, 1, -1 do entries[#entries + 1] = ARGV[at + i] end
    redis.call('LPUSH', K.inputs, unpack(entries))  -- the first given back ends up first
  else  -- cancelled, or expired: what it never ran counts as the job ended
    local ended = redis.call('HGET', job, 'status')
    if ended ~= 'expired' then ended = 'cancelled' end
    redis.call('HINCRBY', job, ended, back)
    redis.call('HINCRBY', job, 'never_fed', back)
  end
end
if A.item_seconds ~= '' then
  local seen = tonumber(A.item_seconds)
  local before = tonumber(redis.call('HGET', job, 'item_seconds') or seen)
  redis.call('HSET', job, 'item_seconds', tostring(0.7 * before + 0.3 * seen))
end
redis.call('DEL', K.chunk)
redis.call('SREM', K.active, A.task_id)
redis.call('HINCRBY', job, 'outstanding', -1)
redis.call('HDEL', job, 'starts:' .. A.chunk_number)
local fed = 0
if A.next_message ~= '' then
  fed = feed(job, K.inputs, K.retries, K.next_chunk, K.queue, A.next_k, A.next_n,
             A.next_message, now, {hash = K.sent, messages = K.sent_messages,
                                   sequence = K.sent_sequence, id = A.next_task_id})
end
local timer = ARGV[at + back + 1]
if retries > 0 and fed == 0 and timer and timer ~= '' then
  redis.call('LPUSH', K.timer_list, timer)
end
local over = 0
if ended(job, K.inputs, K.retries) and not redis.call('HGET', job, 'finished_at') then
  finish(job, id, now, K.delivery, K.due, K.wake, {K.results, K.done}, K.in_use)
  over = 1
end
local answer = {fed, over}
if redis.call('HEXISTS', job, 'run') == 1 then
  local ctx = {
    events = K.records, due = K.due, wake = K.wake, in_use = K.in_use,
    invocations = K.invocations, failures = K.failures, durations = K.durations,
    retries = K.retries_count, bucket = K.bucket, recent = K.recent,
    stream_events = K.stream_events, sent = K.sent, sent_messages = K.sent_messages, kill = {},
  }
  pipeline.job_settled(ctx, job, n, failed)
  answer[4] = ctx.kill
end
redis.call('PUBLISH', K.events, id)
local earliest = redis.call('ZRANGE', K.retries, 0, 0, 'WITHSCORES')
answer[3] = earliest[2] or ''
local out = {answer[1], answer[2], answer[3]}
for _, task in ipairs(answer[4] or {}) do out[#out + 1] = task end
return out
