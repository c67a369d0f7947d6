-- Accept a pipeline run: its record (``fields``) and its first step's invocations, in one
-- step, so a 202 always has both (a first step that cannot be built fails the run at
-- once, visibly). ``plan``: the run's frozen steps (conveyor/pipelines/plan.py), every
-- version it uses counted in use (``in_use``) until it ends; ``input``: the run's input
-- (JSON). Like a submit: with an ``idempotency`` key already used nothing is written and
-- the answer is "<run id> <body digest>" of the first use; a pipeline version no longer in
-- the function store (``version_record``) answers 0; ``holders``: the holders sets of the
-- files its input refers to. The run streams its steps' events (``stream``). A run with a
-- request's deadline (its ``start_by``) is added to ``deadlines`` (invocations/deadline):
-- not started by then, it ends expired; still running, cancelled.
-- KEYS: record idempotency version_record in_use sent sent_messages events due wake invocations failures durations retries bucket recent stream stream_events deadlines ...holders
-- ARGV: pending_ttl id digest in_use_field plan input ...fields
--! include invocations/accept
--! include invocations/change
--! include invocations/deadline
local plan = decoded(A.plan, nil)  -- checked before anything is written
if type(plan) ~= 'table' then return redis.error_reply('ERR the run\'s plan is not JSON') end
local refused = accept(K.record, K.idempotency, K.version_record, K.in_use, A.in_use_field,
                       A.id, A.digest, A.pending_ttl, {unpack(KEYS, K_REST)},
                       {unpack(ARGV, A_REST)})
if refused ~= nil then return refused end
local ctx = {
  events = K.events, due = K.due, wake = K.wake, in_use = K.in_use,
  invocations = K.invocations, failures = K.failures, durations = K.durations,
  retries = K.retries, bucket = K.bucket, recent = K.recent,
  stream_events = K.stream_events, sent = K.sent, sent_messages = K.sent_messages, kill = {},
}
stream_event(K.record, K.stream, K.stream_events, A.id, 'status',
             cjson.encode({status = 'queued'}))
deadline_submitted(K.deadlines, K.record, A.id)
pipeline.start(ctx, A.id, plan, A.input, A.plan)
return 1
