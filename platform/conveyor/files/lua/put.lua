-- A file's record: being written (``state`` 'writing', due at the end of its write lease,
-- so the sweeper removes an abandoned one) or written whole ('ready', due when it
-- expires). ``fields``: name/value pairs.
-- KEYS: file expiry
-- ARGV: id state expires_at ...fields
redis.call('HSET', K.file, 'id', A.id, 'state', A.state, 'expires_at', A.expires_at,
  unpack(ARGV, A_REST))
redis.call('ZADD', K.expiry, A.expires_at, A.id)
return 1
