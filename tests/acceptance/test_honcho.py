"""`honcho start` with the repo's Procfile, driven over HTTP as a user drives it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    BIN,
    REPO,
    UV_CACHE,
    Process,
    free_port,
    wait_for,
    wait_until,
    write_function,
)

pytestmark = pytest.mark.acceptance

IRIS = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Process]]:
    root = tmp_path_factory.mktemp("deployment")
    shutil.copy(REPO / "deploy.toml", root / "deploy.toml")
    shutil.copytree(
        REPO / "functions", root / "functions", ignore=shutil.ignore_patterns("__pycache__")
    )
    port = free_port()
    env = {
        "CONVEYOR_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
        "CONVEYOR_API__PORT": str(port),
        "CONVEYOR_LOG__FORMAT": "json",
        # legacy's environment: uv's cache shared by the tests (each package downloaded once)
        "CONVEYOR_STORE__UV_CACHE_DIR": str(UV_CACHE),
    }
    honcho = Process(
        [str(BIN / "honcho"), "start", "-f", str(REPO / "Procfile"), "-d", str(root)],
        root / "deploy.toml",
        root / "honcho.log",
        env,
        root,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 60, "the API")
        wait_for(
            lambda: _invoke(base, "echo", "warm-up", wait=5)[1].get("status") == "succeeded",
            60,
            "a worker",
        )
        yield base, root, honcho
    finally:
        honcho.stop()
    log = (root / "honcho.log").read_text()
    assert "Traceback" not in log, log[-4000:]


def _invoke(base: str, name: str, payload: object, wait: float | None = 30) -> tuple[int, dict]:  # type: ignore[type-arg]
    params = {"wait": wait} if wait else {}
    r = httpx.post(
        f"{base}/functions/{name}/invoke", json={"input": payload}, params=params, timeout=60
    )
    return r.status_code, r.json()


def test_both_examples(platform: tuple[str, Path, Process]) -> None:
    base, _, _ = platform
    status, echo = _invoke(base, "echo", {"x": 1})
    assert status == 200 and echo["output"] == {"x": 1}
    status, accepted = _invoke(base, "iris", IRIS, wait=None)
    assert status == 202
    done = httpx.get(f"{base}{accepted['result_url']}", params={"wait": 30}, timeout=60).json()
    assert done["status"] == "succeeded" and done["output"]["species"] == "virginica"


def test_a_function_in_its_own_environment(platform: tuple[str, Path, Process]) -> None:
    """legacy pins numpy<2 (its requirements.txt) while the platform has numpy 2."""
    base, _, _ = platform
    described = httpx.get(f"{base}/functions/legacy").json()
    assert described["environment"] and described["target_queue"].startswith("default.env-")
    _, done = wait_until(
        lambda: _invoke(base, "legacy", [1.0, 2.0, 4.5], wait=30),
        lambda r: r[1].get("status") == "succeeded",
        120,
        "legacy in its environment",
    )
    assert done["output"]["numpy"].startswith("1.") and done["output"]["mean"] == 2.5
    import numpy  # the platform's (the torch extra)

    assert numpy.__version__.startswith("2.")


def test_unknown_id_and_bad_input(platform: tuple[str, Path, Process]) -> None:
    base, _, _ = platform
    assert httpx.get(f"{base}/functions/iris/results/not-an-id").status_code == 404
    status, problem = _invoke(base, "iris", {"sepal_length": -1})
    assert status == 422 and any(e["field"] == "input.sepal_length" for e in problem["errors"])


def test_deploy_change_break_remove(platform: tuple[str, Path, Process]) -> None:
    base, root, _ = platform
    functions = root / "functions"
    manifest = '[function]\nhandler = "handler:run"\n[queue]\nname = "default"\n'
    started = time.monotonic()
    write_function(
        functions, "greet", "def run(name: str) -> str:\n    return f'hello {name}'\n", manifest
    )
    first = wait_until(
        lambda: _invoke(base, "greet", "ada", wait=5),
        lambda r: r[1].get("status") == "succeeded",
        30,
        "the new function",
    )
    deploy_seconds = time.monotonic() - started
    assert first[1]["output"] == "hello ada"
    print(f"deploy-to-invokable: {deploy_seconds:.2f}s")

    (functions / "greet" / "handler.py").write_text(
        "def run(name: str) -> str:\n    return f'hi {name}'\n"
    )
    changed = wait_until(
        lambda: _invoke(base, "greet", "ada", wait=5),
        lambda r: r[1].get("output") == "hi ada",
        30,
        "the new version",
    )
    assert changed[1]["version"] != first[1]["version"]

    (functions / "greet" / "function.toml").write_text(manifest + "[limits]\ntimeout = 'long'\n")
    wait_for(
        lambda: httpx.get(f"{base}/functions/greet").json()["status"] == "error",
        30,
        "the error to show",
    )
    described = httpx.get(f"{base}/functions/greet").json()
    assert "[limits] timeout" in described["error"]
    status, still = _invoke(base, "greet", "ada")
    assert status == 200 and still["output"] == "hi ada"  # the last good version serves
    assert still["version"] == changed[1]["version"]

    shutil.rmtree(functions / "greet")
    wait_for(lambda: httpx.get(f"{base}/functions/greet").status_code == 404, 30, "removal")
    assert _invoke(base, "greet", "ada")[0] == 404
