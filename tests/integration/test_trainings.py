"""Trainings make versions: a real API, a real worker, the function store in a real Redis.

A training runs the function's ``[training]`` handler; the files it writes into
``ctx.output_dir`` plus the version it started from are a new version, inspected like any
deploy, serving at once with ``promote`` and retained otherwise. A training whose files
break the import fails with that error and leaves what serves alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    Stack,
    copy_examples,
    make_key,
    result,
    wait_for,
    wait_until,
    write_function,
)

pytestmark = pytest.mark.integration

HANDLER = """
    import json
    from pathlib import Path

    FACTOR = json.loads((Path(__file__).parent / "weights.json").read_text())["factor"]

    def run(x: float) -> float:
        return x * FACTOR
"""

TRAIN = """
import json
import time
from pydantic import BaseModel
from conveyor import context


class Settings(BaseModel):
    factor: float
    steps: int = 3
    pause: float = 0
    break_import: bool = False


def train(settings: Settings) -> dict:
    ctx = context.current()
    for step in range(settings.steps):
        time.sleep(settings.pause)
        ctx.progress(step + 1, settings.steps, f"step {{step + 1}}")
    (ctx.output_dir / "weights.json").write_text(json.dumps({{"factor": settings.factor}}))
    if settings.break_import:
        (ctx.output_dir / "handler.py").write_text("raise RuntimeError('bad weights')\\n")
    print(f"trained factor {{settings.factor}}")
    with open({ends!r}, "a") as f:
        f.write(f"{{ctx.id}} {{time.time()}}\\n")
    return {{"loss": 1 / settings.factor, "steps": settings.steps}}
"""

MANIFEST = """
    [function]
    handler = "handler:run"

    [training]
    handler = "train:train"
    timeout = 60
"""


def deploy_scale(stack: Stack, manifest: str = MANIFEST) -> Path:
    ends = stack.root / "trained"
    folder = write_function(stack.functions, "scale", HANDLER, manifest)
    (folder / "weights.json").write_text(json.dumps({"factor": 2}))
    (folder / "train.py").write_text(TRAIN.format(ends=str(ends)))
    return ends


def train(client: Any, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    started = client.post("/functions/scale/trainings", json=body, headers=headers or {})
    assert started.status_code == 202, started.text
    assert started.headers["location"] == f"/functions/scale/trainings/{started.json()['id']}"
    training_id = started.json()["id"]
    done = client.get(
        f"/functions/scale/trainings/{training_id}", params={"wait": 60}, headers=headers or {}
    )
    assert done.status_code == 200, done.text
    return done.json()  # type: ignore[no-any-return]


def serve(client: Any, x: float, version: str | None = None) -> float:
    params = {"wait": 30} | ({"version": version} if version else {})
    answer = client.post("/functions/scale/invoke", json={"input": x}, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["output"]  # type: ignore[no-any-return]


def test_a_promoted_training_serves_and_a_retained_one_waits(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    ends = deploy_scale(stack)
    stack.worker("--queues", "default")
    with stack.api() as client:
        first = client.get("/functions/scale").json()
        assert first["trainings_url"] == "/functions/scale/trainings"
        assert first["training_schema"]["required"] == ["factor"]
        original = first["version"]
        assert serve(client, 5) == 10

        bad = client.post("/functions/scale/trainings", json={"input": {"factor": "big"}})
        assert bad.status_code == 422 and "input.factor" in bad.text, bad.text

        retained = train(client, {"input": {"factor": 3}})
        assert retained["status"] == "succeeded", retained
        assert retained["training"] == {"promote": False}
        out = retained["output"]
        assert out["metrics"] == {"loss": 1 / 3, "steps": 3} and out["promoted"] is False
        assert out["new_version"] != original
        assert client.get("/functions/scale").json()["version"] == original
        assert serve(client, 5) == 10  # what served still serves
        assert serve(client, 5, out["new_version"]) == 15  # the retained one, on request
        versions = client.get("/functions/scale/versions").json()["versions"]
        made = next(v for v in versions if v["version"] == out["new_version"])
        assert made["source"] == "training" and made["training"] == retained["id"]
        assert made["status"] == "retained"
        logs = client.get(f"/functions/scale/trainings/{retained['id']}/logs").json()
        assert "trained factor 3" in logs["logs"]

        promoted = train(client, {"input": {"factor": 4}, "promote": True})
        assert promoted["status"] == "succeeded", promoted
        new = promoted["output"]["new_version"]
        assert promoted["output"]["promoted"] is True
        # how long from the handler's return to the new version answering an invocation
        ended = float(ends.read_text().split()[-1])
        wait_for(lambda: serve(client, 5) == 20, 10, "the promoted version to serve")
        serving_after = time.time() - ended
        assert client.get("/functions/scale").json()["version"] == new

        rolled = client.post("/functions/scale/rollback", json={"version": out["new_version"]})
        assert rolled.status_code == 200, rolled.text
        wait_for(lambda: serve(client, 5) == 15, 10, "the retained version after rollback")

        slow = client.post("/functions/scale/trainings", json={"input": {"factor": 5, "pause": 2}})
        slow_url = slow.headers["location"]
        wait_for(lambda: client.get(slow_url).json()["status"] == "running", 10, "it to run")
        cancelled = client.post(f"{slow_url}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert "output" not in client.get(slow_url).json()  # no version was made

        listed = client.get("/functions/scale/trainings").json()["trainings"]
        assert [t["id"] for t in listed] == [slow.json()["id"], promoted["id"], retained["id"]]
        plain = client.post("/functions/scale/invoke", json={"input": 1}).json()["id"]
        assert client.get(f"/functions/scale/trainings/{plain}").status_code == 404
    report(
        f"training end -> its promoted version serving an invocation: {serving_after:.2f} s"
        " (the training's result also waits for the version to be stored)"
    )


def test_a_training_that_breaks_the_import_fails_and_nothing_changes(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    deploy_scale(stack)
    stack.worker("--queues", "default")
    with stack.api() as client:
        original = client.get("/functions/scale").json()["version"]
        before = client.get("/functions/scale/versions").json()["versions"]
        broken = train(client, {"input": {"factor": 9, "break_import": True}, "promote": True})
        assert broken["status"] == "failed", broken
        assert broken["attempts"] == 1  # its files would break again: no retry
        assert broken["error"]["type"] == "TrainingError"
        assert "handler.py" in broken["error"]["message"], broken["error"]
        assert "bad weights" in broken["error"]["message"], broken["error"]
        assert client.get("/functions/scale").json()["version"] == original
        assert client.get("/functions/scale/versions").json()["versions"] == before
        assert serve(client, 5) == 10


def test_training_scopes_and_a_function_without_training(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("api", auth='"keys"')
    deploy_scale(stack)
    plain = write_function(
        stack.functions, "plain", HANDLER, '[function]\nhandler = "handler:run"\n'
    )
    (plain / "weights.json").write_text(json.dumps({"factor": 1}))
    trainer = make_key(stack, "trainer", "train:scale")
    caller = make_key(stack, "caller", "invoke:scale")
    admin = make_key(stack, "root", "admin")
    stack.worker("--queues", "default")
    with stack.api() as client:
        as_trainer = {"authorization": f"Bearer {trainer}"}
        as_caller = {"authorization": f"Bearer {caller}"}
        refused = client.post(
            "/functions/scale/trainings", json={"input": {"factor": 2}}, headers=as_caller
        )
        assert refused.status_code == 403 and "train:scale" in refused.text, refused.text
        done = train(client, {"input": {"factor": 2}}, as_trainer)
        assert done["status"] == "succeeded", done
        # Serving at once is a deploy's right (it ends an admin's rollback pin): train:
        # alone may not promote; with deploy: it may.
        as_admin = {"authorization": f"Bearer {admin}"}
        pinned = client.post(
            "/functions/scale/rollback", json={"version": done["version"]}, headers=as_admin
        )
        assert pinned.status_code == 200, pinned.text
        promote = {"input": {"factor": 3}, "promote": True}
        refused = client.post("/functions/scale/trainings", json=promote, headers=as_trainer)
        assert refused.status_code == 403 and "deploy:scale" in refused.text, refused.text
        assert stack.redis.hget("conveyor:function:scale", "pinned")
        deployer = make_key(stack, "deployer", "train:scale", "deploy:scale")
        promoted = train(client, promote, {"authorization": f"Bearer {deployer}"})
        assert promoted["status"] == "succeeded" and promoted["output"]["promoted"], promoted
        assert client.get("/functions/scale/trainings", headers=as_trainer).json()["trainings"]
        mine = client.get(f"/functions/scale/trainings/{done['id']}", headers=as_caller)
        assert mine.status_code == 403, mine.text  # another key's training
        none = client.post(
            "/functions/plain/trainings",
            json={"input": {}},
            headers={"authorization": f"Bearer {admin}"},
        )
        assert none.status_code == 404 and "[training]" in none.json()["detail"], none.text


def test_a_schedule_starts_trainings(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    deploy_scale(
        stack,
        MANIFEST
        + '\n[[schedules]]\nevery = "1s"\ntraining = true\npromote = true\ninput = { factor = 7 }\n',
    )
    stack.worker("--queues", "default")
    with stack.api() as client:
        wait_for(
            lambda: client.get("/functions/scale/trainings").json()["trainings"],
            30,
            "a scheduled training",
        )
        [schedule] = client.get("/functions/scale/schedules").json()["schedules"]
        assert schedule["training"] is True and schedule["promote"] is True
        first = client.get("/functions/scale/trainings").json()["trainings"][-1]
        done = result(client, "scale", first["id"])
        assert done["status"] == "succeeded" and done["training"] == {"promote": True}, done
        wait_for(lambda: serve(client, 1) == 7, 10, "the scheduled training's version")


def test_iris_retrains_itself(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch")
    stack: Stack = make_stack()
    stack.set_settings("queues.batch", max_timeout=600)
    copy_examples(stack.functions, "iris")
    stack.worker("--queues", "realtime,batch")
    flower = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
    with stack.api() as client:
        original = client.get("/functions/iris").json()["version"]
        started = client.post(
            "/functions/iris/trainings",
            json={"input": {"epochs": 300, "checkpoint_every": 100}, "promote": True},
        )
        assert started.status_code == 202, started.text
        done = wait_until(
            lambda: result(client, "iris", started.json()["id"], wait=60),
            lambda body: body["status"] in ("succeeded", "failed"),
            180,
            "iris's training",
        )
        assert done["status"] == "succeeded", done
        metrics = done["output"]["metrics"]
        assert metrics["accuracy"] >= 0.9 and metrics["epochs"] == 300, metrics
        assert done["checkpoint"]["attempt"] == 1  # it checkpointed at 100 and 200 epochs
        new = done["output"]["new_version"]
        assert new != original
        wait_for(lambda: client.get("/functions/iris").json()["version"] == new, 10, "iris")
        answer = client.post("/functions/iris/invoke", json={"input": flower}, params={"wait": 30})
        assert answer.json()["version"] == new and answer.json()["output"]["species"] == "virginica"
    report(
        f"iris retrained (300 epochs) in {done['duration_ms'] / 1000:.2f} s, accuracy"
        f" {metrics['accuracy']}, serving as {new}"
    )
