"""Webhooks from real processes (a worker, `conveyor webhooks`) to a receiver on loopback
(127.0.0.2 and .3, the only networks this stack allows), verified with the reference
standardwebhooks library."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.integration.test_files import MAKER
from tests.support import (
    Process,
    Receiver,
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

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
OLD_SECRET = "whsec_" + "b2xkLW9sZC1vbGQtb2xkLW9sZC1vbGQtb2xkLW9sZC1vbGQ="
ECHO = "def run(x):\n    return x\n"
# Streams six words, 0.25 s apart.
WORDS = """
import time
from conveyor import TextStream
def run(n: int) -> TextStream:
    for i in range(n):
        time.sleep(0.25)
        yield f"w{i} "
"""


TWICE = """
[[steps]]
name = "one"
function = "echo"

[[steps]]
name = "two"
function = "echo"
"""


LEARNER = """
from conveyor import context
def run(x: int) -> int:
    return x
def train(x: int) -> dict:
    (context.current().output_dir / "learned.txt").write_text(str(x))
    return {"x": x}
"""


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack(
        f"""
        [webhooks]
        secret = "{SECRET} {OLD_SECRET}"
        allow_networks = ["127.0.0.2/32", "127.0.0.3/32"]
        retry_schedule = [0.3, 0.6]
        timeout = 2
        per_host = 2
        max_age = 60
        """
    )
    stack.set_settings("api", public_url='"https://api.example.test"')
    write_function(stack.functions, "echo", ECHO, '[function]\nhandler = "handler:run"\n')
    write_function(stack.functions, "maker", MAKER, '[function]\nhandler = "handler:run"\n')
    write_function(stack.functions, "words", WORDS, '[function]\nhandler = "handler:run"\n')
    write_function(
        stack.functions,
        "learner",
        LEARNER,
        '[function]\nhandler = "handler:run"\n[training]\nhandler = "handler:train"\n',
    )
    (stack.functions / "twice").mkdir()
    (stack.functions / "twice" / "function.toml").write_text(TWICE)
    stack.worker("--queues", "default")
    return stack


@pytest.fixture(scope="module")
def receivers() -> tuple[Receiver, Receiver]:
    return Receiver("127.0.0.2").start(), Receiver("127.0.0.3").start()


@dataclass
class Deliverers:
    """`conveyor webhooks`, started and stopped as a test needs."""

    stack: Stack
    proc: Process | None = None

    def start(self, **env: str) -> Process:
        self.stop()
        log = self.stack.root / f"webhooks-{time.monotonic_ns()}.log"
        proc = Process(conveyor("webhooks"), self.stack.config, log, env=env)
        wait_for(lambda: any(e.get("event") == "webhooks_started" for e in proc.events()), 20)
        self.proc = proc
        return proc

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None:
            if kill:
                self.proc.kill()
            self.proc.stop()
            self.proc = None


@pytest.fixture(scope="module")
def deliverers(stack: Stack) -> Iterator[Deliverers]:
    running = Deliverers(stack)
    yield running
    running.stop()


@pytest.fixture
def delivery(deliverers: Deliverers) -> Deliverers:
    """A deliverer with the stack's settings is running."""
    if deliverers.proc is None:
        deliverers.start()
    return deliverers


def hooked(api: TestClient, url: str, *events: str, wait: float = 30) -> dict[str, Any]:  # type: ignore[type-arg]
    webhook: dict[str, Any] = {"url": url}
    if events:
        webhook["events"] = list(events)
    status, body = invoke(api, "echo", {"n": 1}, wait=wait, webhook=webhook)
    assert status in (200, 202), body
    return body


def test_signed_start_and_completed_events(api, delivery, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers[0]
    done = hooked(api, receiver.url("events"), "start", "completed")
    wait_for(lambda: len(receiver.got["events"]) == 2, 10, "two deliveries")
    events = {}
    for headers, body, _ in receiver.got["events"]:
        for secret in (SECRET, OLD_SECRET):  # both secrets of a rotation sign
            events[Webhook(secret).verify(body, headers)["event"]] = (headers, json.loads(body))
    assert set(events) == {"start", "completed"}
    headers, completed = events["completed"]
    assert headers["webhook-id"] == f"msg_{done['id']}_completed"
    final = result(api, "echo", done["id"])
    assert completed["status"] == "succeeded" and completed["output"] == {"n": 1}
    assert {k: completed[k] for k in ("id", "output", "finished_at")} == {
        k: final[k] for k in ("id", "output", "finished_at")
    }
    assert events["start"][1]["status"] == "running"
    assert completed["owner"] is None  # no keys here: nobody's in particular
    wait_for(lambda: result(api, "echo", done["id"], 0)["webhook"]["status"] == "delivered", 10)


def test_a_completed_event_carries_output_files_as_urls(api, delivery, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers[0]
    webhook = {"url": receiver.url("files"), "events": ["completed"]}
    status, done = invoke(api, "maker", 2, wait=30, webhook=webhook)
    assert status == 200, done
    wait_for(lambda: len(receiver.got["files"]) == 1, 10, "the delivery")
    _, body, _ = receiver.got["files"][0]
    sent = json.loads(body)
    [listed] = sent["files"]
    assert sent["output"]["picture"] == f"https://api.example.test/files/{listed['id']}"
    assert done["output"]["picture"] == sent["output"]["picture"]  # [api] public_url
    assert listed["size"] == 512 and listed["url"] == sent["output"]["picture"]


def test_output_events_carry_the_chunks_so_far_at_most_twice_a_second(
    api, delivery, receivers
) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers[0]
    webhook = {"url": receiver.url("output"), "events": ["output", "completed"]}
    status, done = invoke(api, "words", 6, wait=30, webhook=webhook)
    assert status == 200, done
    wait_for(
        lambda: any(json.loads(b)["event"] == "completed" for _, b, _ in receiver.got["output"]),
        10,
        "the completed delivery",
    )
    sent = [(h, Webhook(SECRET).verify(b, h)) for h, b, _ in receiver.got["output"]]
    outputs = [body for _, body in sent if body["event"] == "output"]
    # six chunks in 1.5 s: throttled to one delivery per 0.5 s, each one a prefix of the end
    assert 1 <= len(outputs) <= 4, [o["output"] for o in outputs]
    words = [f"w{i} " for i in range(6)]
    for body in outputs:
        assert body["output"] == words[: len(body["output"])] and body["output"]
        assert body["status"] == "running"
    ids = [h["webhook-id"] for h, body in sent if body["event"] == "output"]
    assert len(set(ids)) == len(ids) and all(i.startswith(f"msg_{done['id']}_output_") for i in ids)
    completed = next(body for _, body in sent if body["event"] == "completed")
    assert completed["output"] == "".join(words)


def test_a_receiver_that_fails_twice_gets_it_on_the_third_attempt(api, delivery, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers[0]
    receiver.failures["flaky"] = 2
    done = hooked(api, receiver.url("flaky"))
    wait_for(lambda: len(receiver.got["flaky"]) == 3, 15, "three attempts")
    ids = {headers["webhook-id"] for headers, _, _ in receiver.got["flaky"]}
    assert ids == {f"msg_{done['id']}_completed"}
    state = wait_for(
        lambda: (r := result(api, "echo", done["id"], 0)["webhook"])["status"] == "delivered" and r,
        10,
    )
    assert state["attempts"] == 3 and "last_error" not in state


def test_failures_that_are_not_retried(api, delivery, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers[0]
    for path, why in (("gone", "410: it is gone"), ("redirect", "answered 302")):
        done = hooked(api, receiver.url(path))
        state = wait_for(
            lambda i=done["id"]: (
                (h := result(api, "echo", i, 0)["webhook"])["status"] == "failed" and h
            ),
            10,
        )
        assert why in state["last_error"] and state["attempts"] == 1
    assert receiver.got["ok"] == []  # the redirect to 127.0.0.1 was never followed


def test_refused_addresses_are_422(api) -> None:  # type: ignore[no-untyped-def]
    for url, why in (
        ("http://127.0.0.1:9/x", "loopback"),
        ("http://localhost:9/x", "localhost resolves to 127.0.0.1"),
        ("http://10.0.0.1/x", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/x", "loopback"),
        ("http://0.0.0.0/x", "unspecified"),
        ("http://224.0.0.1/x", "multicast"),
        ("ftp://example.com/x", "does not match"),
        ("http://user:secret@127.0.0.2/x", "credentials"),
    ):
        status, problem = invoke(api, "echo", 1, webhook={"url": url})
        assert status == 422, (url, problem)
        assert problem["errors"][0]["field"].startswith("webhook"), problem
        assert why in problem["detail"], (url, problem["detail"])
    status, problem = invoke(api, "echo", 1, webhook={"url": "http://127.0.0.2/" + "x" * 2050})
    assert status == 422 and problem["errors"][0]["field"] == "webhook.url"


def test_a_deliverer_killed_before_delivering_delivers_once_when_back(
    api,
    delivery: Deliverers,
    receivers,  # type: ignore[no-untyped-def]
) -> None:
    receiver = receivers[0]
    delivery.stop(kill=True)
    done = hooked(api, receiver.url("later"))
    assert done["status"] == "succeeded"  # the result is stored, its delivery owed
    time.sleep(1)
    assert receiver.got["later"] == []
    delivery.start()
    wait_for(lambda: len(receiver.got["later"]) == 1, 10, "the delivery")
    time.sleep(2)
    assert len(receiver.got["later"]) == 1


def test_a_receiver_that_never_answers_slows_no_one_else(
    api,
    delivery,
    receivers,
    report: Callable[[str], None],  # type: ignore[no-untyped-def]
) -> None:
    stuck, fine = receivers
    for _ in range(4):
        hooked(api, stuck.url("hang"), wait=0)
    wait_for(lambda: len(stuck.got["hang"]) == 2, 10, "the per-host limit filled")
    started = time.time()
    for _ in range(5):
        hooked(api, fine.url("quick"), wait=0)
    wait_for(lambda: len(fine.got["quick"]) == 5, 10, "the other host's deliveries")
    slowest = max(t for _, _, t in fine.got["quick"]) - started
    assert len(stuck.got["hang"]) <= 2  # never more than per_host at once
    report(f"with 2 deliveries hanging on one host, 5 to another arrived within {slowest:.2f} s")


def test_an_address_refused_at_delivery_fails_the_delivery(
    api,
    delivery: Deliverers,
    receivers,  # type: ignore[no-untyped-def]
) -> None:
    """As if DNS changed after the request was accepted: the deliverer checks again."""
    delivery.stop()
    done = hooked(api, receivers[0].url("moved"))
    delivery.start(CONVEYOR_WEBHOOKS__ALLOW_NETWORKS='["127.0.0.3/32"]')
    try:
        state = wait_for(
            lambda: (
                (h := result(api, "echo", done["id"], 0)["webhook"])["status"] == "failed" and h
            ),
            10,
        )
    finally:
        delivery.stop()  # the next test starts one with the stack's settings
    assert "refused" in state["last_error"] and "loopback" in state["last_error"]
    assert receivers[0].got["moved"] == []


def test_a_pipeline_run_starts_and_completes_as_an_invocation_does(
    api, delivery, receivers
) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers[0]
    webhook = {"url": receiver.url("run"), "events": ["start", "completed"]}
    status, done = invoke(api, "twice", {"n": 2}, wait=30, webhook=webhook)
    assert status == 200 and done["status"] == "succeeded", done
    wait_for(lambda: len(receiver.got["run"]) == 2, 10, "two deliveries")
    events = {}
    for headers, body, _ in receiver.got["run"]:
        event = Webhook(SECRET).verify(body, headers)
        events[event["event"]] = (headers, event)
    headers, completed = events["completed"]
    assert headers["webhook-id"] == f"msg_{done['id']}_completed"
    assert completed["output"] == {"n": 2} and completed["id"] == done["id"]
    assert events["start"][1]["status"] == "running"


def test_a_training_completes_with_its_new_version(api, delivery, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers[0]
    webhook = {"url": receiver.url("trained"), "events": ["start", "completed"]}
    started = api.post("/functions/learner/trainings", json={"input": 4, "webhook": webhook})
    assert started.status_code == 202, started.text
    done = result(api, "learner", started.json()["id"])
    assert done["status"] == "succeeded", done
    wait_for(lambda: len(receiver.got["trained"]) == 2, 10, "two deliveries")
    events = {}
    for headers, body, _ in receiver.got["trained"]:
        event = Webhook(SECRET).verify(body, headers)
        events[event["event"]] = event
    completed = events["completed"]
    assert completed["output"]["new_version"] == done["output"]["new_version"]
    assert completed["output"]["metrics"] == {"x": 4} and completed["training"] == {
        "promote": False
    }


def test_a_map_job_completion_is_signed_and_delivered(api, delivery, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers[1]
    answer = api.post(
        "/functions/echo/map",
        json={"inputs": list(range(300)), "webhook": {"url": receiver.url("map")}},
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["webhook"]["url"] == receiver.url("map")
    wait_for(lambda: receiver.got["map"], 30, "the job's completed event")
    headers, body, _ = receiver.got["map"][0]
    event = Webhook(SECRET).verify(body, headers)
    assert headers["webhook-id"] == f"msg_{job['id']}_completed"
    assert event["event"] == "completed" and event["id"] == job["id"]
    assert event["status"] == "succeeded" and event["counts"]["succeeded"] == 300
    assert event["results_url"] == job["results_url"]
    wait_for(
        lambda: api.get(job["status_url"]).json()["webhook"].get("status") == "delivered",
        10,
        "the job to show its webhook delivered",
    )
    assert len(receiver.got["map"]) == 1


def test_a_key_with_its_own_secret_signs_its_deliveries(make_stack, receivers) -> None:  # type: ignore[no-untyped-def]
    """With keys, each delivery names its key (inside what is signed), and a key made with
    --webhook-secret has its deliveries signed with its own secret, not the platform's: a
    receiver of one team cannot be fed another team's deliveries."""
    stack: Stack = make_stack(
        f"""
        [webhooks]
        secret = "{SECRET}"
        allow_networks = ["127.0.0.2/32"]
        """
    )
    stack.set_settings("api", auth='"keys"')
    write_function(stack.functions, "echo", ECHO, '[function]\nhandler = "handler:run"\n')
    stack.worker("--queues", "default")
    made = subprocess.run(
        conveyor("keys", "create", "--name", "team-a", "--scope", "invoke:*", "--webhook-secret"),
        env={**os.environ, "CONVEYOR_CONFIG": str(stack.config)},
        capture_output=True,
        text=True,
        check=True,
    )
    key_a, secret_a = made.stdout.split()
    key_b = make_key(stack, "team-b", "invoke:*")
    deliverer = Deliverers(stack)
    deliverer.start()
    api, base = start_api(stack.config, stack.root / "api.log", free_port())
    receiver = receivers[0]
    try:
        ids = {}
        for path, key in (("team-a", key_a), ("team-b", key_b)):
            answer = httpx.post(
                f"{base}/functions/echo/invoke?wait=30",
                json={"input": path, "webhook": {"url": receiver.url(path)}},
                headers={"Authorization": f"Bearer {key}"},
                timeout=40,
            )
            assert answer.status_code == 200, answer.text
            ids[path] = answer.json()["id"]
        wait_for(lambda: receiver.got["team-a"] and receiver.got["team-b"], 15, "both deliveries")
    finally:
        api.stop()
        deliverer.stop()
    headers, body, _ = receiver.got["team-a"][-1]
    got = Webhook(secret_a).verify(body, headers)
    assert got["id"] == ids["team-a"] and got["owner"] is not None
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, headers)  # the platform's secret does not sign it
    headers, body, _ = receiver.got["team-b"][-1]
    got_b = Webhook(SECRET).verify(body, headers)
    assert got_b["owner"] not in (None, got["owner"])  # another key's id
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_a).verify(body, headers)
