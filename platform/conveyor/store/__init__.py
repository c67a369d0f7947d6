"""The function store: every good version of every function, by digest, in Redis.

``bundle.py`` packs a folder into one archive and unpacks one safely; ``cache.py`` keeps
the versions a worker machine has unpacked; ``served.py`` is an API process's view of what
serves; ``deployer.py`` turns folder changes and pushes into deploys, rollbacks and
collection. Redis itself is reached only through :mod:`conveyor.store.db`.
"""
