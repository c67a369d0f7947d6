-- Feed one more chunk (a window that grew, a retry that came due): chunk ``k`` of ``n``
-- items, its ``message`` (task ``task_id``) queued on ``queue``. Returns 1 if fed.
-- KEYS: job inputs retries chunk queue sent sent_messages sent_sequence
-- ARGV: k n message now task_id
--! include maps/chunks
return feed(K.job, K.inputs, K.retries, K.chunk, K.queue, A.k, A.n, A.message, A.now,
            {hash = K.sent, messages = K.sent_messages, sequence = K.sent_sequence,
             id = A.task_id})
