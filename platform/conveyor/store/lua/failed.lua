-- A folder's newest version is broken (the last good one, if any, keeps serving).
-- Returns 'failed', or 'unchanged' when that version was reported already.
-- KEYS: state serving channel
-- ARGV: name version error now source_dir
if redis.call('HGET', K.state, 'folder_version') == A.version then return 'unchanged' end
redis.call('HSET', K.state, 'folder_version', A.version, 'error', A.error,
           'error_version', A.version, 'updated_at', A.now)
redis.call('HSETNX', K.state, 'origin', 'folder')
redis.call('HSETNX', K.state, 'source_dir', A.source_dir)
redis.call('HSETNX', K.serving, A.name, '')
redis.call('PUBLISH', K.channel, A.name)
return 'failed'
