-- The heartbeats of live workers: each name in ``names`` whose heartbeat key (``prefix`` ..
-- name) still exists; a name whose heartbeat expired is removed from the set.
-- KEYS: names
-- ARGV: prefix
local live = {}
for _, name in ipairs(redis.call('SMEMBERS', K.names)) do
  local beat = redis.call('GET', A.prefix .. name)
  if beat then table.insert(live, beat) else redis.call('SREM', K.names, name) end
end
return live
