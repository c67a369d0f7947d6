-- Fragment: accept(record, idempotency, version_record, in_use, in_use_field, id, digest,
-- pending_ttl, holders, fields) writes a new record, as a submit and a pipeline's run do:
-- with an ``idempotency`` key already used nothing is written and the answer is "<id>
-- <body digest>" of the first use; with the version gone from the function store
-- (``version_record``) nothing is written and the answer is 0. Otherwise the key names
-- this record (until ``pending_ttl``), the files of ``holders`` are held for it, its
-- ``fields`` are written, and its version is counted in use; the answer is nil.
--! include files/hold
local function accept(record, idempotency, version_record, in_use, in_use_field, id, digest,
                      pending_ttl, holders, fields)
  if idempotency ~= '' then
    local first = redis.call('GET', idempotency)
    if first then return first end
  end
  if redis.call('EXISTS', version_record) == 0 then return 0 end
  if idempotency ~= '' then
    redis.call('SET', idempotency, id .. ' ' .. digest, 'EX', pending_ttl)
  end
  hold(holders, 'job:' .. id)
  redis.call('HSET', record, unpack(fields))
  redis.call('EXPIRE', record, pending_ttl)
  redis.call('HINCRBY', in_use, in_use_field, 1)
  return nil
end
