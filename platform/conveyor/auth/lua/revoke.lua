-- Revoke the API key named ``name``: its record, its name, its last use and its webhook
-- secret go; announced on ``channel``. Returns 1 if there was such a key.
-- KEYS: records names used channel webhook_secrets
-- ARGV: name
local digest = redis.call('HGET', K.names, A.name)
if not digest then return 0 end
local record = redis.call('HGET', K.records, digest)
if record then redis.call('HDEL', K.webhook_secrets, cjson.decode(record).id) end
redis.call('HDEL', K.names, A.name)
redis.call('HDEL', K.records, digest)
redis.call('HDEL', K.used, digest)
redis.call('PUBLISH', K.channel, digest)
return 1
