-- Collect one version if nothing keeps it (the newest ``keep``, the serving, pinned
-- and latest ones, one counted in use): 1 collected, 0 kept, -1 kept because in use.
-- A version in an environment (``environment`` its id, else empty) releases it.
-- KEYS: versions state in_use version_record bundle stored_functions environment_lock environment_users
-- ARGV: name version keep in_use_field environment
--! include environments/release
local rank = redis.call('ZREVRANK', K.versions, A.version)
if not rank then return 0 end
if redis.call('EXISTS', K.state) == 1 then
  if rank < tonumber(A.keep) then return 0 end
  local st = redis.call('HMGET', K.state, 'serving', 'pinned', 'latest')
  for i = 1, 3 do if st[i] == A.version then return 0 end end
end
if tonumber(redis.call('HGET', K.in_use, A.in_use_field) or '0') > 0 then return -1 end
redis.call('ZREM', K.versions, A.version)
redis.call('UNLINK', K.version_record, K.bundle)
if A.environment ~= '' then
  release_environment(K.environment_lock, K.environment_users, A.in_use_field)
end
if redis.call('ZCARD', K.versions) == 0 then redis.call('SREM', K.stored_functions, A.name) end
return 1
