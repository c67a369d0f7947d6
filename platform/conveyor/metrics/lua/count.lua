-- Fragment: observe(hash, function, value, bounds) counts a value in a histogram;
-- count_finished(...) counts a record that finished (see conveyor/metrics/db.py: the
-- constants below are SECONDS_BUCKETS, STATS_TTL and RECENT there, checked by a test).
local SECONDS = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800}
local STATS_TTL = 1800
local RECENT = 100
local function observe(key, fn, value, bounds)
  local i = #bounds + 1
  for j, bound in ipairs(bounds) do
    if value <= bound then i = j break end
  end
  redis.call('HINCRBY', key, fn .. '\t' .. i, 1)
  redis.call('HINCRBYFLOAT', key, fn .. '\tsum', value)
  return i
end
local function count_finished(id, record, counters, failures, durations, bucket, recent)
  local fn = record['function']
  redis.call('HINCRBY', counters, fn .. '\t' .. record.status, 1)
  local error_type = ''
  if record.status == 'failed' and record.error then
    local ok, err = pcall(cjson.decode, record.error)
    if ok and type(err) == 'table' and err.type then error_type = err.type end
    redis.call('HINCRBY', failures, fn .. '\t' .. error_type, 1)
  end
  local duration = false
  redis.call('HINCRBY', bucket, fn .. '\tn', 1)
  if record.status == 'failed' then redis.call('HINCRBY', bucket, fn .. '\tfailed', 1) end
  if record.started_at and record.finished_at then
    duration = tonumber(record.finished_at) - tonumber(record.started_at)
    local i = observe(durations, fn, duration, SECONDS)
    redis.call('HINCRBY', bucket, fn .. '\tb' .. i, 1)
  end
  redis.call('EXPIRE', bucket, STATS_TTL)
  redis.call('LPUSH', recent, cjson.encode({id = id, ['function'] = fn,
    status = record.status, error_type = error_type, finished_at = record.finished_at,
    duration = duration, owner = record.owner}))
  redis.call('LTRIM', recent, 0, RECENT - 1)
end
