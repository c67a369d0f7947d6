-- A file gone: its record, its bytes (in Redis), its holders and its place in the expiry
-- set. Returns where its bytes were ('redis', 's3'; '' when there was no such file).
-- KEYS: file data holders expiry
-- ARGV: id
local store = redis.call('HGET', K.file, 'store') or ''
redis.call('DEL', K.file, K.data, K.holders)
redis.call('ZREM', K.expiry, A.id)
return store
