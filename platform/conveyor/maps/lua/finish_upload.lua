-- An upload is complete: the job runs, its first chunks are queued, in one step (a 202 is
-- a promise); its version counts as in use until the job ends. ``chunks``: one key per
-- initial chunk, ``feeds``: (k, n, message) for each. ``jobs``: the function's recent jobs
-- (the newest ``recent_jobs`` kept). ``delivery`` is '' when no webhook was asked for.
-- Returns {1, ''} accepted; {2, "<id> <digest>"} the idempotency key's first job;
-- {0, status} not uploading; {3, ''} the function store no longer holds the version.
-- KEYS: job inputs retries results done jobs idempotency events queue delivery due wake version_record in_use ...chunks
-- ARGV: id now pending_ttl digest recent_jobs ...feeds
--! include maps/chunks
local job = K.job
local status = redis.call('HGET', job, 'status')
if status ~= 'uploading' then return {0, status or ''} end
if K.idempotency ~= '' then
  local first = redis.call('GET', K.idempotency)
  if first then return {2, first} end
end
if redis.call('EXISTS', K.version_record) == 0 then return {3, ''} end
if K.idempotency ~= '' then
  redis.call('SET', K.idempotency, A.id .. ' ' .. A.digest, 'EX', A.pending_ttl)
  redis.call('HSET', job, 'idempotency_key', K.idempotency)
end
redis.call('HINCRBY', K.in_use,
           redis.call('HGET', job, 'function') .. '@' .. redis.call('HGET', job, 'version'), 1)
redis.call('HSET', job, 'status', 'running', 'started_at', A.now)
for _, key in ipairs({K.job, K.inputs, K.retries, K.results, K.done}) do
  redis.call('EXPIRE', key, A.pending_ttl)
end
redis.call('ZADD', K.jobs, A.now, A.id)
redis.call('ZREMRANGEBYRANK', K.jobs, 0, -1 - tonumber(A.recent_jobs))
for c = 0, #KEYS - K_REST do
  local at = A_REST + 3 * c
  feed(job, K.inputs, K.retries, KEYS[K_REST + c], K.queue, ARGV[at], ARGV[at + 1],
       ARGV[at + 2], A.now)
end
if ended(job, K.inputs, K.retries) then
  finish(job, A.id, A.now, K.delivery, K.due, K.wake, {K.results, K.done}, K.in_use)
end
redis.call('PUBLISH', K.events, A.id)
return {1, ''}
