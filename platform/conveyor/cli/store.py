"""``conveyor deploy`` (a folder to an API that need not see it), ``versions``, ``rollback``,
``unpin`` and ``rm``: the function store's commands, over the API."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.cli.http import add_url_option, base_url, request
from conveyor.errors import ConveyorError
from conveyor.settings import Settings
from conveyor.store.bundle import pack, size_text

if TYPE_CHECKING:
    import httpx


def add_commands(sub: Any) -> None:
    def command(name: str, help: str, run: Callable[..., int]) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help)
        add_url_option(parser, "--api", "--url")
        parser.set_defaults(run=run)
        return parser

    deploy = command("deploy", "pack a function folder and deploy it through the API", _deploy)
    deploy.add_argument("path", type=Path, help="the function folder")
    deploy.add_argument("--name", help="the function's name (default: the folder's)")
    command("versions", "a function's retained versions", _versions).add_argument("name")
    rollback = command("rollback", "serve a retained version (until unpin or a deploy)", _rollback)
    rollback.add_argument("name")
    rollback.add_argument("version")
    command("unpin", "serve a function's latest deploy again", _unpin).add_argument("name")
    command("rm", "remove a function (its queued work still runs)", _remove).add_argument("name")


def _deploy(settings: Settings, args: argparse.Namespace) -> int:
    base = base_url(settings, args)
    folder: Path = args.path
    if not folder.is_dir():
        raise ConveyorError(f"{folder}: not a folder")
    name = args.name or folder.resolve().name
    bundle = pack(folder, settings.bundle_limit)  # the API checks again, with its own
    wait = settings.functions.inspect_timeout + 30
    response = request(
        "PUT",
        f"{base}/functions/{name}",
        content=bundle.data,
        headers={"content-type": "application/zip", "Prefer": f"wait={wait:g}"},
        timeout=wait + 30,
    )
    body: dict[str, Any] | None
    if response.status_code == 202:  # still going when the wait was up: follow it
        body = _followed(base + response.json()["status_url"], wait)
    elif (body := _answer(response)) is None:
        return 1
    print(
        f"{body['outcome']} {name} {body['version']}: {body['files']} files,"
        f" {size_text(body['files_bytes'])} ({size_text(body['bundle_bytes'])} stored)"
    )
    return 0


def _followed(url: str, seconds: float) -> dict[str, Any]:
    """A deployment that was still running: its outcome once it has one."""
    deadline = time.monotonic() + seconds
    while True:
        response = request("GET", url, timeout=10)
        if (body := _answer(response)) is None:
            raise ConveyorError(f"cannot follow the deployment at {url}")
        if body["status"] != "running":
            break
        if time.monotonic() > deadline:
            raise ConveyorError(f"the deployment is still running after {seconds:g} s: {url}")
        time.sleep(0.5)
    if body["status"] == "failed":
        raise ConveyorError(f"the deployment failed: {body['error']['detail']}")
    return dict(body["deployment"])


def _versions(settings: Settings, args: argparse.Namespace) -> int:
    base = base_url(settings, args)
    return _show_versions(request("GET", f"{base}/functions/{args.name}/versions", timeout=10))


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    base = base_url(settings, args)
    url = f"{base}/functions/{args.name}/rollback"
    return _show_versions(request("POST", url, json={"version": args.version}, timeout=10))


def _unpin(settings: Settings, args: argparse.Namespace) -> int:
    base = base_url(settings, args)
    return _show_versions(request("POST", f"{base}/functions/{args.name}/unpin", timeout=10))


def _remove(settings: Settings, args: argparse.Namespace) -> int:
    base = base_url(settings, args)
    response = request("DELETE", f"{base}/functions/{args.name}", timeout=10)
    if response.status_code >= 400:
        _answer(response)
        return 1
    print(f"removed {args.name}")
    return 0


def _answer(response: httpx.Response) -> dict[str, Any] | None:
    """The JSON body of a success; None (and the problem printed) otherwise."""
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {"detail": response.text}
    if response.status_code < 400:
        return body
    print(f"conveyor: the API answered {response.status_code}: {body.get('detail', body)}")
    return None


def _show_versions(response: httpx.Response) -> int:
    body = _answer(response)
    if body is None:
        return 1
    print(f"{body['function']}: serving {body['serving'] or '-'}", end="")
    print(" (pinned)" if body["pinned"] else "")
    for v in body["versions"]:
        print(
            f"  {v['version']}  {v['status']:<8} {v['source']:<6} {v['deployed_at'][:19]}"
            f"  {v['files']:>4} files {size_text(v['files_bytes']):>10}  active={v['active']}"
        )
    return 0
