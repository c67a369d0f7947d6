-- Store a new API key (its ``record`` under its ``digest``, its ``name``, its
-- ``webhook_secret``: '' for none) unless the name is taken; announced on ``channel``.
-- Returns 1 if created.
-- KEYS: records names used channel webhook_secrets
-- ARGV: name digest record key_id webhook_secret
if redis.call('HEXISTS', K.names, A.name) == 1 then return 0 end
redis.call('HSET', K.names, A.name, A.digest)
redis.call('HSET', K.records, A.digest, A.record)
if A.webhook_secret ~= '' then redis.call('HSET', K.webhook_secrets, A.key_id, A.webhook_secret) end
redis.call('PUBLISH', K.channel, A.digest)
return 1
