"""``conveyor invoke NAME --stream``: an invocation's events as they come, chunks on
stdout (text inline), lines it printed and status changes on stderr. A dropped connection
is resumed after the last event seen (``Last-Event-ID``): nothing is lost or repeated."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from conveyor.cli.http import api_headers
from conveyor.errors import ConveyorError

RECONNECTS = 5


@dataclass
class Event:
    id: str = ""
    kind: str = "message"
    data: str = ""


def follow(url: str, quiet: bool = False) -> dict[str, Any]:
    """Print the stream at ``url`` until its 'done' event: the result it carries (printed
    too, unless ``quiet``)."""
    import httpx  # only the client commands need it

    last = ""
    for attempt in range(RECONNECTS + 1):
        headers = {**api_headers(), **({"Last-Event-ID": last} if last else {})}
        try:
            with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=60)) as r:
                if r.status_code != 200:
                    r.read()
                    raise ConveyorError(f"the stream answered {r.status_code}: {r.text}")
                for event in parse(r.iter_lines()):
                    last = event.id or last
                    if event.kind == "done":
                        return json.loads(event.data) if quiet else show_done(event)
                    show(event)
        except httpx.HTTPError as exc:
            if attempt == RECONNECTS:
                raise ConveyorError(f"the stream at {url} broke off: {exc}") from None
            time.sleep(min(2**attempt * 0.2, 3))
    raise ConveyorError(f"the stream at {url} ended before its last event")


def parse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-Sent Events from a response's lines (comments skipped)."""
    event = Event()
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                event.data = "\n".join(data)
                yield event
            event, data = Event(id=event.id), []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event.kind = value
        elif field == "id":
            event.id = value


def show(event: Event) -> None:
    value = json.loads(event.data)
    if event.kind == "output":
        chunk = value["output"]
        if isinstance(chunk, str):
            sys.stdout.write(chunk)
        else:
            sys.stdout.write(json.dumps(chunk) + "\n")
        sys.stdout.flush()
    elif event.kind == "log":
        print(f"| {value['line']}", file=sys.stderr)
    elif event.kind == "status":
        more = {k: v for k, v in value.items() if k != "status"}
        print(f"[{value['status']}{' ' + json.dumps(more) if more else ''}]", file=sys.stderr)
    elif event.kind == "step":
        n = value.get("invocations")
        count = "" if n is None else f" ({n} invocation{'' if n == 1 else 's'})"
        where = f" [{value['index']}]" if value.get("index") is not None else ""
        print(f"[step {value['step']}{where}: {value['status']}{count}]", file=sys.stderr)
    elif event.kind == "error":
        error = value["error"]
        print(
            f"[attempt {value['attempt']} failed: {error['type']}: {error['message']}]",
            file=sys.stderr,
        )


def show_done(event: Event) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(event.data)
    sys.stdout.write("\n")
    print(f"[{result['status']}]", file=sys.stderr)
    if result.get("error"):
        print(json.dumps(result["error"], indent=2), file=sys.stderr)
    return result
