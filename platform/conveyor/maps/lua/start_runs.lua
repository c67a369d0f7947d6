-- An upload over a pipeline is complete: the job runs and its first ``window`` items
-- start as runs (maps/runs), in one step (a 202 is a promise); its version counts as in
-- use until the job ends. ``plan``: the runs' frozen steps; the job keeps it, and the
-- names of its keys, for the scripts that end its runs. ``delivery`` is '' when no
-- webhook was asked for. Returns as finish_upload does: {1, ''} accepted; {2, "<id>
-- <digest>"} the idempotency key's first job; {0, status} not uploading; {3, ''} the
-- function store no longer holds the version. ``records``: the invocations' events
-- channel (a run that fails at once is published there, as any record).
-- KEYS: job inputs retries results done active jobs idempotency events delivery due wake version_record in_use sent sent_messages invocations failures durations retries_count bucket recent stream_events records
-- ARGV: id now pending_ttl digest recent_jobs plan window
--! include maps/accept
--! include invocations/change
local job = K.job
local refused = accept_job(job, K.idempotency, K.version_record, K.in_use, A.id, A.digest,
                           A.pending_ttl, A.now, {K.job, K.inputs, K.retries, K.results, K.done},
                           K.jobs, A.recent_jobs)
if refused then return refused end
redis.call('HSET', job, 'id', A.id, 'plan', A.plan, 'window', A.window, 'k_inputs', K.inputs,
           'k_retries', K.retries, 'k_results', K.results, 'k_done', K.done,
           'k_active', K.active, 'k_delivery', K.delivery, 'k_events', K.events)
local ctx = {
  events = K.records, due = K.due, wake = K.wake, in_use = K.in_use,
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
