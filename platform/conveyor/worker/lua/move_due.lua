-- Move the batch items whose retry backoff is over (due by ``now``) from the ``delayed``
-- set back onto the function's ``stream``. Returns how many moved.
-- KEYS: delayed stream
-- ARGV: now
--! include db/decode
local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', A.now, 'LIMIT', 0, 1000)
for _, member in ipairs(due) do
  local item = decoded(member, nil)  -- the worker wrote it: never undecodable, yet guarded
  if type(item) == 'table' then
    redis.call('XADD', K.stream, '*', 'id', item.id, 'version', item.version, 'input', item.input)
    redis.call('ZREM', K.delayed, member)
  end
end
return #due
