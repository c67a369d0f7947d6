"""An upgrade loses nothing: the code of today started on the Redis state the release
before left (``upgrade/state.json``, written by ``upgrade/make_state.py`` with that code)
runs all of it to the end: invocations queued, one whose worker was killed while it ran, a
batching function's backlog, a map job half done, stored versions, an API key, and a
webhook delivery pending."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.integration.upgrade.make_state import FUNCTIONS, SETTINGS, write_functions
from tests.support import Process, Receiver, Stack, conveyor, result, start_worker, wait_for

pytestmark = pytest.mark.integration

STATE = json.loads((Path(__file__).parent / "upgrade" / "state.json").read_text())


def restore(stack: Stack) -> None:
    """Every key as the release before left it, with the time it had left."""
    raw = redis.Redis(port=stack.server.port)
    for key, (payload, ttl) in STATE["redis"].items():
        raw.restore(key, max(ttl, 0), bytes.fromhex(payload), replace=True)


def test_the_state_of_the_release_before_runs_to_the_end(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack(SETTINGS)
    stack.set_settings("api", auth='"keys"')
    restore(stack)
    write_functions(stack.functions)  # the same folders: the versions the store holds
    receiver = Receiver("127.0.0.2", STATE["hook_port"]).start()
    stack.workers.append(
        start_worker(
            stack.config,
            stack.root / "worker.log",
            "--queues",
            "default,batch",
            "--concurrency",
            "2",
            redis_client=stack.redis,
        )
    )
    stack.workers.append(Process(conveyor("webhooks"), stack.config, stack.root / "hooks.log"))
    with stack.api() as api:
        refused = api.post("/functions/echo/invoke", json={"input": 1})
        assert refused.status_code == 401, refused.text  # the API key of before still rules
        api.headers["Authorization"] = f"Bearer {STATE['key']}"
        for name, version in STATE["versions"].items():
            assert api.get(f"/functions/{name}").json()["version"] == version, name
            listed = api.get(f"/functions/{name}/versions").json()["versions"]
            assert version in [v["version"] for v in listed], (name, listed)
        for n, invocation in enumerate(STATE["queued"]):
            assert result(api, "echo", invocation, wait=60)["output"] == {"n": n}
        for n, invocation in enumerate(STATE["backlog"]):
            assert result(api, "batcher", invocation, wait=60)["output"] == n * 2
        hooked = result(api, "echo", STATE["hooked"], wait=60)
        assert hooked["output"] == {"hooked": True}
        running = result(api, "slow", STATE["running"], wait=60)
        if running["status"] != "succeeded":  # it runs its 20 s again from the start
            running = result(api, "slow", STATE["running"], wait=60)
        assert (running["status"], running["output"]) == ("succeeded", 20), running
        job_url = f"/functions/steps/jobs/{STATE['map_job']}"
        wait_for(lambda: api.get(job_url).json()["status"] != "running", 120, "the map job's end")
        job = api.get(job_url).json()
        assert job["status"] == "succeeded" and job["counts"]["succeeded"] == 24, job
        lines = [json.loads(line) for line in api.get(job["results_url"]).text.splitlines()]
        assert [line["output"] for line in lines] == [x + 1 for x in range(24)]
        wait_for(lambda: len(receiver.got["hook"]) >= 2, 60, "the pending deliveries")
        delivered = {json.loads(body)["id"] for _, body, _ in receiver.got["hook"]}
        assert delivered == {STATE["hooked"], STATE["cancelled"]}, delivered
    report(
        f"state of {STATE['made_by']} ({len(STATE['redis'])} keys): {len(STATE['queued'])}"
        f" queued and {len(STATE['backlog'])} batched invocations, the one running when its"
        f" worker was killed, a map job {STATE['map_done_before']}/24 done, 2 pending webhooks:"
        f" all finished; {len(FUNCTIONS)} functions still serve their stored versions"
    )
