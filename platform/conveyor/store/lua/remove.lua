-- The function is gone (its versions stay until collected). ``mode`` 'folder': only if
-- its latest deploy came from the folder ``source_dir`` names (a push made since keeps
-- it); 'any': whatever it came from. Returns 1 if removed.
-- KEYS: state serving channel
-- ARGV: name mode source_dir
if redis.call('EXISTS', K.state) == 0 then return 0 end
if A.mode == 'folder' then
  local st = redis.call('HMGET', K.state, 'origin', 'source_dir')
  if st[1] == 'push' or st[2] ~= A.source_dir then return 0 end
end
redis.call('DEL', K.state)
redis.call('HDEL', K.serving, A.name)
redis.call('PUBLISH', K.channel, A.name)
return 1
