-- A bundle written whole under a temporary name (``upload``) becomes the version's
-- ``bundle``, unless another process stored it first. Returns 1 if this one is kept.
-- KEYS: upload bundle
-- ARGV: 
if redis.call('EXISTS', K.bundle) == 1 then
  redis.call('DEL', K.upload)
  return 0
end
redis.call('RENAME', K.upload, K.bundle)
redis.call('PERSIST', K.bundle)
return 1
