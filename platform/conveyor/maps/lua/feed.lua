-- Feed one more chunk (a window that grew, a retry that came due): chunk ``k`` of ``n``
-- items, its ``message`` queued on ``queue``. Returns 1 if fed.
-- KEYS: job inputs retries chunk queue
-- ARGV: k n message now
--! include maps/chunks
return feed(K.job, K.inputs, K.retries, K.chunk, K.queue, A.k, A.n, A.message, A.now)
