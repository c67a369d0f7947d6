-- Set the ``limits`` (JSON) of the key named ``name``; announced on ``channel`` so every
-- API process reads its record again. Returns the record, or 0 for no such key.
-- KEYS: records names used channel webhook_secrets
-- ARGV: name limits
local key_digest = redis.call('HGET', K.names, A.name)
if not key_digest then return 0 end
local record = cjson.decode(redis.call('HGET', K.records, key_digest))
record.limits = cjson.decode(A.limits)
local text = cjson.encode(record)
redis.call('HSET', K.records, key_digest, text)
redis.call('PUBLISH', K.channel, key_digest)
return text
