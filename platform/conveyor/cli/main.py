"""``conveyor``: api, worker, redis, check, ls, invoke, logs; and (admin_cli.py) keys,
webhooks, flower; (map_cli.py, map_client.py) map; (store_cli.py) deploy, versions,
rollback, unpin, rm. Client-only libraries (httpx, tqdm) are imported when a client
command runs, never by ``conveyor worker`` or ``conveyor api``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from conveyor.cli.admin import add_admin_commands
from conveyor.cli.maps import add_map_command
from conveyor.cli.store import add_store_commands
from conveyor.environment import blank_environ_block, hide_from_user_code
from conveyor.errors import ConveyorError, SettingsError, WorkerOptionsError
from conveyor.log import configure_logging
from conveyor.runtime.gpus import parse_gpus
from conveyor.settings import (
    GPU_QUEUE_SUFFIX,
    Settings,
    all_queues,
    get_settings,
    gpu_queue,
    is_loopback,
)

if TYPE_CHECKING:
    import httpx

API_KEY_ENV = "CONVEYOR_API_KEY"  # sent by ls and invoke as Authorization: Bearer <key>


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
        configure_logging(settings.log.level, settings.log.format)
        return int(args.run(settings, args))
    except ConveyorError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conveyor", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="command")

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
    worker.set_defaults(run=_worker)

    redis = sub.add_parser("redis", help="run redis-server on deploy.toml's port, persistent")
    redis.add_argument(
        "--acl",
        action="store_true",
        help="print the ACL SETUSER command for [redis] worker_username, and exit",
    )
    redis.set_defaults(run=_redis)

    logs = sub.add_parser("logs", help="what an invocation printed or logged")
    logs.add_argument("function")
    logs.add_argument("id")
    logs.add_argument("--url", help="API base URL (default: from deploy.toml)")
    logs.set_defaults(run=_logs)

    add_admin_commands(sub)
    add_map_command(sub, _base_url, _api_headers)
    add_store_commands(sub, _base_url, _request)

    check = sub.add_parser(
        "check", help="validate deploy.toml and every function folder (or the folders named)"
    )
    check.add_argument("paths", nargs="*", metavar="PATH", help="function folders to check")
    check.set_defaults(run=_check)

    ls = sub.add_parser("ls", help="list the functions the API serves")
    ls.add_argument("--url", help="API base URL (default: from deploy.toml)")
    ls.set_defaults(run=_ls)

    invoke = sub.add_parser("invoke", help="invoke a function through the API")
    invoke.add_argument("name")
    invoke.add_argument("--input", required=True, help="the input, as JSON")
    invoke.add_argument("--wait", type=float, default=30.0, help="seconds to wait (0: don't)")
    invoke.add_argument("--priority", type=int)
    invoke.add_argument("--url", help="API base URL (default: from deploy.toml)")
    invoke.set_defaults(run=_invoke)
    return parser


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
    queues = _worker_queues(settings, args.queues, devices is not None, args.cpu_queues)
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

    hide_from_user_code(settings.worker.hidden_env)  # before the pool forks its children
    WorkerProcess(settings, queues, concurrency, args.name).run()
    return 0


def _worker_queues(settings: Settings, spec: str | None, gpu: bool, cpu_too: bool) -> list[str]:
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


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from conveyor.functions.catalog import Catalog
    from conveyor.functions.inspector import Inspector, Limits
    from conveyor.functions.registry import Registry
    from conveyor.store.bundle import check_size, folder_sizes

    # The same checks the API makes: each folder imported in an inspector subprocess, and
    # its files within what the function store takes.
    paths = [Path(p) for p in args.paths]
    folders = {path.resolve().name: path for path in paths} if paths else None
    missing = [str(path) for path in paths if not path.is_dir()]
    if missing:
        raise ConveyorError(f"not a folder: {', '.join(missing)}")
    registry = Registry(settings.functions.dir, settings.queues, folders)
    limits = Limits.of(settings)
    catalog = Catalog(registry, Inspector(limits))

    async def load() -> None:
        await catalog.refresh()
        await catalog.settled()

    asyncio.run(load())
    entries = registry.entries()
    where = "folders given" if paths else f"functions in {settings.functions.dir}"
    print(f"settings ok; {where}: {len(entries)}")
    failed = False
    for entry in entries:
        error = entry.error
        if error is None and entry.path is not None:
            try:
                check_size(entry.name, folder_sizes(entry.path), settings.store.max_bundle_bytes)
            except ConveyorError as exc:
                error = str(exc)
        if error is not None:
            failed = True
            print(f"  ERROR {entry.name}: {error}")
        else:
            assert entry.spec is not None
            print(
                f"  ok    {entry.name} {entry.spec.version} queue={entry.spec.manifest.queue.name}"
            )
    return 1 if failed else 0


def _base_url(settings: Settings, args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    host = settings.api.host if settings.api.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.api.port}"


def _api_headers() -> dict[str, str]:
    key = os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    import httpx  # only the client commands need it: not imported by worker or api

    kwargs["headers"] = {**kwargs.get("headers", {}), **_api_headers()}
    try:
        return httpx.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise ConveyorError(
            f"cannot reach the API at {url}: {exc}; is `conveyor api` running?"
        ) from None


def _logs(settings: Settings, args: argparse.Namespace) -> int:
    url = f"{_base_url(settings, args)}/functions/{args.function}/results/{args.id}/logs"
    response = _request("GET", url, timeout=10)
    if response.status_code >= 400:
        raise ConveyorError(f"the API answered {response.status_code}: {response.text}")
    print(response.json()["logs"], end="")
    return 0


def _ls(settings: Settings, args: argparse.Namespace) -> int:
    response = _request("GET", f"{_base_url(settings, args)}/functions", timeout=10)
    if response.status_code >= 400:
        raise ConveyorError(f"the API answered {response.status_code}: {response.text}")
    for fn in response.json()["functions"]:
        line = f"{fn['name']:<24} {fn['status']:<6} {fn.get('version') or '-':<13}"
        line += f" queue={fn.get('queue', '-')} priority={fn.get('priority', '-')}"
        line += f" gpu={fn.get('gpu', '-')} workers={fn.get('workers', '-')}"
        line += " (autoscaled)" if fn.get("autoscaled") else ""
        line += " (pinned)" if fn.get("pinned") else ""
        notes = [fn[key] for key in ("error", "warning") if fn.get(key)]
        print("\n    ".join([line, *notes]))
    return 0


def _invoke(settings: Settings, args: argparse.Namespace) -> int:
    try:
        value = json.loads(args.input)
    except json.JSONDecodeError as exc:
        raise ConveyorError(f"--input is not valid JSON: {exc}") from None
    body: dict[str, Any] = {"input": value}
    if args.priority is not None:
        body["priority"] = args.priority
    params = {"wait": args.wait} if args.wait else {}
    response = _request(
        "POST",
        f"{_base_url(settings, args)}/functions/{args.name}/invoke",
        json=body,
        params=params,
        timeout=(args.wait or 0) + 10,
    )
    result = response.json()
    print(json.dumps(result, indent=2))
    if response.status_code >= 400 or result.get("status") in ("failed", "cancelled"):
        return 1
    return 0
