-- Places for up to ``size`` items that run together under their function's [limits]
-- concurrency and rate, where each item counts: a batch's items (worker/batches) or a map
-- job chunk's next group (worker/chunks). Returns {places, turn}: places 0 means not now,
-- ``turn`` then the time the rate's next turn comes ('' when slots are what is missing).
-- Concurrency (``slots``, ``parked``: '' without): as many places as there are free slots,
-- up to ``size``, each held by a placeholder "<token>:<i>" until ``lease_end``; those
-- already held under ``token`` (the holder's own, taken again with each group, or an
-- earlier holder's that is gone) are let go first, and moved on to what waits when it is
-- refused; settle_places ends them.
-- Rate (``rate_key``, ``rate_parked``: '' without): it starts when its function's turn has
-- come and takes a turn for each place, so the next start waits as many turns; a holder
-- woken late (an API process moves a parked message back within ``slack`` seconds of its
-- turn) counts its turns from its turn, not from when it woke, so the lateness does not
-- add up: the starts in any window stay within the rate's, plus one group and ``slack``
-- (at most a group's turns). After an idle second its turns count from now.
-- With ``park_message`` (not ''), a refused holder's message is parked until it may run,
-- as an invocation's is (invocations/slots, invocations/rate), and its ``armed`` flag set
-- (for ``armed_ttl``) so that submits queue no other trigger meanwhile.
-- KEYS: slots parked rate_key rate_parked armed
-- ARGV: now lease_end concurrency emission size token park_list park_message armed_ttl slack
local now = tonumber(A.now)
local room = tonumber(A.size)
local entry = A.park_list .. ' ' .. A.park_message

--! include invocations/slots
--! include invocations/rate
local mine = 0  -- places this holder held until now (a chunk's, from one item to the next)

local function refuse(turn)
  if mine > 0 then unpark(K.parked, mine) end  -- let go: what waits for them moves on
  if A.park_message ~= '' then
    if turn == '' then
      redis.call('RPUSH', K.parked, entry)
    else
      redis.call('ZADD', K.rate_parked, turn, entry)
    end
    redis.call('SET', K.armed, '1', 'EX', A.armed_ttl)
  end
  return {0, turn}
end

if K.slots ~= '' then
  for i = 1, room do mine = mine + redis.call('ZREM', K.slots, A.token .. ':' .. i) end
  redis.call('ZREMRANGEBYSCORE', K.slots, '-inf', now)
  local free = tonumber(A.concurrency) - redis.call('ZCARD', K.slots)
  if free <= 0 then return refuse('') end
  if free < room then room = free end
end
if K.rate_key ~= '' then
  local kept = redis.call('GET', K.rate_key)  -- kept a second past its turn
  local tat = tonumber(kept or '0')
  if tat > now + 0.005 then return refuse(string.format('%.6f', tat)) end
  local emission = tonumber(A.emission)
  local earliest = now
  if kept then earliest = now - math.min(tonumber(A.slack), room * emission) end
  if tat < earliest then tat = earliest end
  local after = tat + room * emission
  set_arrival(K.rate_key, after, now)
end
if K.slots ~= '' then
  for i = 1, room do redis.call('ZADD', K.slots, A.lease_end, A.token .. ':' .. i) end
end
return {room, ''}
