"""The HTTP contract, checked by real peers against a running API (``conveyor api``, with
API keys) and worker with the example functions: schemathesis finds no response that
disagrees with ``/schema`` (and no route that answers without a key); a client generated
from ``/schema`` by openapi-python-client invokes iris and reads a typed result; ``/docs``
renders in a real browser with every request kept on the API (no CDN: most GPU clusters
have no internet)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Route, sync_playwright

from tests.support import BIN, Stack, conveyor, copy_examples, free_port, start_api

pytestmark = pytest.mark.acceptance

CHROMIUM = "/usr/bin/chromium"
CLIENT_CONFIG = """
content_type_overrides:
  application/zip: application/octet-stream
  application/x-ndjson: text/plain
"""

# A valid Range past a file's end is answered 416 (RFC 9110): a range no schema can rule out.
# A ?wait request lasts up to [api] max_wait when its invocation is queued behind the
# fuzzing's others: each request may take that long and a little more
SCHEMATHESIS_CONFIG = """
request-timeout = 45

[[operations]]
include-operation-id = "read_file"
checks.positive_data_acceptance.expected-statuses = [200, 206, 304, 401, 403, 404, 416]

# iris's trainings go to the batch queue, which no worker here takes: one that waits for
# one would wait [api] max_wait each time
[[operations]]
include-operation-id = ["train_iris", "get_training"]
parameters = { wait = 0 }
"""


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("api", auth='"keys"', max_wait=30)
    copy_examples(stack.functions, "echo", "iris")
    stack.worker("--queues", "realtime")
    return stack


@pytest.fixture(scope="module")
def key(stack: Stack) -> str:
    made = subprocess.run(
        conveyor("keys", "create", "--name", "contract", "--scope", "admin"),
        env={**os.environ, "CONVEYOR_CONFIG": str(stack.config)},
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip()


@pytest.fixture(scope="module")
def base(stack: Stack) -> Iterator[str]:
    api, url = start_api(stack.config, stack.root / "api.log", free_port())
    yield url
    api.stop()


def test_a_generated_client_invokes_iris(base: str, key: str, tmp_path: Path) -> None:
    (tmp_path / "schema.json").write_bytes(
        httpx.get(f"{base}/schema", headers={"Authorization": f"Bearer {key}"}).content
    )
    # Its documented way with media types it has no reader for: a zip is bytes, NDJSON text.
    (tmp_path / "client.yaml").write_text(CLIENT_CONFIG)
    generate = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            "schema.json",
            "--meta",
            "none",
            "--output-path",
            "conveyor_client",
            "--config",
            "client.yaml",
        ],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )
    assert generate.returncode == 0, generate.stdout + generate.stderr
    assert "Warning" not in generate.stdout + generate.stderr, generate.stdout + generate.stderr
    use = textwrap.dedent(f"""
        from conveyor_client import AuthenticatedClient
        from conveyor_client.api.iris import get_iris_result, invoke_iris
        from conveyor_client.models import Accepted, IrisInput, IrisInvokeRequest, IrisResult, InvocationStatus

        client = AuthenticatedClient(base_url={base!r}, token={key!r})
        virginica = IrisInput(sepal_length=6.3, sepal_width=3.3, petal_length=6.0, petal_width=2.5)
        done = invoke_iris.sync(client=client, body=IrisInvokeRequest(input_=virginica), wait=30)
        assert isinstance(done, IrisResult), done
        assert done.status == InvocationStatus.SUCCEEDED and done.output.species == "virginica"

        setosa = IrisInput(sepal_length=5.1, sepal_width=3.5, petal_length=1.4, petal_width=0.2)
        accepted = invoke_iris.sync(client=client, body=IrisInvokeRequest(input_=setosa))
        assert isinstance(accepted, Accepted), accepted
        result = get_iris_result.sync(client=client, invocation_id=accepted.id, wait=30)
        assert isinstance(result, IrisResult) and result.output.species == "setosa", result
        print(result.output.species, result.output.probabilities.additional_properties)

        # A map job, its status, and its results (NDJSON, one line per item).
        import json
        from conveyor_client.api.jobs import get_job, get_job_results, map_
        from conveyor_client.models import MapJobInfo, MapRequest
        flowers = [virginica.to_dict(), setosa.to_dict(), {{"sepal_length": "long"}}]
        job = map_.sync(client=client, name="iris", body=MapRequest(inputs=flowers))
        assert isinstance(job, MapJobInfo) and job.total == 3, job
        status = get_job.sync(client=client, name="iris", job_id=job.id, wait=30)
        assert isinstance(status, MapJobInfo) and status.progress == 1.0, status
        assert (status.counts.succeeded, status.counts.failed) == (2, 1), status
        lines = get_job_results.sync(client=client, name="iris", job_id=job.id)
        items = [json.loads(line) for line in lines.splitlines()]
        assert [i["status"] for i in items] == ["succeeded", "succeeded", "failed"], items
        assert items[0]["output"]["species"] == "virginica"

        # A file: uploaded, then read back whole and in part.
        import io
        from conveyor_client.api.files import read_file, upload_file
        from conveyor_client.models import FileInfo
        from conveyor_client.types import File
        payload = bytes(range(256)) * 10
        made = upload_file.sync(client=client, body=File(payload=io.BytesIO(payload)), filename="b.bin")
        assert isinstance(made, FileInfo) and made.size == len(payload), made
        assert read_file.sync_detailed(client=client, file_id=made.id).content == payload
        part = read_file.sync_detailed(client=client, file_id=made.id, range_="bytes=0-9")
        assert part.status_code == 206 and part.content == payload[:10]
    """)
    ran = subprocess.run(
        [sys.executable, "-c", use],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.startswith("setosa")


def test_docs_render_offline(base: str, key: str, report: Callable[[str], None]) -> None:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")

    outside: list[str] = []
    failed: list[str] = []

    def only_the_api(route: Route) -> None:
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        page.route("**/*", only_the_api)
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.on("console", lambda m: failed.append(m.text) if "Security Policy" in m.text else None)
        assets = []
        page.on("response", lambda response: assets.append((response.url, response.status)))
        answer = page.goto(f"{base}/docs")
        assert answer is not None
        headers = answer.headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert (
            headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        )
        assert headers["referrer-policy"] == "no-referrer"
        page.fill("input[name=key]", key)  # /schema needs a key: the page asks for one
        page.click("#api-key button")
        page.wait_for_selector("#operations-iris-invoke_iris", timeout=30_000)
        operations = page.locator(".opblock").count()
        browser.close()
    assert outside == [] and failed == [], (outside, failed)
    # Before the key was typed in, /schema answered 401; every other request succeeded.
    assert [url for url, status in assets if status != 200] == [f"{base}/schema"], assets
    report(f"/docs: {operations} operations rendered from {len(assets)} requests, all to the API")


# Last: with an admin key it may roll back, pin and remove the functions the others use.
def test_schemathesis_finds_no_failures(
    base: str, key: str, tmp_path: Path, report: Callable[[str], None]
) -> None:
    (tmp_path / "schema.json").write_bytes(
        httpx.get(f"{base}/schema", headers={"Authorization": f"Bearer {key}"}).content
    )
    (tmp_path / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG)
    run = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            "schema.json",
            "--url",
            base,
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            "all",
            "--max-examples",
            "100",
        ],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    for line in summary.splitlines():
        if line.strip() and not line.startswith("="):
            report(f"schemathesis: {line.strip()}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in summary and "failure" not in summary.lower(), summary
