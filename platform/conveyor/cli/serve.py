"""``conveyor api``, ``worker`` and ``redis``: the platform's own processes."""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Any
from urllib.parse import unquote, urlparse

from conveyor.environment import blank_environ_block, hide_from_user_code
from conveyor.errors import ConveyorError, SettingsError, WorkerOptionsError
from conveyor.functions.manifest import environment_queue
from conveyor.runtime.gpus import parse_gpus
from conveyor.settings import (
    GPU_QUEUE_SUFFIX,
    Settings,
    all_queues,
    gpu_queue,
    is_loopback,
)


def add_commands(sub: Any) -> None:
    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(run=_api)

    worker = sub.add_parser("worker", help="run a worker for some or all queues")
    worker.add_argument("--queues", help="comma-separated; default: every queue in deploy.toml")
    worker.add_argument(
        "--concurrency", type=int, help="pool processes per worker (default: [worker]; 1 on a GPU)"
    )
    worker.add_argument(
        "--gpus",
        help="all, a count (2) or device ids (0,2): one supervised worker per device, with"
        " CUDA_VISIBLE_DEVICES set to it, consuming the GPU variant of --queues",
    )
    worker.add_argument(
        "--cpu-queues", action="store_true", help="with --gpus: consume the CPU queues too"
    )
    worker.add_argument(
        "--autoscale",
        metavar="MIN,MAX",
        help="start and stop worker processes as the queues back up and drain",
    )
    worker.add_argument("--name", help="the worker's name in heartbeats and logs")
    # a worker starts one such process per environment its queues' functions run in
    worker.add_argument("--environment", help=argparse.SUPPRESS)
    # ... on the first message for it, stopped when idle (a supervisor's, with --autoscale)
    worker.add_argument("--environments-on-demand", action="store_true", help=argparse.SUPPRESS)
    worker.set_defaults(run=_worker)

    redis = sub.add_parser("redis", help="run redis-server on deploy.toml's port, persistent")
    redis.add_argument(
        "--acl",
        action="store_true",
        help="print the ACL SETUSER command for [redis] worker_username, and exit",
    )
    redis.set_defaults(run=_redis)


def _api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from conveyor.api.app import create_app

    host = args.host or settings.api.host
    if settings.api.auth == "none" and not is_loopback(host):
        # As Redis's protected mode: no open API on a network without a decision.
        raise SettingsError(
            f'[api] auth = "none" (CONVEYOR_API__AUTH) would let anyone who reaches {host}'
            ' invoke anything: set [api] auth = "keys" and create a key (conveyor keys create'
            " --name admin --scope admin), or listen on 127.0.0.1 ([api] host)"
        )
    blank_environ_block(settings.worker.hidden_env)  # its inspector's user code reads /proc too
    options: dict[str, Any] = {
        "host": host,
        "port": args.port or settings.api.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,  # per-response work nobody reads
        "date_header": False,
        "timeout_graceful_shutdown": 5,
    }
    if settings.api.workers == 1:
        uvicorn.run(create_app(settings), **options)
    else:  # each process builds its own app; what serves and every wait go through Redis
        app = "conveyor.api.app:app_from_environment"
        uvicorn.run(app, factory=True, workers=settings.api.workers, **options)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from conveyor.db.acl import worker_settings

    settings = worker_settings(settings)  # the worker user's rights, where one is set
    devices = parse_gpus(args.gpus) if args.gpus else None
    queues = worker_queues(settings, args.queues, devices is not None, args.cpu_queues)
    concurrency = args.concurrency or (1 if devices else settings.worker.concurrency)
    if concurrency < 1:
        raise WorkerOptionsError("--concurrency must be at least 1")
    if devices is not None or args.autoscale:
        if args.name:
            raise WorkerOptionsError("--name names one worker; not with --gpus or --autoscale")
        from conveyor.worker.supervisor import Supervisor, parse_autoscale

        scale = parse_autoscale(args.autoscale, devices) if args.autoscale else None
        blank_environ_block(settings.worker.hidden_env)  # its workers get them, not /proc
        return Supervisor(settings, queues, concurrency, devices, scale).run()

    from conveyor.worker.process import WorkerProcess

    environ = dict(os.environ)  # an environment's process is started with what we were
    if args.environment:
        from conveyor.worker.supervisor import die_with_parent

        die_with_parent()
        queues = [environment_queue(q, args.environment) for q in queues]
    hide_from_user_code(settings.worker.hidden_env)  # before the pool forks its children
    WorkerProcess(
        settings,
        queues,
        concurrency,
        args.name,
        environment=args.environment,
        environ=environ,
        environments_on_demand=args.environments_on_demand,
    ).run()
    return 0


def worker_queues(settings: Settings, spec: str | None, gpu: bool, cpu_too: bool) -> list[str]:
    """The queues a worker consumes: ``--queues`` (default all), as GPU variants with
    ``--gpus``, plus the queues themselves with ``--cpu-queues``."""
    if cpu_too and not gpu:
        raise WorkerOptionsError("--cpu-queues goes with --gpus")
    names = [q.strip() for q in (spec or ",".join(settings.queues)).split(",") if q.strip()]
    unknown = [q for q in names if q not in all_queues(settings)]
    if unknown or not names:
        raise WorkerOptionsError(
            f"--queues: unknown {unknown or spec!r}; deploy.toml has: {', '.join(settings.queues)}"
            f" (and their GPU variants, {gpu_queue('<name>')})"
        )
    if not gpu:
        return names
    cpu = [q.removesuffix(GPU_QUEUE_SUFFIX) for q in names]
    return [gpu_queue(q) for q in cpu] + (cpu if cpu_too else [])


def _redis(settings: Settings, args: argparse.Namespace) -> int:
    from conveyor.db.acl import acl_rules

    worker_user = settings.redis.worker_username
    if args.acl:
        if not worker_user:
            raise ConveyorError("set [redis] worker_username and worker_password first")
        print(f"ACL SETUSER {worker_user} {' '.join(acl_rules(settings))}")
        return 0
    if settings.redis.sentinels:
        raise ConveyorError(
            "[redis] sentinels is set: the platform uses the primary they name, and"
            " `conveyor redis` runs one local Redis; start primary, replica and sentinels"
            " yourself (`make run-ha` does so on this machine)"
        )
    url = urlparse(settings.redis.url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ConveyorError(
            f"redis.url points at {url.hostname}; `conveyor redis` runs a local one"
        )
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConveyorError("redis-server is not installed; `make run` installs it")
    settings.redis.data_dir.mkdir(parents=True, exist_ok=True)
    access = []
    if url.password:  # the platform's own connections need it: so does everyone else
        access += ["--requirepass", unquote(url.password)]
    if worker_user:
        access += ["--user", " ".join([worker_user, *acl_rules(settings)])]
    # appendonly: every accepted invocation survives a Redis restart (fsync each second);
    # noeviction: Redis refuses writes when full rather than dropping queued work.
    os.execv(
        binary,
        [
            binary,
            "--port",
            str(url.port or 6379),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(settings.redis.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
            "--protected-mode",
            "yes",
            *access,
        ],
    )
