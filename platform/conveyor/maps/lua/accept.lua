-- Fragment: accept_job(job, idempotency, version_record, in_use, id, digest, pending_ttl,
-- now, keys, jobs, recent_jobs) makes an uploaded job run, as finish_upload and start_runs
-- do. Returns nil once it runs, or the answer that refuses it: {0, status} not uploading;
-- {2, "<id> <digest>"} the idempotency key's first job; {3, ''} the function store no
-- longer holds the version. A job that runs counts its version in use, expires its
-- ``keys`` after ``pending_ttl`` until it ends, and is listed in ``jobs`` (the newest
-- ``recent_jobs`` kept).
local function accept_job(job, idempotency, version_record, in_use, id, digest, pending_ttl,
                          now, keys, jobs, recent_jobs)
  local status = redis.call('HGET', job, 'status')
  if status ~= 'uploading' then return {0, status or ''} end
  if idempotency ~= '' then
    local first = redis.call('GET', idempotency)
    if first then return {2, first} end
  end
  if redis.call('EXISTS', version_record) == 0 then return {3, ''} end
  if idempotency ~= '' then
    redis.call('SET', idempotency, id .. ' ' .. digest, 'EX', pending_ttl)
    redis.call('HSET', job, 'idempotency_key', idempotency)
  end
  redis.call('HINCRBY', in_use,
             redis.call('HGET', job, 'function') .. '@' .. redis.call('HGET', job, 'version'), 1)
  redis.call('HSET', job, 'status', 'running', 'started_at', now)
  for _, key in ipairs(keys) do redis.call('EXPIRE', key, pending_ttl) end
  redis.call('ZADD', jobs, now, id)
  redis.call('ZREMRANGEBYRANK', jobs, 0, -1 - tonumber(recent_jobs))
  return nil
end
