"""``conveyor map``: its arguments. The client (``map_client.py``, with httpx and tqdm)
is imported when the command runs, so that ``conveyor worker`` and ``conveyor api`` do not
import what only a client needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def add_map_command(sub: Any, base_url: Any, headers: Any) -> None:
    command = sub.add_parser("map", help="run a function over every line of a JSONL file")
    command.add_argument("name")
    command.add_argument("--input", required=True, type=Path, help="one JSON input per line")
    command.add_argument("--output", type=Path, help="default: <input>.results.jsonl")
    command.add_argument("--priority", type=int)
    command.add_argument("--url", help="API base URL (default: from deploy.toml)")

    def run(settings: Any, args: Any) -> int:
        from conveyor.cli.map_client import run

        return run(base_url(settings, args), headers(), args)

    command.set_defaults(run=run)
