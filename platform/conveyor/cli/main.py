"""``conveyor``: the platform's processes (api, worker, redis), its functions (check, ls,
invoke, logs), its operators' commands (keys, webhooks, flower), map jobs (map) and the
function store (deploy, versions, rollback, unpin, rm). Client-only libraries (httpx,
tqdm) are imported when a client command runs, never by ``conveyor worker`` or
``conveyor api``."""

from __future__ import annotations

import argparse
import sys

from conveyor.cli import admin, functions, maps, serve, store
from conveyor.errors import ConveyorError
from conveyor.log import configure_logging
from conveyor.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    """Parse, then run the command: each is ``run(settings, args) -> exit status``."""
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
    for group in (serve, functions, admin, maps, store):
        group.add_commands(sub)
    return parser
