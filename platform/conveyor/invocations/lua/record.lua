-- Fragment: what ends a record's hold on others, for the scripts that end or remove one.
-- forget_idempotency(key, id): the Idempotency-Key goes if it still names this invocation
-- (a newer use keeps it); count_down(in_use, fn, version): the version is counted down in
-- use (the field goes at zero).
local function forget_idempotency(key, id)
  if not key then return end
  local first = redis.call('GET', key)
  if first and string.sub(first, 1, #id + 1) == id .. ' ' then redis.call('DEL', key) end
end
local function count_down(in_use, fn, version)
  local field = fn .. '@' .. version
  if redis.call('HINCRBY', in_use, field, -1) <= 0 then redis.call('HDEL', in_use, field) end
end
