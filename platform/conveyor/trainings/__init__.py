"""Trainings: a run of a function's ``[training]`` handler that makes a new version of it.

A training is an invocation record (``training`` set, the promote flag with it) whose
message names the training handler (``conveyor.run`` with ``training``), so waiting,
cancelling, logs, progress, retries, checkpoints and webhooks are an invocation's.
:mod:`.versions` runs in the pool child when the handler returns: the version it started
from plus the files it wrote into ``ctx.output_dir`` are packed, inspected like any deploy
and stored with ``source: "training"``, serving at once with ``promote`` or retained.
:mod:`.db` is the Redis half: each function's trainings, newest first.
"""
