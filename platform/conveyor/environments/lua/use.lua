-- A version deployed in an environment: its lock kept (once, by id), the version counted
-- among its users.
-- KEYS: lock users
-- ARGV: text user
redis.call('SET', K.lock, A.text, 'NX')
redis.call('SADD', K.users, A.user)
return 1
