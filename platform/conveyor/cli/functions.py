"""``conveyor check``, ``ls``, ``invoke`` and ``logs``: the functions, checked here or
called through the API."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from conveyor.cli.http import add_url_option, base_url, ok, request
from conveyor.errors import ConveyorError
from conveyor.settings import Settings


def add_commands(sub: Any) -> None:
    check = sub.add_parser(
        "check", help="validate deploy.toml and every function folder (or the folders named)"
    )
    check.add_argument("paths", nargs="*", metavar="PATH", help="function folders to check")
    check.set_defaults(run=_check)

    ls = sub.add_parser("ls", help="list the functions the API serves")
    add_url_option(ls)
    ls.set_defaults(run=_ls)

    invoke = sub.add_parser("invoke", help="invoke a function through the API")
    invoke.add_argument("name")
    invoke.add_argument("--input", required=True, help="the input, as JSON")
    invoke.add_argument("--wait", type=float, default=30.0, help="seconds to wait (0: don't)")
    invoke.add_argument("--priority", type=int)
    add_url_option(invoke)
    invoke.set_defaults(run=_invoke)

    logs = sub.add_parser("logs", help="what an invocation printed or logged")
    logs.add_argument("function")
    logs.add_argument("id")
    add_url_option(logs)
    logs.set_defaults(run=_logs)


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


def _logs(settings: Settings, args: argparse.Namespace) -> int:
    url = f"{base_url(settings, args)}/functions/{args.function}/results/{args.id}/logs"
    print(ok(request("GET", url, timeout=10))["logs"], end="")
    return 0


def _ls(settings: Settings, args: argparse.Namespace) -> int:
    answer = ok(request("GET", f"{base_url(settings, args)}/functions", timeout=10))
    for fn in answer["functions"]:
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
    response = request(
        "POST",
        f"{base_url(settings, args)}/functions/{args.name}/invoke",
        json=body,
        params=params,
        timeout=(args.wait or 0) + 10,
    )
    result = response.json()
    print(json.dumps(result, indent=2))
    if response.status_code >= 400 or result.get("status") in ("failed", "cancelled"):
        return 1
    return 0
