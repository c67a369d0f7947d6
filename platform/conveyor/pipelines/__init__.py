"""Pipelines: functions made of functions, declared by ``[[steps]]`` in ``function.toml``.

:mod:`.steps` reads the steps (selectors, input templates) and checks them against the
functions they name at deploy time; :mod:`.plan` freezes a run's steps (each function's
serving version, its route and message) when the run is accepted; :mod:`.db` is the Redis
half: a run's state and the ``run`` script; ``lua/advance`` (a fragment in the invocation
scripts) advances a run in the step that ends its step's last invocation.
"""
