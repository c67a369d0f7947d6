-- Fragment (store/collect): a version collected gives its environment back; the last
-- version that used it takes its lock with it, so no worker builds it again.
-- release_environment(lock, users, user)
local function release_environment(lock, users, user)
  redis.call('SREM', users, user)
  if redis.call('SCARD', users) == 0 then redis.call('UNLINK', lock, users) end
end
