-- Fragment (included by invocations/change after pipelines/advance): a map job over a
-- pipeline, each item a run "<job>.<index>" fed as runs end, at most the job's ``window``
-- at once. The job holds its frozen ``plan`` (every run uses the same versions) and the
-- names of its keys (``k_inputs`` ...). feed_runs(ctx, job, n): start up to ``n`` more
-- runs; pipeline.mapped(ctx, id, record, to): a run of the job ended: its result stored
-- by index (as a chunk's item's), the next item fed, the job finished when none is left.
--! include maps/chunks
local function feed_runs(ctx, job, n)
  local found = redis.call('HMGET', job, 'status', 'k_inputs', 'plan', 'function', 'version',
                           'queue', 'priority', 'ttl', 'owner', 'id', 'k_active')
  if found[1] ~= 'running' or n <= 0 then return end
  local entries = redis.call('LPOP', found[2], n)
  if not entries then return end
  local plan = cjson.decode(found[3])
  local t = redis.call('TIME')
  local at = tostring(t[1] + t[2] / 1000000)
  for _, entry in ipairs(entries) do
    local parts = json_elements(entry)  -- [index, attempt, input]
    local id = found[10] .. '.' .. parts[1]
    local record = plan.keys.record .. id
    redis.call('HSET', record, 'function', found[4], 'version', found[5], 'status', 'queued',
               'queue', found[6], 'priority', found[7], 'attempts', '0', 'created_at', at,
               'ttl', found[8], 'pipeline', '1', 'stream', '1', 'map_job', job,
               'map_index', parts[1])
    if found[9] then redis.call('HSET', record, 'owner', found[9]) end
    redis.call('EXPIRE', record, plan.pending_ttl)
    redis.call('HINCRBY', ctx.in_use, found[4] .. '@' .. found[5], 1)
    redis.call('SADD', found[11], id)
    redis.call('HINCRBY', job, 'outstanding', 1)
    stream_event(record, plan.keys.stream .. id, ctx.stream_events, id, 'status',
                 '{"status":"queued"}')
    pipeline.start(ctx, id, plan, parts[3], found[3])
  end
end

pipeline.mapped = function(ctx, id, record, to)
  local job = record.map_job
  local k = redis.call('HMGET', job, 'k_results', 'k_done', 'k_active', 'k_inputs',
                       'k_retries', 'k_delivery', 'k_events', 'id', 'window')
  local ms = ''
  if record.finished_at and record.created_at then
    ms = ',"d":' .. string.format('%.3f', (record.finished_at - record.created_at) * 1000)
  end
  local compact
  if to == 'succeeded' then
    compact = '{"s":"succeeded","a":1' .. ms .. ',"o":' .. (record.output or 'null') .. '}'
  else
    local error = {type = 'Cancelled', message = 'cancelled'}
    if record.error then error = decoded(record.error, error) end
    compact = cjson.encode({s = to, a = 1, e = error})
  end
  if redis.call('HSETNX', k[1], record.map_index, compact) == 1 then
    redis.call('HINCRBY', job, to, 1)
    redis.call('RPUSH', k[2], record.map_index)
  end
  if redis.call('SREM', k[3], id) == 1 then redis.call('HINCRBY', job, 'outstanding', -1) end
  local running = redis.call('SCARD', k[3])
  feed_runs(ctx, job, tonumber(k[9]) - running)
  if ended(job, k[4], k[5]) and not redis.call('HGET', job, 'finished_at') then
    local t = redis.call('TIME')
    finish(job, k[8], tostring(t[1] + t[2] / 1000000), k[6], ctx.due, ctx.wake, {k[1], k[2]},
           ctx.in_use)
  end
  redis.call('PUBLISH', k[7], k[8])
end
