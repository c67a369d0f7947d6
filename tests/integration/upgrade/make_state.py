"""Write the Redis state an upgrade must carry: run with the code of the release before.

    git worktree add /tmp/before <previous release>
    PYTHONPATH=/tmp/before/platform python -m tests.integration.upgrade.make_state

(from this repository's root: the harness is this one's, the platform the older one; the
processes it starts inherit PYTHONPATH). It leaves ``state.json`` beside this file: every
Redis key as DUMP wrote it with the time it had left, and what the test expects of them: invocations queued and one running when
its worker was killed, a batching function's backlog, a map job half done when its worker
was killed, stored versions of every function, an API key, and webhook deliveries pending.
``tests/integration/test_upgrade.py`` starts the code of today on it.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import redis

import conveyor
from tests.support import (
    RedisServer,
    Stack,
    free_port,
    invoke,
    make_key,
    start_worker,
    wait_for,
    write_function,
)

HERE = Path(__file__).resolve().parent
FUNCTIONS = {
    "echo": ("def run(x):\n    return x\n", '[function]\nhandler = "handler:run"\n'),
    "slow": (
        "import time\n\ndef run(x: float) -> float:\n    time.sleep(x)\n    return x\n",
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 60\n',
    ),
    "batcher": (
        "class Doubler:\n    def predict_batch(self, items: list[int]) -> list[int]:\n"
        "        return [i * 2 for i in items]\n",
        '[function]\nhandler = "handler:Doubler"\n[queue]\nname = "batch"\n'
        "[batching]\nmax_batch_size = 4\nmax_wait_ms = 50\n",
    ),
    "steps": (
        "import time\n\ndef run(x: int) -> int:\n    time.sleep(0.25)\n    return x + 1\n",
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 30\n',
    ),
}
SETTINGS = """
[webhooks]
secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
allow_networks = ["127.0.0.2/32"]
"""


def write_functions(root: Path) -> None:
    for name, (code, manifest) in FUNCTIONS.items():
        write_function(root, name, code, manifest)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="upgrade-state-"))
    stack = Stack(root, RedisServer(root / "redis").start(), SETTINGS)
    write_functions(stack.functions)
    hook_port = free_port()
    hook = {"url": f"http://127.0.0.2:{hook_port}/hook", "events": ["completed"]}
    made_by = subprocess.run(
        ["git", "-C", str(Path(conveyor.__file__).parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    state: dict[str, object] = {"made_by": made_by, "hook_port": hook_port}
    with stack.api() as api:
        state["key"] = key = make_key(stack, "upgrade", "admin")
        api.headers["Authorization"] = f"Bearer {key}"
        worker = start_worker(
            stack.config,
            root / "worker.log",
            "--queues",
            "default,batch",
            "--concurrency",
            "2",
            redis_client=stack.redis,
        )
        answer = api.post("/functions/steps/map", json={"inputs": list(range(24))})
        assert answer.status_code == 202, answer.text
        state["map_job"] = job = answer.json()["id"]
        _, running = invoke(api, "slow", 20)
        state["running"] = running["id"]
        wait_for(
            lambda: (
                api.get(f"/functions/slow/results/{running['id']}").json()["status"] == "running"
                and api.get(f"/functions/steps/jobs/{job}").json()["counts"]["succeeded"] >= 4
            ),
            60,
            "a running invocation and a map job part done",
        )
        worker.kill()  # SIGKILL: the running attempt and the chunk stay unacknowledged
        worker.stop()
        state["queued"] = [invoke(api, "echo", {"n": n})[1]["id"] for n in range(5)]
        state["hooked"] = invoke(api, "echo", {"hooked": True}, webhook=hook)[1]["id"]
        state["backlog"] = [invoke(api, "batcher", n)[1]["id"] for n in range(6)]
        _, cancelled = invoke(api, "echo", {"cancelled": True}, webhook=hook)
        api.post(f"/functions/echo/results/{cancelled['id']}/cancel").raise_for_status()
        state["cancelled"] = cancelled["id"]  # its 'completed' delivery is pending
        state["versions"] = {
            name: api.get(f"/functions/{name}").json()["version"] for name in FUNCTIONS
        }
        progress = api.get(f"/functions/steps/jobs/{job}").json()
        state["map_done_before"] = progress["counts"]["succeeded"]
    client = stack.redis
    assert client.zcard("conveyor:webhooks:due") == 1
    # Each key as Redis DUMPs it, with the milliseconds it had left (-1: none), so the
    # state is as fresh whenever the test loads it (an RDB file keeps absolute expiries).
    raw = redis.Redis(port=stack.server.port)
    state["redis"] = {
        key.decode(): [raw.dump(key).hex(), raw.pttl(key)] for key in sorted(raw.scan_iter())
    }
    (HERE / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    print(
        f"{len(state['redis'])} keys; {json.dumps({k: v for k, v in state.items() if k != 'redis'})}"
    )
    stack.close()


if __name__ == "__main__":
    main()
