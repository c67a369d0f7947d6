-- Fragment (included by invocations/change, whose change() it uses): a pipeline run's
-- steps, advanced in the step that ends their invocations. A run is a record (``pipeline``,
-- ``state``: its state hash, ``items``: its elements' outputs) whose state holds the frozen
-- plan (conveyor/pipelines/plan.py), its input, the step running (``step``), the
-- invocations it waits for (``left``) and each step's status, times, attempts and output.
-- A step's invocation is an ordinary record with ``run``, ``run_state``, ``step`` and, in a
-- ``for_each``, ``element``; its id is "<run>.<step>" or "<run>.<step>.<index>", so a step
-- is never queued twice. pipeline.ended(ctx, id, record, to): a run or a step's
-- invocation ended (change() calls it); pipeline.started(ctx, record): an attempt of a
-- step's invocation started (the run runs); pipeline.start(ctx, id, plan, input, text): a
-- run accepted (pipelines/run; ``text``: the plan as JSON, if the caller has it).
--! include pipelines/json
local CANCELLED = '{"type":"Cancelled","message":"cancelled: the pipeline run ended"}'
local ACTIVE = 'queued running retrying'

local function given(value) return value ~= nil and value ~= cjson.null end

local function now()
  local t = redis.call('TIME')
  return tostring(t[1] + t[2] / 1000000)
end

local function own_keys(plan, id)
  local k = plan.keys
  return {record = k.record .. id, delivery = k.webhook .. id .. k.completed,
          stream = k.stream .. id}
end

local function step_id(run_id, step, element)
  if element then return run_id .. '.' .. step.name .. '.' .. element end
  return run_id .. '.' .. step.name
end

local function step_event(ctx, plan, run_id, event)
  local record = plan.keys.record .. run_id
  stream_event(record, plan.keys.stream .. run_id, ctx.stream_events, run_id, 'step',
               cjson.encode(event))
end

-- The JSON text a template builds (see plan.py), or nil and why.
local function build(tpl, env)
  if tpl.lit then return tpl.lit end
  if tpl.sel ~= nil then
    local root
    if tpl.sel == 'input' then root = env.input
    elseif tpl.sel == 'item' then root = env.item
    elseif tpl.sel == 'index' then root = tostring(env.index)
    else root = redis.call('HGET', env.state, 'out:' .. tpl.sel) end
    if not root then return nil, tpl.text .. ': that step has no output' end
    local found, why = json_path(root, tpl.path)
    if not found then return nil, tpl.text .. ': ' .. string.sub(why, 2) end
    return found
  end
  local parts = {}
  for i, item in ipairs(tpl.items) do
    local text, why = build(item, env)
    if not text then return nil, why end
    if tpl.keys then parts[i] = tpl.keys[i] .. ':' .. text else parts[i] = text end
  end
  if tpl.keys then return '{' .. table.concat(parts, ',') .. '}' end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- A message from its template: the parts between the markers, the markers filled in
-- from ``marks`` (id, job, chunk: as they are; input: a JSON value inside the body's string).
local function fill(parts, marks)
  local out = {}
  for i, part in ipairs(parts) do
    if i % 2 == 1 then out[i] = part
    elseif part == 'input' then out[i] = string.sub(cjson.encode(marks.input), 2, -2)
    else out[i] = marks[part] end
  end
  return table.concat(out)
end

-- A step's invocation (or map job) is its run's caller's: what it reads and writes is
-- checked and owned as the caller's own (files, API keys' listings).
local function inherit_owner(plan, run_id, key)
  local owner = redis.call('HGET', plan.keys.record .. run_id, 'owner')
  if owner then redis.call('HSET', key, 'owner', owner) end
end

-- A for_each step's map job: its keys.
local function job_keys(plan, job_id)
  local k, job = plan.keys, plan.keys.map .. job_id
  return {job = job, inputs = job .. k.inputs, results = job .. k.results, done = job .. k.done,
          retries = job .. k.retries, active = job .. k.active, chunk = job .. k.chunk}
end

-- A for_each step over a function that is not a pipeline runs its elements as the items
-- of a map job "<run>.<step>" (maps/lua/chunks: fed in chunks, settled by index), its
-- first chunks queued now; maps/lua/settle tells the run (pipeline.job_settled).
local function start_job(ctx, plan, step, k, run_id, inputs, at)
  local job_id = run_id .. '.' .. step.name
  local keys = job_keys(plan, job_id)
  redis.call('HSET', keys.job, 'status', 'running', 'created_at', at, 'started_at', at,
             'total', #inputs, 'id', job_id, 'run', run_id, 'run_state', plan.keys.run .. run_id,
             'step', k, unpack(step.job.fields))
  inherit_owner(plan, run_id, keys.job)
  for from = 1, #inputs, 1000 do
    local entries = {}
    for i = from, math.min(from + 999, #inputs) do
      entries[#entries + 1] = '[' .. (i - 1) .. ',1,' .. inputs[i] .. ']'
    end
    redis.call('RPUSH', keys.inputs, unpack(entries))
  end
  for _, key in ipairs({keys.job, keys.inputs}) do redis.call('EXPIRE', key, plan.pending_ttl) end
  redis.call('HINCRBY', ctx.in_use, step.in_use, 1)
  for c = 0, step.job.window - 1 do
    local task_id = job_id .. '.c' .. c
    local message = fill(step.job.chunk, {id = task_id, job = job_id, chunk = c})
    local sent = {hash = ctx.sent, messages = ctx.sent_messages,
                  sequence = step.job.sent_sequence, id = task_id}
    if feed(keys.job, keys.inputs, keys.retries, keys.chunk .. c, step.job.queue, c,
            step.job.size, message, at, sent) == 0 then
      break
    end
  end
end

-- A run's map job ends early: nothing more is fed, its running chunks are killed.
local function cancel_job(ctx, plan, job_id)
  local keys = job_keys(plan, job_id)
  if redis.call('HGET', keys.job, 'status') ~= 'running' then return end
  local never = redis.call('LLEN', keys.inputs) + redis.call('ZCARD', keys.retries)
  redis.call('HSET', keys.job, 'status', 'cancelled', 'cancelled_at', now())
  redis.call('HINCRBY', keys.job, 'cancelled', never)
  redis.call('HINCRBY', keys.job, 'never_fed', never)
  redis.call('DEL', keys.inputs, keys.retries)
  for _, task in ipairs(redis.call('SMEMBERS', keys.active)) do ctx.kill[#ctx.kill + 1] = task end
  if tonumber(redis.call('HGET', keys.job, 'outstanding')) == 0 then
    finish(keys.job, job_id, now(), '', ctx.due, ctx.wake, {keys.results, keys.done}, ctx.in_use)
  end
end

local start_run

-- One invocation of a step, with its record, as a submit would write it.
local function enqueue(ctx, plan, step, k, id, input, run_id, element, at)
  local keys = own_keys(plan, id)
  if redis.call('EXISTS', keys.record) == 1 then return end
  redis.call('HSET', keys.record, 'status', 'queued', 'attempts', '0', 'created_at', at,
             'run', run_id, 'run_state', plan.keys.run .. run_id, 'step', k,
             unpack(step.fields))
  if element then redis.call('HSET', keys.record, 'element', element) end
  inherit_owner(plan, run_id, keys.record)
  redis.call('EXPIRE', keys.record, plan.pending_ttl)
  redis.call('HINCRBY', ctx.in_use, step.in_use, 1)
  if step.kind == 'pipeline' then
    start_run(ctx, id, step.plan, input)
  elseif step.kind == 'batch' then
    redis.call('XADD', step.queue, '*', 'id', id, 'version', step.version, 'input', input)
    if redis.call('SET', step.armed, '1', 'NX', 'EX', step.armed_ttl) then
      redis.call('LPUSH', step.trigger_list, fill(step.trigger, {id = id .. ':batch'}))
    end
  else
    local queued = cjson.encode({status = 'queued', ahead = redis.call('LLEN', step.queue)})
    stream_event(keys.record, keys.stream, ctx.stream_events, id, 'status', queued)
    local message = fill(step.message, {id = id, input = input})
    redis.call('LPUSH', step.queue, message)
    local seq = redis.call('INCR', step.sent_sequence)
    redis.call('HSET', ctx.sent, id, step.queue .. ' ' .. seq)
    redis.call('HSET', ctx.sent_messages, id, message)
  end
end

local function fail_run(ctx, plan, run_id, k, element, error)
  local state = plan.keys.run .. run_id
  local step = plan.steps[k + 1]
  local at = now()
  if step then
    redis.call('HSET', state, 'status:' .. k, 'failed', 'finished:' .. k, at)
    error.step = step.name
    if element then error.index = tonumber(element) end
    local where = 'step ' .. step.name
    if element then where = where .. ' [' .. element .. ']' end
    error.message = where .. ': ' .. (error.message or '')
    step_event(ctx, plan, run_id, {step = step.name, status = 'failed', index = error.index})
  end
  change(ctx, own_keys(plan, run_id), run_id, 'queued running', 'failed', 'record', true,
         {'error', cjson.encode(error), 'finished_at', at})
end

local function finish_run(ctx, plan, run_id)
  local state = plan.keys.run .. run_id
  local output, why
  if given(plan.output) then
    output, why = build(plan.output, {state = state})
  else
    output = redis.call('HGET', state, 'out:' .. (#plan.steps - 1))
  end
  if not output then
    return fail_run(ctx, plan, run_id, #plan.steps, nil,
                    {type = 'PipelineOutputError', message = '[pipeline] output: ' .. why})
  end
  change(ctx, own_keys(plan, run_id), run_id, 'queued running', 'succeeded', 'record', true,
         {'output', output, 'finished_at', now()})
end

-- ``n`` elements started count against the run's API key as the work they are (the key's
-- accepted today, and its rate's turns), not as one run; those of a list in the run's own
-- input were counted when it was accepted. Accepted work is never refused here.
local function count_work(plan, n, from_input)
  local key = plan.key
  if not key or n == 0 or (from_input and key.counted_input) then return end
  if key.daily ~= '' then
    redis.call('INCRBY', key.daily, n)
    redis.call('EXPIRE', key.daily, 2 * 86400)
  end
  if key.rate ~= '' then
    local t = redis.call('TIME')
    local at = t[1] + t[2] / 1000000
    local tat = math.max(tonumber(redis.call('GET', key.rate) or '0'), at) + n * key.emission
    redis.call('SET', key.rate, string.format('%.6f', tat), 'PX',
               math.ceil((tat - at) * 1000) + 1000)
  end
end

-- The next ``n`` elements of a for_each step over a streaming function or a pipeline,
-- each an invocation (or a run) of its own: their inputs built from the elements waiting
-- in the run's ``pending`` list, in order, their ids in its ``running`` set. A step starts
-- [pipelines] window of them and each one's end starts the next, so no script plans more
-- than a window, and a cancel has at most a window to stop.
local function feed_elements(ctx, plan, step, k, run_id, n)
  local state = plan.keys.run .. run_id
  local keys = redis.call('HMGET', state, 'pending', 'running')
  local whole = step.input.sel == 'item' and #step.input.path == 0
  local env = {state = state}
  local at = now()
  for _ = 1, n do
    local element = redis.call('LPOP', keys[1])
    if not element then return end
    local index = redis.call('HINCRBY', state, 'fed:' .. k, 1) - 1
    local built = element
    if not whole then
      env.input = env.input or redis.call('HGET', state, 'input')
      env.item, env.index = element, index
      local bad
      built, bad = build(step.input, env)
      if not built then
        return fail_run(ctx, plan, run_id, k, index, {type = 'InputError', message = bad})
      end
    end
    local id = step_id(run_id, step, index)
    redis.call('SADD', keys[2], id)
    enqueue(ctx, plan, step, k, id, built, run_id, index, at)
  end
end

local function start_elements(ctx, plan, step, k, run_id, elements)
  local pending = redis.call('HGET', plan.keys.run .. run_id, 'pending')
  for from = 1, #elements, 1000 do
    redis.call('RPUSH', pending, unpack(elements, from, math.min(from + 999, #elements)))
  end
  redis.call('EXPIRE', pending, plan.pending_ttl)
  feed_elements(ctx, plan, step, k, run_id, plan.element_window or #elements)
end

-- Start step ``k`` of the run (its invocations queued), or end the run after the last.
local function run_step(ctx, plan, run_id, k)
  local state = plan.keys.run .. run_id
  local input = redis.call('HGET', state, 'input')
  while k < #plan.steps do
    local step = plan.steps[k + 1]
    local at = now()
    local env = {input = input, state = state}
    local inputs = {}
    if given(step.each) then
      local list, why = build(step.each, env)
      local elements = list and json_elements(list)
      if list and not elements then
        why = step.each.text .. ' is ' .. json_kind(list) .. ', not a list'
      end
      if not elements then
        return fail_run(ctx, plan, run_id, k, nil, {type = 'ForEachError', message = why})
      end
      if plan.max_fanout and #elements > plan.max_fanout then
        return fail_run(ctx, plan, run_id, k, nil, {type = 'ForEachError', message =
          step.each.text .. ' has ' .. #elements .. ' elements, more than [pipelines]'
          .. ' max_fanout (' .. plan.max_fanout .. ')'})
      end
      count_work(plan, #elements, step.each.sel == 'input')
      local whole = step.input.sel == 'item' and #step.input.path == 0
      local windowed = plan.keys.pending and not given(step.job)
      for i, element in ipairs(elements) do
        if whole or windowed then inputs[i] = element  -- built as it is fed, if at all
        else
          env.item, env.index = element, i - 1
          local built, bad = build(step.input, env)
          if not built then
            return fail_run(ctx, plan, run_id, k, i - 1, {type = 'InputError', message = bad})
          end
          inputs[i] = built
        end
      end
    else
      local built, why = build(step.input, env)
      if not built then
        return fail_run(ctx, plan, run_id, k, nil, {type = 'InputError', message = why})
      end
      inputs[1] = built
    end
    local each = given(step.each)
    redis.call('HSET', state, 'step', k, 'left', #inputs, 'status:' .. k, 'running',
               'started:' .. k, at, 'each:' .. k, each and #inputs or -1,
               'skip:' .. k, step.skip and 1 or 0)
    step_event(ctx, plan, run_id, {step = step.name, status = 'running', invocations = #inputs})
    if #inputs > 0 and given(step.job) then
      start_job(ctx, plan, step, k, run_id, inputs, at)
      return
    end
    if #inputs > 0 and each and plan.keys.pending then
      return start_elements(ctx, plan, step, k, run_id, inputs)
    end
    if #inputs > 0 then
      for i, built in ipairs(inputs) do
        local element = nil
        if each then element = i - 1 end
        enqueue(ctx, plan, step, k, step_id(run_id, step, element), built, run_id, element, at)
      end
      return
    end
    redis.call('HSET', state, 'out:' .. k, '[]', 'status:' .. k, 'succeeded', 'finished:' .. k, at)
    step_event(ctx, plan, run_id, {step = step.name, status = 'succeeded'})
    k = k + 1
  end
  finish_run(ctx, plan, run_id)
end

-- The JSON list of ``n`` values of ``hash`` (fields ``prefix`` .. 0, 1 ...), each as
-- ``read`` gives it, read a thousand at a time; ``drop``: the fields go once read.
local function json_list(hash, prefix, n, read, drop)
  local parts = {}
  for from = 0, n - 1, 1000 do
    local fields = {}
    for i = from, math.min(from + 999, n - 1) do fields[#fields + 1] = prefix .. i end
    local texts = redis.call('HMGET', hash, unpack(fields))
    for i = 1, #fields do parts[#parts + 1] = read(texts[i]) end
    if drop then redis.call('HDEL', hash, unpack(fields)) end
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function output_or_null(text) return text or 'null' end

-- Step ``k`` is done (``output``: its output, if not stored already): the next one starts.
local function step_succeeded(ctx, plan, run_id, k, output)
  local state = plan.keys.run .. run_id
  if output then redis.call('HSET', state, 'out:' .. k, output) end
  redis.call('HSET', state, 'status:' .. k, 'succeeded', 'finished:' .. k, now())
  step_event(ctx, plan, run_id, {step = plan.steps[k + 1].name, status = 'succeeded'})
  run_step(ctx, plan, run_id, k + 1)
end

start_run = function(ctx, run_id, plan, input, text)
  local state = plan.keys.run .. run_id
  local record = plan.keys.record .. run_id
  redis.call('HSET', record, 'state', state)
  redis.call('HSET', state, 'plan', text or cjson.encode(plan), 'input', input, 'step', -1,
             'record', record, 'items', state .. plan.keys.items,
             'stream', plan.keys.stream .. run_id,
             'start_delivery', plan.keys.webhook .. run_id .. plan.keys.started)
  if plan.keys.pending then  -- (a plan made by the release before has none)
    redis.call('HSET', state, 'pending', state .. plan.keys.pending,
               'running', state .. plan.keys.running)
  end
  redis.call('EXPIRE', state, plan.pending_ttl)
  for _, version in ipairs(plan.uses) do redis.call('HINCRBY', ctx.in_use, version, 1) end
  run_step(ctx, plan, run_id, 0)
end
pipeline.start = start_run

-- A run's first attempt started: it runs, says so on its stream, and owes its 'start'
-- webhook, if it asked for one.
local function run_runs(ctx, state, run_id)
  local keys = redis.call('HMGET', state, 'record', 'stream', 'start_delivery')
  local run_record = keys[1]
  if not run_record or redis.call('HGET', run_record, 'status') ~= 'queued' then return false end
  redis.call('HSET', run_record, 'status', 'running', 'started_at', now())
  stream_event(run_record, keys[2], ctx.stream_events, run_id, 'status',
               cjson.encode({status = 'running'}))
  if keys[3] and redis.call('HEXISTS', run_record, 'webhook') == 1 then
    webhook('start', hash_table(run_record), run_id, run_record, keys[3], ctx.due, ctx.wake)
  end
  return true
end

local function plan_of(state)
  return cjson.decode(redis.call('HGET', state, 'plan'))
end

-- A run ended: the invocations of its step that still run are cancelled, its versions
-- counted down, its state kept as long as its record.
local function run_ended(ctx, id, record, to)
  local state = record.state
  local plan = plan_of(state)
  for _, version in ipairs(plan.uses) do
    if redis.call('HINCRBY', ctx.in_use, version, -1) <= 0 then
      redis.call('HDEL', ctx.in_use, version)
    end
  end
  local ttl = record.ttl or '3600'
  redis.call('EXPIRE', state, ttl)
  local kept = redis.call('HMGET', state, 'items', 'pending', 'running')
  redis.call('EXPIRE', kept[1], ttl)
  local under_way = {}
  if kept[3] then
    under_way = redis.call('SMEMBERS', kept[3])
    redis.call('DEL', kept[2], kept[3])
  end
  local k = tonumber(redis.call('HGET', state, 'step'))
  local step = plan.steps[k + 1]
  if to == 'succeeded' or not step then return end
  if redis.call('HGET', state, 'status:' .. k) == 'running' then
    redis.call('HSET', state, 'status:' .. k, to, 'finished:' .. k, now())
  end
  if given(step.job) then return cancel_job(ctx, plan, id .. '.' .. step.name) end
  local n = tonumber(redis.call('HGET', state, 'each:' .. k))
  local ids = under_way
  if n < 0 then ids = {step_id(id, step, nil)}
  elseif not kept[3] then  -- a run of the release before: every element was queued
    for i = 0, n - 1 do ids[#ids + 1] = step_id(id, step, i) end
  end
  local at = now()
  for _, sibling in ipairs(ids) do
    local done = change(ctx, own_keys(plan, sibling), sibling, ACTIVE, 'cancelled', 'record',
                        true, {'error', CANCELLED, 'finished_at', at})
    if done[1] == 1 and done[2] == 'running' and step.kind ~= 'pipeline' then
      ctx.kill[#ctx.kill + 1] = sibling
    end
  end
end

-- A step's invocation ended: its output kept (or the run failed), and the next step
-- started once it was the step's last.
local function step_ended(ctx, id, record, to)
  local state, run_id, k = record.run_state, record.run, tonumber(record.step)
  local found = redis.call('HMGET', state, 'step', 'skip:' .. k, 'each:' .. k, 'record', 'items')
  if tonumber(found[1]) ~= k or not found[4] then return end
  local status = redis.call('HGET', found[4], 'status')
  if status ~= 'queued' and status ~= 'running' then return end
  local output = record.output or 'null'
  if to ~= 'succeeded' then
    if found[2] ~= '1' then
      local error = {type = 'StepFailed', message = 'ended ' .. to}
      if record.error then error = decoded(record.error, error) end
      error.invocation = id
      return fail_run(ctx, plan_of(state), run_id, k, record.element, error)
    end
    output = 'null'
  end
  local each, items = tonumber(found[3]), found[5]
  if each >= 0 then
    redis.call('HSET', items, k .. ':' .. record.element, output)
  else
    redis.call('HSET', state, 'out:' .. k, output)
  end
  local keys = redis.call('HMGET', state, 'pending', 'running')
  local fed = keys[2] and redis.call('SREM', keys[2], id) == 1
  if redis.call('HINCRBY', state, 'left', -1) > 0 then
    if fed and redis.call('LLEN', keys[1]) > 0 then
      local plan = plan_of(state)
      feed_elements(ctx, plan, plan.steps[k + 1], k, run_id, 1)
    end
    return
  end
  local fanned = nil
  if each >= 0 then fanned = json_list(items, k .. ':', each, output_or_null, true) end
  step_succeeded(ctx, plan_of(state), run_id, k, fanned)
end

-- An item's output in its map job's result: the text after "o", which the worker writes
-- last (worker/chunks.py: ``{"s":…,"a":…,"d":…,"o":…}``); null for an item with none.
local function output_of(result)
  if not result then return 'null' end
  local at = string.find(result, ',"o":', 1, true)
  if not at then return 'null' end
  return string.sub(result, at + 5, -2)
end

-- A chunk of a for_each step's map job settled (maps/lua/settle): ``failed``, its items
-- that failed ({index, result}), fail the run at once (unless the step skips them); the
-- job's end is the step's: its outputs, in order, are the step's output.
pipeline.job_settled = function(ctx, job, settled, failed)
  local found = redis.call('HMGET', job, 'run', 'run_state', 'step', 'finished_at', 'total')
  local run_id, state, k = found[1], found[2], tonumber(found[3])
  local at = redis.call('HMGET', state, 'step', 'skip:' .. k, 'record', 'plan')
  if tonumber(at[1]) ~= k or not at[3] then return end
  local status = redis.call('HGET', at[3], 'status')
  if status ~= 'queued' and status ~= 'running' then return end
  redis.call('HINCRBY', state, 'attempts:' .. k, settled)
  local plan = cjson.decode(at[4])
  if status == 'queued' then run_runs(ctx, state, run_id) end  -- its first chunk ended
  if #failed > 0 and at[2] ~= '1' then
    local first = failed[1]
    local error = (decoded(first[2], {}) or {}).e or {type = 'StepFailed', message = 'failed'}
    error.invocation = run_id .. '.' .. plan.steps[k + 1].name .. '.' .. first[1]
    return fail_run(ctx, plan, run_id, k, first[1], error)
  end
  if not found[4] then return end  -- the job goes on
  local keys = job_keys(plan, run_id .. '.' .. plan.steps[k + 1].name)
  step_succeeded(ctx, plan, run_id, k,
                 json_list(keys.results, '', tonumber(found[5]), output_of, false))
end

pipeline.ended = function(ctx, id, record, to)
  if record.pipeline then run_ended(ctx, id, record, to) end
  if record.run then step_ended(ctx, id, record, to) end
  if record.map_job then pipeline.mapped(ctx, id, record, to) end
end

-- An attempt of a step's invocation started: counted, and its run (and the runs above
-- it) marked running.
pipeline.started = function(ctx, record_key)
  local found = redis.call('HMGET', record_key, 'run', 'run_state', 'step')
  while found[1] do
    local run_id, state = found[1], found[2]
    redis.call('HINCRBY', state, 'attempts:' .. found[3], 1)
    if not run_runs(ctx, state, run_id) then return end
    found = redis.call('HMGET', redis.call('HGET', state, 'record'), 'run', 'run_state', 'step')
  end
end
