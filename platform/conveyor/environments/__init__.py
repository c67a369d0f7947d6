"""Functions' own Python environments (``[environment]`` or a ``requirements.txt``).

- :mod:`~conveyor.environments.requirements`: the folder's requirement lines, checked
  (names and versions from the machine's package index only: no options, URLs or paths).
- :mod:`~conveyor.environments.resolve`: at deploy, the lines resolved with ``uv pip
  compile`` against the worker runtime's own pins (what a worker imports, as installed)
  into a lock of exact versions and hashes; the lock's digest is the environment's id.
- :mod:`~conveyor.environments.build`: a lock built into a virtual environment once per
  machine (``<[store] cache_dir>/.environments/<id>``, a file lock so concurrent
  processes build it once), from uv's cache under the same folder (hard links).
- :mod:`~conveyor.environments.db`: the Redis half: each lock by its id, so a worker with
  no functions folder builds from it; collected with the last version that uses it.
"""
