"""Schedules: ``[[schedules]]`` in ``function.toml``, each tick fired once.

:mod:`.timing` says when a schedule ticks (cron with a time zone, or every period, on
multiples of it since the epoch, so every process agrees); :mod:`.db` is the Redis half:
each schedule's last fired tick and its last runs, changed by ``lua/fired.lua`` only
forward. Any number of API processes run the loop (``api/schedules.py``): each submits a
due tick with the tick as its Idempotency-Key, so one invocation exists whoever submits,
and the last fired tick keeps a restarted process from firing it again.
"""
