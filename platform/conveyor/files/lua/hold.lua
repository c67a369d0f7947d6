-- Fragment: hold(holders, holder) records ``holder`` (``job:<id>``, ``map:<id>``) in each
-- of the files' ``holders`` sets: the sweeper keeps those files until it has ended.
-- Called by the script that makes the holder exist, so neither is without the other.
local function hold(holders, holder)
  for _, set in ipairs(holders) do redis.call('SADD', set, holder) end
end
