"""What a worker may do in Redis: the ACL of ``[redis] worker_username``.

A worker's pool children run user code, and a handler can find the worker's Redis
connection in its process's memory. Connected as the worker user, it can do what a worker
does (take messages, write records, results, metrics, map results) and no more: it cannot
read or write the API keys (nor their webhook secrets), nor write the function store (what
serves, the versions and their bundles: it may read them, to run them). Redis ACLs allow
key patterns only, so every key a worker touches is listed by pattern here, next to the
keyspace index (:mod:`conveyor.db.keyspace`), and a worker test runs under these rules.

:func:`worker_settings` gives a worker process the worker user's credentials in place of
the platform's; :func:`acl_rules` are the rules (``conveyor redis`` creates the user for
local runs; ``conveyor redis --acl`` prints the ``ACL SETUSER`` line for an operator).
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote, urlsplit, urlunsplit

from conveyor.db import keyspace
from conveyor.settings import Settings, all_queues

P = keyspace.PREFIX
# Keys a worker reads and writes (invocations, their messages' copies, webhooks owed, metrics,
# heartbeats, map jobs, batching, idempotency keys whose TTL a result starts).
READ_WRITE = [
    f"{P}:job:*",
    f"{P}:events",
    f"{P}:webhook:*",
    f"{P}:webhooks:*",
    f"{P}:metrics:*",
    f"{P}:recent",
    f"{P}:versions-in-use",
    keyspace.SENT,
    keyspace.SENT_MESSAGES,
    f"{P}:sent-seq:*",
    keyspace.STRANDED,
    keyspace.STRANDED_LOCK,
    f"{P}:worker:*",
    keyspace.WORKERS,
    f"{P}:map:*",
    f"{P}:maps:*",
    f"{P}:map-events",
    f"{P}:batch:*",
    f"{P}:batch-armed:*",
    f"{P}:batch-delayed:*",
    f"{P}:batch-run:*",
    f"{P}:idempotency:*",
    f"{P}:idempotency-map:*",
    # files: inputs read, outputs written (their records, bytes, holders, expiry)
    f"{P}:file:*",
    f"{P}:file-data:*",
    f"{P}:file-holders:*",
    f"{P}:files:*",
    # streams: a streaming attempt's events, and the channel they are published on
    f"{P}:stream:*",
    keyspace.STREAM_EVENTS_CHANNEL,
    # pipelines: a run's state, which the script ending its step's invocation advances
    keyspace.run("*"),
    # trainings: one whose handler returned waits here for an API process to deploy it
    keyspace.TRAININGS_PENDING,
    # limits: what waits (by function, by API key), deadlines, concurrency slots and
    # parked messages, rate turns
    keyspace.WAITING,
    keyspace.DEADLINES,
    f"{keyspace.KEY_USAGE}*",
    f"{keyspace.SLOTS_PREFIX}*",
    f"{keyspace.PARKED_PREFIX}*",
    keyspace.rate("*"),
    keyspace.rate_parked("*"),
    # kombu's Redis transport
    keyspace.KOMBU_UNACKED,
    keyspace.KOMBU_UNACKED_INDEX,
    "unacked_mutex",
    "_kombu.binding*",  # kombu's exchange bindings (and its permanent ones)
    "*.celery.pidbox*",  # remote control: each worker's mailbox, and the answers it sends
    "",  # the empty name: a script's unused key slots
]
# Keys a worker only reads: the function store.
READ_ONLY = [keyspace.SERVING, keyspace.STORED_FUNCTIONS, f"{P}:function:*", f"{P}:bundle:*"]


def acl_rules(settings: Settings) -> list[str]:
    """The worker user's rules, after its name in ``ACL SETUSER`` (the password as its
    SHA-256: the rules can be shown and logged)."""
    redis = settings.redis
    secret = hashlib.sha256(redis.worker_password.encode()).hexdigest()
    lists = [q for queue in all_queues(settings) for q in keyspace.queue_lists(queue)]
    return [
        "reset",
        "on",
        f"#{secret}",
        *(f"~{pattern}" for pattern in [*READ_WRITE, *lists]),
        *(f"%R~{pattern}" for pattern in READ_ONLY),
        "&*",  # pub/sub: results, map events, Celery's events and remote control
        "+@all",
        "-@dangerous",
        "+info",  # kombu and Celery ask what the server is
        "+client|setname",
        "+client|id",
    ]


def worker_settings(settings: Settings) -> Settings:
    """``settings`` as a worker process uses them: connected as the worker user, where one
    is configured (the platform's own Redis password dropped from them)."""
    redis = settings.redis
    if not redis.worker_username:
        return settings
    url = with_credentials(redis.url, redis.worker_username, redis.worker_password)
    return settings.model_copy(
        update={
            "redis": redis.model_copy(
                update={
                    "url": url,
                    "username": redis.worker_username,
                    "password": redis.worker_password,
                }
            )
        }
    )


def with_credentials(url: str, username: str, password: str) -> str:
    """``url`` with its credentials replaced by these."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return url  # a socket path: credentials go as query parameters, left to the operator
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
