"""``conveyor map``: its arguments. The client (:mod:`conveyor.cli.map_client`, with httpx and tqdm)
is imported when the command runs, so that ``conveyor worker`` and ``conveyor api`` do not
import what only a client needs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from conveyor.cli.http import add_url_option, api_headers, base_url
from conveyor.settings import Settings


def add_commands(sub: Any) -> None:
    command = sub.add_parser("map", help="run a function over every line of a JSONL file")
    command.add_argument("name")
    command.add_argument("--input", required=True, type=Path, help="one JSON input per line")
    command.add_argument("--output", type=Path, help="default: <input>.results.jsonl")
    command.add_argument("--priority", type=int)
    add_url_option(command)

    def run(settings: Settings, args: argparse.Namespace) -> int:
        from conveyor.cli.map_client import run

        return run(base_url(settings, args), api_headers(), args)

    command.set_defaults(run=run)
