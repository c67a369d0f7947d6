-- An upload is complete: the job runs, its first chunks are queued, in one step (a 202 is
-- a promise); its version counts as in use until the job ends. ``chunks``: one key per
-- initial chunk, ``feeds``: (k, n, message, task id) for each. ``jobs``: the function's recent jobs
-- (the newest ``recent_jobs`` kept). ``delivery`` is '' when no webhook was asked for.
-- Returns {1, ''} accepted; {2, "<id> <digest>"} the idempotency key's first job;
-- {0, status} not uploading; {3, ''} the function store no longer holds the version.
-- KEYS: job inputs retries results done jobs idempotency events queue delivery due wake version_record in_use sent sent_messages sent_sequence ...chunks
-- ARGV: id now pending_ttl digest recent_jobs ...feeds
--! include maps/chunks
--! include maps/accept
local job = K.job
local refused = accept_job(job, K.idempotency, K.version_record, K.in_use, A.id, A.digest,
                           A.pending_ttl, A.now, {K.job, K.inputs, K.retries, K.results, K.done},
                           K.jobs, A.recent_jobs)
if refused then return refused end
for c = 0, #KEYS - K_REST do
  local at = A_REST + 4 * c
  feed(job, K.inputs, K.retries, KEYS[K_REST + c], K.queue, ARGV[at], ARGV[at + 1],
       ARGV[at + 2], A.now, {hash = K.sent, messages = K.sent_messages,
                             sequence = K.sent_sequence, id = ARGV[at + 3]})
end
if ended(job, K.inputs, K.retries) then
  finish(job, A.id, A.now, K.delivery, K.due, K.wake, {K.results, K.done}, K.in_use)
end
redis.call('PUBLISH', K.events, A.id)
return {1, ''}
