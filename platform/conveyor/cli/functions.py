"""``conveyor check``, ``ls``, ``invoke``, ``train`` and ``logs``: the functions, checked
here or called through the API."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import mimetypes
import sys
import time
from pathlib import Path
from typing import Any

from conveyor.cli.http import add_url_option, api_headers, base_url, ok, request
from conveyor.cli.streams import follow
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
    invoke.add_argument("--input", default="{}", help="the input, as JSON (default {})")
    invoke.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="FIELD=PATH",
        help="upload PATH and put it in the input's FIELD (photo, or photos.0); repeatable",
    )
    invoke.add_argument(
        "--download", metavar="DIR", type=Path, help="save the output's files into DIR"
    )
    invoke.add_argument("--wait", type=float, default=30.0, help="seconds to wait (0: don't)")
    invoke.add_argument(
        "--stream",
        action="store_true",
        help="print a streaming function's chunks as they come (text inline), the lines it"
        " prints and its status on stderr",
    )
    invoke.add_argument("--priority", type=int)
    add_url_option(invoke)
    invoke.set_defaults(run=_invoke)

    train = sub.add_parser(
        "train", help="start a training of a function (its [training]): a new version"
    )
    train.add_argument("name")
    train.add_argument("--input", default="{}", help="the training's input, as JSON (default {})")
    train.add_argument(
        "--promote", action="store_true", help="serve the new version at once (else retained)"
    )
    train.add_argument(
        "--wait", type=float, default=600.0, help="seconds to wait for it to end (0: don't)"
    )
    add_url_option(train)
    train.set_defaults(run=_train)

    logs = sub.add_parser("logs", help="what an invocation printed or logged")
    logs.add_argument("function")
    logs.add_argument("id")
    add_url_option(logs)
    logs.set_defaults(run=_logs)


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from conveyor.environments.deploying import Preparer
    from conveyor.functions.catalog import Catalog
    from conveyor.functions.inspector import Inspector, Limits
    from conveyor.functions.registry import Registry
    from conveyor.pipelines.checks import PipelineInspector, registry_lookup
    from conveyor.schedules.checks import ScheduleInspector
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
    # a pipeline is checked against the functions checked with it
    # a folder with requirements is resolved and built here, as the API would
    environments = Preparer(settings.store.cache_dir, settings.store.uv_cache_dir)
    inspector = PipelineInspector(
        Inspector(limits, environments.interpreter), registry_lookup(registry)
    )
    catalog = Catalog(registry, ScheduleInspector(inspector), environments=environments)

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
                check_size(entry.name, folder_sizes(entry.path), settings.bundle_limit)
            except ConveyorError as exc:
                error = str(exc)
        if error is not None:
            failed = True
            print(f"  ERROR {entry.name}: {error}")
        else:
            assert entry.spec is not None
            manifest = entry.spec.manifest
            where = f"queue={manifest.queue.name}"
            if manifest.environment_id is not None:
                where += f" environment={manifest.environment_id}"
            if manifest.steps is not None:
                where = "steps=" + ",".join(f"{s.name}:{s.function}" for s in manifest.steps)
            print(f"  ok    {entry.name} {entry.spec.version} {where}")
    return 1 if failed else 0


def _logs(settings: Settings, args: argparse.Namespace) -> int:
    url = f"{base_url(settings, args)}/functions/{args.function}/results/{args.id}/logs"
    print(ok(request("GET", url, timeout=10))["logs"], end="")
    return 0


def _ls(settings: Settings, args: argparse.Namespace) -> int:
    answer = ok(request("GET", f"{base_url(settings, args)}/functions", timeout=10))
    for fn in answer["functions"]:
        line = f"{fn['name']:<24} {fn['status']:<6} {fn.get('version') or '-':<13}"
        if "steps" in fn:  # a pipeline
            line += " steps=" + ",".join(f"{s['name']}:{s['function']}" for s in fn["steps"])
        else:
            line += f" queue={fn.get('queue', '-')} priority={fn.get('priority', '-')}"
            line += f" gpu={fn.get('gpu', '-')} workers={fn.get('workers', '-')}"
            line += f" environment={fn['environment']}" if fn.get("environment") else ""
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
    for given in args.file:
        field, eq, path = given.partition("=")
        if not eq or not field or not path:
            raise ConveyorError(f"--file takes FIELD=PATH (photo=cat.jpg); got {given!r}")
        value = _place(value, field, _upload(settings, args, Path(path)))
    body: dict[str, Any] = {"input": value}
    if args.priority is not None:
        body["priority"] = args.priority
    # a pipeline's run is followed on its stream: each step shown as it starts and ends
    described = request("GET", f"{base_url(settings, args)}/functions/{args.name}")
    pipeline = described.status_code == 200 and "steps" in described.json()
    params = {"wait": args.wait} if args.wait and not args.stream and not pipeline else {}
    response = request(
        "POST",
        f"{base_url(settings, args)}/functions/{args.name}/invoke",
        json=body,
        params=params,
        timeout=(args.wait or 0) + 10,
    )
    result = response.json()
    if args.stream and "stream_url" in result:
        result = follow(f"{base_url(settings, args)}{result['stream_url']}")
    elif pipeline and response.status_code == 202:
        result = follow(f"{base_url(settings, args)}{result['stream_url']}", quiet=True)
        print(json.dumps(result, indent=2))
    else:
        if args.stream and response.status_code == 202:
            print(f"conveyor: {args.name} does not stream; its result:", file=sys.stderr)
            url = f"{base_url(settings, args)}{result['result_url']}"
            waited = request("GET", url, params={"wait": args.wait}, timeout=args.wait + 10)
            result = ok(waited)
        print(json.dumps(result, indent=2))
    if response.status_code >= 400 or result.get("status") in ("failed", "cancelled"):
        return 1
    if args.download is not None:
        for listed in result.get("files", []):
            print(f"saved {_download(listed, args.download)}")
    return 0


def _train(settings: Settings, args: argparse.Namespace) -> int:
    try:
        value = json.loads(args.input)
    except json.JSONDecodeError as exc:
        raise ConveyorError(f"--input is not valid JSON: {exc}") from None
    base = base_url(settings, args)
    body = {"input": value, "promote": args.promote}
    result = ok(request("POST", f"{base}/functions/{args.name}/trainings", json=body))
    deadline = time.monotonic() + args.wait
    # the API waits at most [api] max_wait per request (60 s by default): ask again
    while result["status"] not in FINAL and (left := deadline - time.monotonic()) > 0:
        print(f"conveyor: {result['status']}{_progress(result)}", file=sys.stderr)
        seconds = min(left, 30.0)
        url = f"{base}{result['result_url']}"
        result = ok(request("GET", url, params={"wait": seconds}, timeout=seconds + 10))
    print(json.dumps(result, indent=2))
    return 1 if result["status"] in ("failed", "cancelled", "expired") else 0


FINAL = ("succeeded", "failed", "cancelled", "expired")


def _progress(result: dict[str, Any]) -> str:
    progress = result.get("progress")
    return f": {progress['message']}" if progress and progress.get("message") else ""


def _upload(settings: Settings, args: argparse.Namespace, path: Path) -> str:
    """``POST /files`` with the file streamed from disk: its URL."""
    if not path.is_file():
        raise ConveyorError(f"--file: {path} is not a file")
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    with path.open("rb") as source:
        made = ok(
            request(
                "POST",
                f"{base_url(settings, args)}/files",
                content=source,
                params={"filename": path.name},
                headers={"Content-Type": media},
                timeout=600,
            )
        )
    return str(made["url"])


def _place(value: Any, field: str, url: str) -> Any:
    """``value`` with ``url`` at the dotted ``field`` (objects made on the way)."""
    parts: list[Any] = [int(p) if p.isdigit() else p for p in field.split(".")]
    if not isinstance(value, dict) and not isinstance(parts[0], int):
        raise ConveyorError(f"--file {field}=...: the input is not an object")
    node = value
    for part, following in itertools.pairwise(parts):
        if isinstance(node, dict) and part not in node:
            node[part] = [] if isinstance(following, int) else {}
        node = node[part]
    if isinstance(node, list) and parts[-1] == len(node):
        node.append(url)
    else:
        node[parts[-1]] = url
    return value


def _download(listed: dict[str, Any], folder: Path) -> Path:
    """Save one of a result's files into ``folder``, streamed: its path."""
    import httpx  # only the client commands need it

    folder.mkdir(parents=True, exist_ok=True)
    name = Path(listed.get("filename") or listed["id"]).name
    target = folder / name
    with httpx.stream("GET", listed["url"], headers=api_headers(), timeout=600) as response:
        if response.status_code != 200:
            raise ConveyorError(f"reading {listed['url']} answered {response.status_code}")
        with target.open("wb") as out:
            for piece in response.iter_bytes(1024 * 1024):
                out.write(piece)
    return target
