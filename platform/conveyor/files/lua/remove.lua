-- A file gone: its record, its bytes (in Redis), its holders and its place in the expiry
-- set; the bytes it counted against its API key's quota (files/reserve) given back.
-- Returns where its bytes were ('redis', 's3'; '' when there was no such file).
-- KEYS: file data holders expiry
-- ARGV: id
local found = redis.call('HMGET', K.file, 'store', 'usage', 'reserved')
local store = found[1] or ''
if found[2] and tonumber(found[3]) then
  if redis.call('DECRBY', found[2], tonumber(found[3])) <= 0 then redis.call('DEL', found[2]) end
end
redis.call('DEL', K.file, K.data, K.holders)
redis.call('ZREM', K.expiry, A.id)
return store
