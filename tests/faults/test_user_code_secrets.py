"""User code never sees the platform's secrets: a handler that dumps what it can read of the
environment at import (in the API's inspector and in a worker's pool child) and when it
runs finds no webhook secret, no API key and nothing ``[worker] hidden_env`` names, in
``os.environ``, in its own ``/proc/self/environ`` or in its parent's; what is not a
secret still passes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import Process, Stack, conveyor, free_port, start_api, wait_for, write_function

pytestmark = pytest.mark.faults

DUMP = """
import json, os
from pathlib import Path

def _dump(where):
    def read(path):
        try:
            return open(path, "rb").read().decode(errors="replace")
        except OSError as exc:
            return repr(exc)
    seen = {{
        "environ": dict(os.environ),
        "proc": read("/proc/self/environ"),
        "parent": read(f"/proc/{{os.getppid()}}/environ"),
    }}
    Path({out!r}, f"{{where}}-{{os.getpid()}}.json").write_text(json.dumps(seen))

_dump("import")

def run(x: int) -> int:
    _dump("run")
    return x
"""
SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
SECRETS = {
    "CONVEYOR_WEBHOOKS__SECRET": SECRET,
    "CONVEYOR_API_KEY": "cvk_not-for-handlers-0123456789",
    "MY_CLOUD_TOKEN": "cloud-credential-the-worker-needs",
}


def test_handlers_see_no_platform_secret(
    make_stack, tmp_path: Path, report: Callable[[str], None]
) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("worker", hidden_env='["MY_CLOUD_*"]')
    out = tmp_path / "seen"
    out.mkdir()
    write_function(
        stack.functions, "dump", DUMP.format(out=str(out)), '[function]\nhandler = "handler:run"\n'
    )
    env = {**SECRETS, "KEEP_ME": "visible"}
    worker = Process(
        conveyor("worker", "--queues", "default"), stack.config, stack.root / "w.log", env
    )
    stack.workers.append(worker)
    api, base = start_api(stack.config, stack.root / "api.log", free_port(), env)
    try:
        done = httpx.post(f"{base}/functions/dump/invoke?wait=30", json={"input": 3}, timeout=40)
        assert done.status_code == 200 and done.json()["output"] == 3, done.text
        dumps = wait_for(
            lambda: sorted(out.glob("*.json")) if len(list(out.glob("*.json"))) >= 3 else None, 20
        )
    finally:
        api.stop()
    places = 0
    for dump in dumps:
        seen = json.loads(dump.read_text())
        assert seen["environ"].get("KEEP_ME") == "visible", dump.name
        for name, value in SECRETS.items():
            assert name not in seen["environ"], (dump.name, name)
            for where in ("proc", "parent"):
                assert value not in seen[where], (dump.name, where, name)
                places += 1
    report(
        f"{len(dumps)} dumps (inspector import, worker import, run): no secret in os.environ,"
        f" /proc/self/environ or the parent's ({places} places checked); KEEP_ME passed"
    )
