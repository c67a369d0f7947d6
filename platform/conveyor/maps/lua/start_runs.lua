-- An upload over a pipeline is complete: the job runs and its first ``window`` items
-- start as runs (maps/runs), in one step (a 202 is a promise); its version counts as in
-- use until the job ends. ``plan``: the runs' frozen steps; the job keeps it, and the
-- names of its keys, for the scripts that end its runs. ``delivery`` is '' when no
-- webhook was asked for. Returns as finish_upload does: {1, ''} accepted; {2, "<id>
-- <digest>"} the idempotency key's first job; {0, status} not uploading; {3, ''} the
-- function store no longer holds the version.
-- KEYS: job inputs retries results done active jobs idempotency events delivery due wake version_record in_use sent sent_messages invocations failures durations retries_count bucket recent stream_events
-- ARGV: id now pending_ttl digest recent_jobs plan window
--! include invocations/change
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
redis.call('HSET', job, 'status', 'running', 'started_at', A.now, 'id', A.id, 'plan', A.plan,
           'window', A.window, 'k_inputs', K.inputs, 'k_retries', K.retries,
           'k_results', K.results, 'k_done', K.done, 'k_active', K.active,
           'k_delivery', K.delivery, 'k_events', K.events)
for _, key in ipairs({K.job, K.inputs, K.retries, K.results, K.done}) do
  redis.call('EXPIRE', key, A.pending_ttl)
end
redis.call('ZADD', K.jobs, A.now, A.id)
redis.call('ZREMRANGEBYRANK', K.jobs, 0, -1 - tonumber(A.recent_jobs))
local ctx = {
  events = K.events, due = K.due, wake = K.wake, in_use = K.in_use,
  invocations = K.invocations, failures = K.failures, durations = K.durations,
  retries = K.retries_count, bucket = K.bucket, recent = K.recent,
  stream_events = K.stream_events, sent = K.sent, sent_messages = K.sent_messages, kill = {},
}
feed_runs(ctx, job, tonumber(A.window))
if ended(job, K.inputs, K.retries) and not redis.call('HGET', job, 'finished_at') then
  finish(job, A.id, A.now, K.delivery, K.due, K.wake, {K.results, K.done}, K.in_use)
end
redis.call('PUBLISH', K.events, A.id)
return {1, ''}
