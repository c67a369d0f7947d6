-- Deploy a stored bundle: the version's record, the function's state (serving it, its
-- latest), announced on ``channel``. ``source``: 'folder', 'push' or 'training' (``training``:
-- the training's id). Returns 'deployed', 'unchanged' (that version serves already) or
-- 'no-bundle'; with ``serve`` '0', the version is only retained (its record, among the
-- function's versions: for ?version= and rollback) and the answer is 'retained'. A folder
-- version reported failed may deploy after all (a pipeline checked again once the
-- functions it names came).
-- KEYS: state versions version_record serving channel bundle stored_functions
-- ARGV: name version now source source_dir manifest schemas size files files_bytes serve training
if redis.call('EXISTS', K.bundle) == 0 then return 'no-bundle' end
local st = redis.call('HMGET', K.state, 'folder_version', 'serving', 'pinned', 'latest',
                      'error_version')
if A.source == 'folder' and st[1] == A.version and st[5] ~= A.version then
  return 'unchanged'
end
if A.source == 'push' and st[2] == A.version and st[4] == A.version and not st[3] then
  return 'unchanged'
end
redis.call('HSETNX', K.version_record, 'created_at', A.now)
redis.call('HSET', K.version_record, 'version', A.version, 'deployed_at', A.now, 'source', A.source,
           'manifest', A.manifest, 'schemas', A.schemas, 'size', A.size, 'files', A.files,
           'files_bytes', A.files_bytes)
if A.training ~= '' then redis.call('HSET', K.version_record, 'training', A.training) end
redis.call('ZADD', K.versions, A.now, A.version)
redis.call('SADD', K.stored_functions, A.name)
if A.serve == '0' then return 'retained' end
redis.call('HSET', K.state, 'serving', A.version, 'latest', A.version, 'origin', A.source,
           'updated_at', A.now)
redis.call('HDEL', K.state, 'pinned', 'error', 'error_version')
if A.source == 'folder' then
  redis.call('HSET', K.state, 'folder_version', A.version, 'source_dir', A.source_dir)
end
redis.call('HSET', K.serving, A.name, A.version)
redis.call('PUBLISH', K.channel, A.name)
return 'deployed'
