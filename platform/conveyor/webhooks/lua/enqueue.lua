-- Fragment: webhook(event, record, id, job, delivery, due, wake) stores a delivery in the
-- same script that makes its event happen (so a result is never stored without the
-- delivery it owes): if the record asked for ``event``, a delivery hash holding the record
-- as it is, due now, and a wake-up for the deliverer. hash_table(key): a hash as a Lua
-- table (the record a delivery holds).
--! include db/decode
local function hash_table(key)
  local flat = redis.call('HGETALL', key)
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  return record
end
local function webhook(event, record, id, job, delivery, due, wake)
  if not record.webhook then return end
  local hook = decoded(record.webhook, nil)
  if type(hook) ~= 'table' or type(hook.events) ~= 'table' then return end
  for _, wanted in ipairs(hook.events) do
    if wanted == event then
      local now = redis.call('TIME')
      local ts = now[1] + now[2] / 1000000
      redis.call('HSET', delivery, 'id', 'msg_' .. id .. '_' .. event, 'invocation', id,
                 'event', event, 'url', hook.url, 'record', cjson.encode(record),
                 'created_at', tostring(ts), 'attempts', 0)
      redis.call('ZADD', due, ts, delivery)
      redis.call('HSET', job, 'webhook_status', 'pending', 'webhook_attempts', 0)
      redis.call('HDEL', job, 'webhook_error')
      redis.call('LPUSH', wake, 1)
      redis.call('LTRIM', wake, 0, 0)
      return
    end
  end
end
