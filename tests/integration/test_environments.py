"""Functions in their own Python environments, on real processes: requirements resolved at
deploy with uv against the worker runtime's pins, each environment built once per machine,
a worker process per environment beside the platform's, messages reaching only it.

The packages come from the machine's package index (pip's); uv's cache is shared by the
tests (``CONVEYOR_TEST_UV_CACHE``, default a folder under the system's temporary folder) so
each package is downloaded once per machine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support import Stack, wait_for, write_function

pytestmark = pytest.mark.integration

VERSION = """
from importlib.metadata import version

def run(package: str) -> str:
    return version(package)
"""
FN = '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 30\n'


def env_stack(make_stack, cache: Path) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("store", cache_dir=f'"{cache}"')
    return stack


def with_requirements(stack: Stack, name: str, requirements: str, code: str = VERSION) -> Path:
    folder = write_function(stack.functions, name, code, FN)
    (folder / "requirements.txt").write_text(requirements)
    return folder


def serving(api, name: str, timeout: float = 180) -> dict:  # type: ignore[no-untyped-def]
    """The function once it serves (its environment resolved and built at deploy)."""
    body: dict = {}

    def ready() -> bool:
        nonlocal body
        body = api.get(f"/functions/{name}").json()
        return body.get("status") in ("ready", "failed") or bool(body.get("error"))

    wait_for(ready, timeout, f"{name} deployed")
    return body


def test_conflicting_pins_served_side_by_side(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = env_stack(make_stack, tmp_path / "cache")
    with_requirements(stack, "old", "iniconfig==1.1.1\n")
    with_requirements(stack, "new", "iniconfig==2.0.0  # the other one\n")
    write_function(stack.functions, "plain", VERSION, FN)
    with stack.api() as api:
        old, new = serving(api, "old"), serving(api, "new")
        assert old["environment"] and new["environment"], (old, new)
        assert old["environment"] != new["environment"]
        assert serving(api, "plain").get("environment") is None
        stack.worker("--queues", "default", "--concurrency", "1")
        answers = {}
        for name in ("old", "new", "plain"):
            done = api.post(
                f"/functions/{name}/invoke", json={"input": "iniconfig"}, params={"wait": 60}
            )
            assert done.status_code == 200, done.text
            answers[name] = done.json()["output"]
    assert answers["old"] == "1.1.1"
    assert answers["new"] == "2.0.0"
    assert answers["plain"] != "1.1.1"  # the platform's own (pytest's)


def test_a_deploy_that_cannot_resolve_names_the_package_and_the_old_version_serves(
    make_stack, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    stack = env_stack(make_stack, tmp_path / "cache")
    folder = with_requirements(stack, "pinned", "iniconfig==2.0.0\n")
    stack.worker("--queues", "default", "--concurrency", "1")
    with stack.api() as api:
        good = serving(api, "pinned")
        assert good["status"] == "ready", good
        cases = {
            "conveyor-no-such-package-zz\n": "conveyor-no-such-package-zz",
            "six<1.17\n": "six==1.17.0",  # the runtime pins six (a dependency of the platform)
            "--index-url http://example.invalid/simple\niniconfig\n": "options are not taken",
            "iniconfig @ https://example.invalid/x.whl\n": "a URL or path is not taken",
        }
        for requirements, named in cases.items():
            (folder / "requirements.txt").write_text(requirements)
            body: dict = {}

            def failed(want: str = requirements) -> bool:
                nonlocal body
                body = api.get("/functions/pinned").json()
                return bool(body.get("error")) and body.get("error_version") != good["version"]

            wait_for(failed, 120, f"the deploy of {requirements!r} to fail")
            assert named in body["error"], body
            assert body["version"] == good["version"]  # the last good version keeps serving
            done = api.post(
                "/functions/pinned/invoke", json={"input": "iniconfig"}, params={"wait": 60}
            )
            assert done.status_code == 200 and done.json()["output"] == "2.0.0", done.text
            (folder / "requirements.txt").write_text("iniconfig==2.0.0\n")
            wait_for(lambda: not api.get("/functions/pinned").json().get("error"), 60, "good again")


def test_eight_workers_meeting_a_new_environment_build_it_once(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The API built it at deploy in its cache; eight worker processes on a machine with an
    empty cache (their own cache_dir) meet it at once: one builds, the others wait."""
    stack = env_stack(make_stack, tmp_path / "api-cache")
    with_requirements(stack, "once", "iniconfig==1.1.1\n")
    fresh = tmp_path / "worker-cache"
    with stack.api() as api:
        serving(api, "once")
        environ = {**os.environ, "CONVEYOR_STORE__CACHE_DIR": str(fresh)}
        for _ in range(8):
            stack.worker("--queues", "default", "--concurrency", "1", env=environ)
        done = api.post("/functions/once/invoke", json={"input": "iniconfig"}, params={"wait": 60})
        assert done.status_code == 200 and done.json()["output"] == "1.1.1", done.text
        wait_for(
            lambda: (
                sum(w.log.read_text().count('"environment_worker_started"') for w in stack.workers)
                >= 8
            ),
            120,
            "every worker's environment process",
        )
    builds = sum(w.log.read_text().count('"environment_built"') for w in stack.workers)
    assert builds == 1, builds
    assert len(list((fresh / ".environments").glob("*/.conveyor-ready"))) == 1


PIPELINE = """
[[steps]]
name = "first"
function = "old"

[[steps]]
name = "second"
function = "new"
input = "iniconfig"
"""


def test_a_pipeline_whose_steps_live_in_different_environments(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support import write_pipeline

    stack = env_stack(make_stack, tmp_path / "cache")
    with_requirements(stack, "old", "iniconfig==1.1.1\n")
    with_requirements(stack, "new", "iniconfig==2.0.0\n")
    write_pipeline(stack.functions, "both", PIPELINE)
    stack.worker("--queues", "default", "--concurrency", "1")
    with stack.api() as api:
        serving(api, "old"), serving(api, "new"), serving(api, "both")
        done = api.post("/functions/both/invoke", json={"input": "iniconfig"}, params={"wait": 60})
        assert done.status_code == 200, done.text
        run = done.json()
        first = api.get(f"/functions/old/results/{run['id']}.first").json()
    assert first["output"] == "1.1.1", first
    assert run["output"] == "2.0.0", run
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"], run


TRAIN = """
from importlib.metadata import version
from conveyor import context

def train(settings: dict) -> dict:
    (context.current().output_dir / "trained.txt").write_text(version("iniconfig"))
    return {"iniconfig": version("iniconfig")}
"""


def test_a_training_runs_in_its_functions_environment(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = env_stack(make_stack, tmp_path / "cache")
    folder = with_requirements(stack, "trained", "iniconfig==1.1.1\n")
    (folder / "function.toml").write_text(
        FN + '[training]\nhandler = "train:train"\ntimeout = 60\n'
    )
    (folder / "train.py").write_text(TRAIN)
    stack.worker("--queues", "default", "--concurrency", "1")
    with stack.api() as api:
        first = serving(api, "trained")
        started = api.post("/functions/trained/trainings", json={"input": {}, "promote": True})
        assert started.status_code == 202, started.text
        done = api.get(
            f"/functions/trained/trainings/{started.json()['id']}", params={"wait": 60}
        ).json()
        assert done["status"] == "succeeded", done
        assert done["output"]["metrics"]["iniconfig"] == "1.1.1", done
        assert done["queue"] == f"default.env-{first['environment']}"
        wait_for(
            lambda: api.get("/functions/trained").json()["version"] != first["version"],
            120,
            "promoted",
        )
        promoted = api.get("/functions/trained").json()
        assert promoted["environment"] == first["environment"]  # the same lock: one environment


def test_an_environment_goes_with_its_last_version(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = env_stack(make_stack, tmp_path / "cache")
    stack.set_settings("store", keep_versions=1, collect_interval=1)
    folder = with_requirements(stack, "short", "iniconfig==1.1.1\n")
    stack.worker("--queues", "default", "--concurrency", "1")
    client = stack.redis
    with stack.api() as api:
        environment = serving(api, "short")["environment"]
        assert client.exists(f"conveyor:environment:{environment}")
        done = api.post("/functions/short/invoke", json={"input": "iniconfig"}, params={"wait": 60})
        assert done.json()["output"] == "1.1.1", done.text
        (folder / "requirements.txt").unlink()  # the platform's environment from now on
        wait_for(
            lambda: api.get("/functions/short").json().get("environment") is None, 120, "redeploy"
        )
        wait_for(lambda: not client.exists(f"conveyor:environment:{environment}"), 60, "collected")
        assert not client.exists(f"conveyor:environment:{environment}:users")
        done = api.post("/functions/short/invoke", json={"input": "iniconfig"}, params={"wait": 60})
        assert done.json()["output"] != "1.1.1", done.text
    log = stack.workers[0].log
    wait_for(lambda: '"environment_worker_stopped"' in log.read_text(), 30, "its process stopped")


def test_with_autoscale_an_environments_process_starts_on_demand_and_stops_idle(
    make_stack, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    stack = env_stack(make_stack, tmp_path / "cache")
    stack.set_worker(scale_interval=0.5, scale_down_after=2)
    with_requirements(stack, "lazy", "iniconfig==1.1.1\n")
    supervisor = stack.supervisor("--queues", "default", "--autoscale", "1,1", expect=1)
    with stack.api() as api:
        serving(api, "lazy")
        time.sleep(3)
        assert '"environment_worker_started"' not in supervisor.log.read_text()
        assert api.get("/functions/lazy").json().get("warning") is None  # autoscaled
        done = api.post("/functions/lazy/invoke", json={"input": "iniconfig"}, params={"wait": 60})
        assert done.status_code == 200 and done.json()["output"] == "1.1.1", done.text
    wait_for(lambda: '"environment_worker_stopped"' in supervisor.log.read_text(), 30, "idle stop")


BATCHED = """
from importlib.metadata import version

class Model:
    def predict_batch(self, packages: list[str]) -> list[str]:
        return [version(p) for p in packages]
"""


def test_batching_and_map_jobs_in_an_environment(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = env_stack(make_stack, tmp_path / "cache")
    folder = with_requirements(stack, "batched", "iniconfig==1.1.1\n", BATCHED)
    (folder / "function.toml").write_text(
        '[function]\nhandler = "handler:Model"\n[batching]\nmax_batch_size = 4\nmax_wait_ms = 20\n'
    )
    with_requirements(stack, "mapped", "iniconfig==1.1.1\n")
    stack.worker("--queues", "default", "--concurrency", "1")
    with stack.api() as api:
        assert serving(api, "batched")["environment"] == serving(api, "mapped")["environment"]
        ids = [
            api.post("/functions/batched/invoke", json={"input": "iniconfig"}).json()["id"]
            for _ in range(6)
        ]
        outputs = [
            api.get(f"/functions/batched/results/{i}", params={"wait": 60}).json().get("output")
            for i in ids
        ]
        assert outputs == ["1.1.1"] * 6
        job = api.post("/functions/mapped/map", json={"inputs": ["iniconfig"] * 20}).json()
        body: dict = {}

        def ended() -> bool:
            nonlocal body
            body = api.get(f"/functions/mapped/jobs/{job['id']}", params={"wait": 10}).json()
            return bool(body.get("finished_at"))

        wait_for(ended, 120, "the map job")
        assert body["status"] == "succeeded", body
        results = api.get(f"/functions/mapped/jobs/{job['id']}/results").text.splitlines()
        assert len(results) == 20 and all("1.1.1" in line for line in results), results[:3]


def test_an_environment_that_cannot_be_built_fails_its_invocations(
    make_stack, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A worker machine that cannot reach the package index and has none of the packages
    cached: its invocations fail with the build's error, naming the package, and the
    worker keeps serving the platform's functions (no crash loop)."""
    stack = env_stack(make_stack, tmp_path / "api-cache")
    with_requirements(stack, "unbuildable", "iniconfig==1.1.1\n")
    write_function(stack.functions, "plain", VERSION, FN)
    empty = tmp_path / "worker-uv"
    environ = {
        **os.environ,
        "CONVEYOR_STORE__CACHE_DIR": str(tmp_path / "worker-cache"),
        "CONVEYOR_STORE__UV_CACHE_DIR": str(empty),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
    }
    with stack.api() as api:
        serving(api, "unbuildable")
        worker = stack.worker("--queues", "default", "--concurrency", "1", env=environ)
        done = api.post(
            "/functions/unbuildable/invoke", json={"input": "iniconfig"}, params={"wait": 60}
        ).json()
        assert done["status"] == "failed", done
        assert done["error"]["type"] == "EnvironmentResolveError", done
        message = done["error"]["message"]  # the package uv could not fetch, by its URL
        assert "could not be built" in message and "127.0.0.1:9/simple/" in message, done
        plain = api.post(
            "/functions/plain/invoke", json={"input": "iniconfig"}, params={"wait": 30}
        )
        assert plain.json()["status"] == "succeeded", plain.text
    assert worker.proc.poll() is None
    assert worker.log.read_text().count('"environment_build_failed"') == 1
