"""/metrics (exact, the same on every API process, checked by prometheus-client's parser and
promtool), each invocation's logs, and progress, from real worker processes."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import httpx
import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    BIN,
    Stack,
    conveyor,
    free_port,
    invoke,
    make_key,
    result,
    start_api,
    wait_for,
    write_function,
)

pytestmark = pytest.mark.integration

MANIFEST = '[function]\nhandler = "handler:run"\n'
NOISY = """
import logging, os, sys
from conveyor import context
def run(x: dict) -> int:
    print("to stdout", x["n"])
    print("to stderr", file=sys.stderr)
    logging.getLogger("mine").info("a log line")
    os.write(1, b"straight to fd 1\\n")
    if x.get("big"):
        print("y" * 100_000)
    if x.get("fail"):
        raise ValueError("it went wrong")
    return x["n"]
"""
SLOW = """
import time
from conveyor import context
def run(steps: int) -> int:
    for i in range(steps):
        time.sleep(0.3)
        context.current().progress(i + 1, steps, f"step {i + 1} of {steps}")
    return steps
"""
FLAKY = """
from pathlib import Path
def run(x: int) -> int:
    marker = Path(__file__).parent.parent.parent / "flaky-once"
    if not marker.exists():
        marker.write_text("")
        raise RuntimeError("once")
    return x
"""
BATCHED = """
class Model:
    def predict_batch(self, xs: list[int]) -> list[int]:
        print("a batch of", len(xs))
        return [x * 2 for x in xs]
"""


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    write_function(stack.functions, "noisy", NOISY, MANIFEST)
    write_function(stack.functions, "slow", SLOW, MANIFEST)
    write_function(
        stack.functions,
        "flaky",
        FLAKY,
        MANIFEST + '[retries]\nmax = 2\nbackoff = 0.1\non = ["RuntimeError"]\n',
    )
    write_function(
        stack.functions,
        "batched",
        BATCHED,
        '[function]\nhandler = "handler:Model"\n[batching]\nmax_batch_size = 8\nmax_wait_ms = 200\n',
    )
    stack.worker("--queues", "default", "--concurrency", "2")
    return stack


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_exact_and_the_same_on_every_api_process(
    stack: Stack,
    api: TestClient,
    report: Callable[[str], None],  # type: ignore[type-arg]
) -> None:
    for n in range(5):
        assert invoke(api, "noisy", {"n": n}, wait=30)[1]["status"] == "succeeded"
    for n in range(3):
        assert invoke(api, "noisy", {"n": n, "fail": True}, wait=30)[1]["status"] == "failed"
    assert invoke(api, "flaky", 1, wait=30)[1]["attempts"] == 2
    batch = [invoke(api, "batched", n)[1] for n in range(6)]
    for accepted in batch:
        assert result(api, "batched", accepted["id"])["status"] == "succeeded"
    other, base = start_api(stack.config, stack.root / "api-2.log", free_port())
    try:
        mine = scrape(api.get("/metrics").text)
        theirs = scrape(httpx.get(f"{base}/metrics").text)
    finally:
        other.stop()
    for metric in ("conveyor_invocations_total", "conveyor_invocation_failures_total"):
        assert {k: v for k, v in mine.items() if k[0] == metric} == {
            k: v for k, v in theirs.items() if k[0] == metric
        }
    assert value(mine, "conveyor_invocations_total", function="noisy", status="succeeded") == 5
    assert value(mine, "conveyor_invocations_total", function="noisy", status="failed") == 3
    assert (
        value(mine, "conveyor_invocation_failures_total", function="noisy", error_type="ValueError")
        == 3
    )
    assert value(mine, "conveyor_retries_total", function="flaky") == 1
    assert value(mine, "conveyor_invocation_duration_seconds_count", function="noisy") == 8
    assert (
        value(mine, "conveyor_invocation_duration_seconds_bucket", function="noisy", le="+Inf") == 8
    )
    assert value(mine, "conveyor_queue_wait_seconds_count", function="noisy") == 8
    assert value(mine, "conveyor_batch_size_sum", function="batched") == 6
    assert value(mine, "conveyor_workers", queue="default") == 1
    assert ("conveyor_queue_depth", (("queue", "default"),)) in mine
    assert (
        value(
            mine,
            "conveyor_http_requests_total",
            route="/functions/{name}/invoke",
            method="POST",
            status="200",
        )
        >= 9
    )
    report(
        "metrics: 2 API processes agree on every counter; noisy 5 succeeded / 3 failed"
        " (ValueError), 1 retry, a batching function's 6 items in"
        f" {value(mine, 'conveyor_batch_size_count', function='batched'):.0f} batch(es)"
    )


def test_promtool_accepts_the_metrics(api: TestClient) -> None:  # type: ignore[type-arg]
    promtool = shutil.which("promtool", path=f"{BIN}:/usr/bin:/usr/local/bin")
    assert promtool, "promtool is missing: `make test` takes it from Debian's prometheus package"
    invoke(api, "noisy", {"n": 1}, wait=30)
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=api.get("/metrics").text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def test_each_invocation_keeps_what_it_printed(stack: Stack, api: TestClient) -> None:  # type: ignore[type-arg]
    _, done = invoke(api, "noisy", {"n": 7}, wait=30)
    logs = api.get(f"/functions/noisy/results/{done['id']}/logs").json()["logs"]
    for line in ("to stdout 7", "to stderr", "INFO mine: a log line", "straight to fd 1"):
        assert line in logs, logs
    _, failed = invoke(api, "noisy", {"n": 8, "fail": True, "big": True}, wait=30)
    big = api.get(f"/functions/noisy/results/{failed['id']}/logs").json()["logs"]
    assert "to stdout 8" in big and len(big.encode()) < 64 * 1024 + 200
    assert "more bytes not kept: the limit is 65536" in big
    accepted = [invoke(api, "batched", n)[1] for n in (10, 11)]
    for item in accepted:
        result(api, "batched", item["id"])
        shared = api.get(f"/functions/batched/results/{item['id']}/logs").json()["logs"]
        assert "[printed by predict_batch for a batch of" in shared and "a batch of" in shared
    assert (
        api.get("/functions/noisy/results/00000000-0000-4000-8000-000000000000/logs").status_code
        == 404
    )


def test_the_cli_prints_an_invocations_logs(stack: Stack) -> None:
    api, base = start_api(stack.config, stack.root / "api-logs.log", free_port())
    try:
        done = httpx.post(f"{base}/functions/noisy/invoke?wait=30", json={"input": {"n": 3}}).json()
        printed = subprocess.run(
            conveyor("logs", "noisy", done["id"], "--url", base),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        api.stop()
    assert printed.returncode == 0 and "to stdout 3" in printed.stdout, printed.stderr


def test_a_running_invocation_shows_its_progress(api: TestClient) -> None:  # type: ignore[type-arg]
    _, accepted = invoke(api, "slow", 8)
    seen = []

    def progressed() -> bool:
        body = result(api, "slow", accepted["id"], 0)
        if body.get("progress") and body["status"] == "running":
            seen.append(body["progress"])
        return len(seen) >= 2 and seen[-1]["fraction"] > seen[0]["fraction"]

    wait_for(progressed, 10, "progress to move")
    assert seen[-1]["message"].startswith("step ") and 0 < seen[-1]["fraction"] < 1
    final = result(api, "slow", accepted["id"])
    assert final["status"] == "succeeded" and final["progress"]["fraction"] == 1.0


def test_metrics_need_an_admin_key(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("api", auth='"keys"')
    reader, admin = make_key(stack, "reader", "read:*"), make_key(stack, "root", "admin")
    api, base = start_api(stack.config, stack.root / "api.log", free_port())
    try:
        assert httpx.get(f"{base}/metrics").status_code == 401
        headers = {"Authorization": f"Bearer {reader}"}
        assert httpx.get(f"{base}/metrics", headers=headers).status_code == 403
        headers = {"Authorization": f"Bearer {admin}"}
        answer = httpx.get(f"{base}/metrics", headers=headers)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    finally:
        api.stop()
