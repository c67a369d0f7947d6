"""The Celery app factory and the broker-facing constants (task name, priority mapping).

Other packages hold the app (:data:`BrokerApp`) and hand it back to this package; only
``broker/`` and ``worker/`` call Celery or kombu themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from conveyor.broker import transport
from conveyor.db import keyspace
from conveyor.db.connections import broker_transport_options, broker_url
from conveyor.settings import Settings, all_queues

BrokerApp = Celery  # what the API's and the worker's sides hold, and pass back here
transport.register()  # redis:// and sentinel:// URLs use our transports (see its module)

TASK_NAME = "conveyor.run"
BATCH_TASK_NAME = "conveyor.batch"
MAP_TASK_NAME = "conveyor.map"
HIGHEST_PRIORITY = 9


def broker_priority(priority: int) -> int:
    """Our 0..9 (9 = most urgent) as kombu's Redis priority (0 is consumed first)."""
    return HIGHEST_PRIORITY - priority


def transport_options(settings: Settings, visibility_timeout: float | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "priority_steps": keyspace.PRIORITY_STEPS,
        "sep": keyspace.PRIORITY_SEP,
        "socket_connect_timeout": settings.redis.connect_timeout,
        "socket_timeout": settings.redis.socket_timeout,
        # Sweep for messages of dead workers every restore_interval seconds, not every 100.
        "unacked_restore_interval": settings.worker.restore_interval,
        "unacked_restore_throttle": 1,
    }
    if visibility_timeout is not None:
        options["visibility_timeout"] = visibility_timeout
    return {**options, **broker_transport_options(settings)}


def create_celery(
    settings: Settings, *, visibility_timeout: float | None = None, queues: Sequence[str] = ()
) -> Celery:
    """A Celery app for ``settings``: JSON only, late acks, one message per free process;
    ``queues``: a worker's, an environment's variants among them (``<queue>.env-<id>``)."""
    names = list(dict.fromkeys([*all_queues(settings), *queues]))
    app = Celery("conveyor", broker=broker_url(settings), set_as_current=False)
    app.conf.update(
        broker_transport_options=transport_options(settings, visibility_timeout),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_pool_limit=10,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_acks_on_failure_or_timeout=True,
        task_reject_on_worker_lost=True,
        task_queues=[Queue(q, Exchange(q), routing_key=q) for q in names],
        task_default_queue=next(iter(settings.queues)),
        task_create_missing_queues=False,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_proc_alive_timeout=settings.worker.start_timeout,
        # Results go to Redis from the child itself, not through the pool's pipe, so
        # there is nothing to wait for before declaring a dead child's job lost.
        worker_lost_wait=1.0,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_enable_remote_control=True,
        task_send_sent_event=False,
    )
    return app


def kill_now(app: Celery, task_ids: list[str]) -> None:
    """:func:`kill`, from a worker: the running steps a pipeline's failed step cancelled."""
    app.control.revoke(task_ids, terminate=True, signal="SIGKILL")


async def kill(app: Celery, task_id: str) -> None:
    """Stop a running task by killing its pool process: the only way to stop arbitrary
    user code (a cancelled invocation, a map job's chunk)."""
    await asyncio.to_thread(app.control.revoke, task_id, terminate=True, signal="SIGKILL")
