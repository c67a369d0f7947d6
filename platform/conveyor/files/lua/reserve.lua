-- Bytes about to be written to a file, counted against its API key's quota first: with
-- ``quota`` '' (no quota) they are only counted. Over the quota nothing is counted and the
-- answer is the bytes the key holds; else the file's record keeps how many it reserved and
-- on which ``usage`` counter (files/remove gives them back), and the answer is -1.
-- KEYS: file usage
-- ARGV: bytes quota
local bytes = tonumber(A.bytes)
local held = tonumber(redis.call('GET', K.usage) or '0')
if A.quota ~= '' and held + bytes > tonumber(A.quota) then return held end
redis.call('INCRBY', K.usage, bytes)
redis.call('HSET', K.file, 'usage', K.usage)
redis.call('HINCRBY', K.file, 'reserved', bytes)
return -1
