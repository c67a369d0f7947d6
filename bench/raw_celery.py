"""The baseline: what a user writes by hand with Celery, on the same Redis and pool.

Run as ``celery -A raw_celery worker``; ``BENCH_REDIS_URL`` names the broker and backend.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

app = Celery(
    "raw",
    broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    worker_hijack_root_logger=False,
    task_default_queue="raw",
)


@app.task(name="raw.echo")
def echo(payload: Any) -> Any:
    return payload


@app.task(name="raw.hash_key")
def hash_key(key: str) -> str:
    """A file passed by hand: the client SET its bytes in Redis, the task GETs them."""
    import hashlib

    import redis

    client = redis.Redis.from_url(app.conf.broker_url)
    return hashlib.sha256(client.get(key) or b"").hexdigest()


@app.task(name="raw.sleep")
def sleep(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds
