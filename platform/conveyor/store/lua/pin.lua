-- Serve a retained version until unpinned or redeployed. Returns 'pinned', 'no-function'
-- or 'no-version'.
-- KEYS: state versions version_record serving channel
-- ARGV: name version now
if redis.call('EXISTS', K.state) == 0 then return 'no-function' end
if not redis.call('ZSCORE', K.versions, A.version) or redis.call('EXISTS', K.version_record) == 0 then
  return 'no-version'
end
redis.call('HSET', K.state, 'serving', A.version, 'pinned', A.version, 'updated_at', A.now)
redis.call('HSET', K.serving, A.name, A.version)
redis.call('PUBLISH', K.channel, A.name)
return 'pinned'
