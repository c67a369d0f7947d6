-- How many items a batching function's next batch may take under [limits] concurrency
-- and rate, where a batch counts as its items. Returns that number; 0: not now, and the
-- drain trigger (``park_list`` ``park_message``) is parked until it may run, with its
-- function's ``armed`` flag set (for ``armed_ttl``) so that submits queue no others.
-- Concurrency (``slots``, ``parked``: '' without): as many as there are free slots, up to
-- ``size``, each held by a placeholder "<token>:<i>" until ``lease_end``, until the batch
-- settles (batch_settle); none free: the trigger is parked as an invocation's message is
-- (invocations/slots), and a slot let go moves it back to its queue.
-- Rate (``rate_key``, ``rate_parked``: '' without): the batch starts when its function's
-- turn has come and takes a turn for each item it may hold (``emission`` each), so the
-- next batch waits as many turns as this one has items; before its turn the trigger is
-- parked until then (invocations/rate). A trigger woken late (an API process moves it
-- back within ``slack`` seconds of its turn) counts its turns from its turn, not from when
-- it woke, so the lateness does not add up batch after batch: the starts in any window
-- stay within the rate's, plus one batch and ``slack`` (at most a batch's turns).
-- KEYS: slots parked rate_key rate_parked armed
-- ARGV: now lease_end concurrency emission size token park_list park_message armed_ttl slack
local now = tonumber(A.now)
local room = tonumber(A.size)
local entry = A.park_list .. ' ' .. A.park_message
if K.slots ~= '' then
  redis.call('ZREMRANGEBYSCORE', K.slots, '-inf', now)
  local free = tonumber(A.concurrency) - redis.call('ZCARD', K.slots)
  if free <= 0 then
    redis.call('RPUSH', K.parked, entry)
    redis.call('SET', K.armed, '1', 'EX', A.armed_ttl)
    return 0
  end
  if free < room then room = free end
end
if K.rate_key ~= '' then
  local tat = tonumber(redis.call('GET', K.rate_key) or '0')
  if tat > now + 0.005 then
    redis.call('ZADD', K.rate_parked, tat, entry)
    redis.call('SET', K.armed, '1', 'EX', A.armed_ttl)
    return 0
  end
  local emission = tonumber(A.emission)
  local earliest = now - math.min(tonumber(A.slack), room * emission)
  if tat < earliest then tat = earliest end
  local after = tat + room * emission
  redis.call('SET', K.rate_key, string.format('%.6f', after), 'PX',
             math.ceil((after - now) * 1000) + 1000)
end
if K.slots ~= '' then
  for i = 1, room do redis.call('ZADD', K.slots, A.lease_end, A.token .. ':' .. i) end
end
return room
