"""The CLI as a user runs it."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support import (
    REPO,
    UV_CACHE,
    RedisServer,
    conveyor,
    copy_examples,
    free_port,
    start_api,
    start_worker,
    wait_for,
    write_function,
    write_settings,
)

pytestmark = pytest.mark.acceptance

HELLO = 'def run(x: str) -> str:\n    return "{word} " + x\n'
TOML = '[function]\nhandler = "handler:run"\n'


def run(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        conveyor(*args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # uv's cache for the examples' environments (legacy's): the tests' shared one
        env={
            **os.environ,
            "CONVEYOR_CONFIG": str(config),
            "CONVEYOR_STORE__UV_CACHE_DIR": str(UV_CACHE),
        },
    )


def _loads_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_check_passes_on_the_repo() -> None:
    done = run("check", config=REPO / "deploy.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok    echo" in done.stdout and "ok    iris" in done.stdout
    # legacy's requirements.txt resolved and built, its module imported with numpy 1.x
    assert re.search(r"ok    legacy \w+ queue=default environment=[0-9a-f]{16}", done.stdout)


def test_check_fails_on_a_broken_function_and_bad_settings(tmp_path: Path) -> None:
    functions = tmp_path / "functions"
    write_function(
        functions,
        "good",
        "def run(x: int) -> int:\n    return x\n",
        '[function]\nhandler = "handler:run"\n',
    )
    write_function(
        functions,
        "bad",
        "def run(x: int) -> int:\n    return x\n",
        '[function]\nhandler = "handler:run"\n[queue]\npriority = 11\n',
    )
    config = write_settings(tmp_path / "deploy.toml", "redis://127.0.0.1:1/0", functions)
    done = run("check", config=config)
    assert done.returncode == 1
    assert "ok    good" in done.stdout
    assert "ERROR bad" in done.stdout and "[queue] priority" in done.stdout
    config.write_text(config.read_text() + "\n[api]\nport = 'eighty'\n")
    done = run("check", config=config)
    assert done.returncode == 2 and "deploy.toml" in done.stderr


def test_api_worker_invoke_and_ls(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    functions = tmp_path / "functions"
    copy_examples(functions, "echo", "iris")
    config = write_settings(tmp_path / "deploy.toml", server.url, functions)
    port = free_port()
    api, base = start_api(config, tmp_path / "api.log", port)
    worker = start_worker(config, tmp_path / "worker.log", redis_client=server.client())
    try:
        url = ["--url", base]
        done = run("invoke", "echo", "--input", '{"a": [1, 2]}', *url, config=config)
        assert done.returncode == 0, done.stdout + done.stderr
        out = json.loads(done.stdout)
        assert out["status"] == "succeeded" and out["output"] == {"a": [1, 2]}
        listed = run("ls", *url, config=config)
        assert listed.returncode == 0 and "echo" in listed.stdout and "ready" in listed.stdout
        assert "workers=1" in listed.stdout and "no live worker" not in listed.stdout
        bad = run("invoke", "echo", "--input", "{nope", *url, config=config)
        assert bad.returncode == 2 and "--input is not valid JSON" in bad.stderr
        missing = run("invoke", "nope", "--input", "1", *url, config=config)
        assert missing.returncode == 1 and "function-not-found" in missing.stdout
        iris = '{"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 4.2, "petal_width": 1.5}'
        done = run("invoke", "iris", "--input", iris, *url, config=config)
        assert json.loads(done.stdout)["output"]["species"] == "versicolor"
        trained = run(
            "train", "iris", "--input", '{"epochs": 50}', "--promote", *url, config=config
        )
        assert trained.returncode == 0, trained.stdout + trained.stderr
        made = json.loads(trained.stdout)
        assert made["status"] == "succeeded" and made["output"]["promoted"] is True, made
        # torch is loaded where the model runs (the pool child) and nowhere else
        assert not _loads_torch(api.pid), "the API process loaded torch"
        assert not _loads_torch(worker.pid), "the worker's supervising parent loaded torch"
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        assert any(_loads_torch(int(child)) for child in children)
    finally:
        worker.stop()
        api.stop()
        server.stop()
    down = run("ls", "--url", base, config=config)
    assert down.returncode == 2 and "cannot reach the API" in down.stderr


def test_an_api_without_keys_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    config = write_settings(tmp_path / "deploy.toml", "redis://127.0.0.1:1/0", tmp_path / "fns")
    done = run("api", "--host", "0.0.0.0", config=config)
    assert done.returncode == 2, done.stdout + done.stderr
    assert '[api] auth = "none" (CONVEYOR_API__AUTH)' in done.stderr
    assert "0.0.0.0" in done.stderr and 'auth = "keys"' in done.stderr


def test_keys_and_the_cli_sending_one(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        config = write_settings(tmp_path / "deploy.toml", server.url, tmp_path / "fns")
        config.write_text(config.read_text().replace("[api]\n", '[api]\nauth = "keys"\n'))
        copy_examples(tmp_path / "fns", "echo")
        made = run("keys", "create", "--name", "me", "--scope", "read:*", config=config)
        assert made.returncode == 0 and made.stdout.startswith("cvk_"), made.stderr
        assert "shown this once" in made.stderr
        again = run("keys", "create", "--name", "me", "--scope", "read:*", config=config)
        assert again.returncode == 2 and "a key named 'me' exists" in again.stderr
        bad = run("keys", "create", "--name", "x", "--scope", "write:*", config=config)
        assert (
            bad.returncode == 2
            and "invoke:<glob>, read:<glob>, train:<glob>, deploy:<glob>, files:write or admin"
            in bad.stderr
        )
        api, base = start_api(config, tmp_path / "api.log", free_port())
        try:
            anonymous = run("ls", "--url", base, config=config)
            assert anonymous.returncode == 2 and "401" in anonymous.stderr
            with_key = subprocess.run(
                conveyor("ls", "--url", base),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={
                    **os.environ,
                    "CONVEYOR_CONFIG": str(config),
                    "CONVEYOR_API_KEY": made.stdout.strip(),
                },
            )
            assert with_key.returncode == 0 and with_key.stdout.startswith("echo"), with_key.stderr
        finally:
            api.stop()
        listed = run("keys", "ls", config=config)
        assert "me" in listed.stdout and "read:*" in listed.stdout and "cvk_" not in listed.stdout
        assert run("keys", "revoke", "me", config=config).returncode == 0
        assert "no key named 'me'" in run("keys", "revoke", "me", config=config).stderr
    finally:
        server.stop()


def test_deploy_from_a_folder_the_api_cannot_see(tmp_path: Path) -> None:
    """`conveyor check PATH`, then `conveyor deploy PATH --api URL`: the API (whose functions
    folder is empty) serves it; versions, rollback, unpin and rm from the CLI."""
    server = RedisServer(tmp_path / "redis").start()
    config = write_settings(tmp_path / "deploy.toml", server.url, tmp_path / "api-functions")
    laptop = tmp_path / "laptop"
    folder = write_function(laptop, "hello", HELLO.format(word="one"), TOML)
    api, base = start_api(config, tmp_path / "api.log", free_port())
    worker = start_worker(config, tmp_path / "worker.log", redis_client=server.client())
    try:
        url = ["--api", base]
        checked = run("check", str(folder), config=config)
        assert checked.returncode == 0 and "ok    hello" in checked.stdout, checked.stdout
        first = run("deploy", str(folder), *url, config=config)
        assert first.returncode == 0, first.stdout + first.stderr
        assert first.stdout.startswith("deployed hello ")
        v1 = first.stdout.split()[2].rstrip(":")
        done = run("invoke", "hello", "--input", '"x"', "--url", base, config=config)
        assert json.loads(done.stdout)["output"] == "one x"
        assert "unchanged hello" in run("deploy", str(folder), *url, config=config).stdout

        (folder / "handler.py").write_text(HELLO.format(word="two"))
        v2 = run("deploy", str(folder), *url, config=config).stdout.split()[2].rstrip(":")
        listed = run("versions", "hello", *url, config=config)
        assert listed.returncode == 0 and f"serving {v2}" in listed.stdout
        assert f"{v1}  retained push" in listed.stdout, listed.stdout
        back = run("rollback", "hello", v1, *url, config=config)
        assert back.returncode == 0 and f"serving {v1} (pinned)" in back.stdout
        done = run("invoke", "hello", "--input", '"x"', "--url", base, config=config)
        assert json.loads(done.stdout)["output"] == "one x"
        assert f"serving {v2}\n" in run("unpin", "hello", *url, config=config).stdout

        # Refused before anything is sent, or by the API, with what to fix.
        (folder / "function.toml").write_text(TOML + "[queue]\npriority = 11\n")
        checked = run("check", str(folder), config=config)
        assert checked.returncode == 1 and "ERROR hello" in checked.stdout
        refused = run("deploy", str(folder), *url, config=config)
        assert refused.returncode == 1 and "422" in refused.stdout
        assert "hello/function.toml: [queue] priority" in refused.stdout
        (folder / "function.toml").write_text(TOML)
        (folder / "weights.bin").write_bytes(b"\0" * (65 * 1024 * 1024))
        big = run("deploy", str(folder), *url, config=config)
        assert big.returncode == 2 and "the largest: weights.bin (65.0 MiB)" in big.stderr

        assert run("rm", "hello", *url, config=config).stdout == "removed hello\n"
        gone = run("invoke", "hello", "--input", '"x"', "--url", base, config=config)
        assert gone.returncode == 1 and "function-not-found" in gone.stdout
    finally:
        worker.stop()
        api.stop()
        server.stop()


def test_invoke_uploads_files_and_downloads_outputs(tmp_path: Path) -> None:
    """`conveyor invoke NAME --file field=PATH` uploads; `--download DIR` saves the
    output's files: the examples that take and return images, as a user runs them."""
    from PIL import Image, ImageDraw

    server = RedisServer(tmp_path / "redis").start()
    functions = tmp_path / "functions"
    copy_examples(functions, "shapes", "thumbnail", "tally", "census")
    config = write_settings(tmp_path / "deploy.toml", server.url, functions)
    api, base = start_api(config, tmp_path / "api.log", free_port())
    worker = start_worker(config, tmp_path / "worker.log", redis_client=server.client())
    picture = Image.new("RGB", (64, 64), (20, 40, 200))
    ImageDraw.Draw(picture).polygon([(32, 8), (8, 56), (56, 56)], fill=(240, 220, 30))
    picture.save(tmp_path / "triangle.png")
    try:
        url = ["--url", base]
        done = run(
            "invoke", "shapes", "--file", f"image={tmp_path / 'triangle.png'}", *url, config=config
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["output"]["label"] == "triangle"
        saved = tmp_path / "saved"
        done = run(
            "invoke", "thumbnail", "--input", '{"size": 16}',
            "--file", f"image={tmp_path / 'triangle.png'}", "--download", str(saved), *url,
            config=config,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        [thumb] = list(saved.iterdir())
        assert thumb.name == "triangle-thumb.png" and f"saved {thumb}" in done.stdout
        assert Image.open(thumb).size == (16, 16)
        wrong = run("invoke", "shapes", "--file", "image", *url, config=config)
        assert wrong.returncode == 2 and "FIELD=PATH" in wrong.stderr
        # the census pipeline: shapes on each picture, then tally; each step shown
        encoded = base64.b64encode((tmp_path / "triangle.png").read_bytes()).decode()
        images = json.dumps({"images": ["data:image/png;base64," + encoded] * 3})
        done = run("invoke", "census", "--input", images, *url, config=config)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "[step classify: running (3 invocations)]" in done.stderr
        assert "[step classify: succeeded]" in done.stderr
        assert done.stderr.index("[step classify: succeeded]") < done.stderr.index(
            "[step count: succeeded]"
        )
        counted = json.loads(done.stdout)
        assert counted["output"]["counts"] == {"triangle": 3}, counted
        assert [step["status"] for step in counted["steps"]] == ["succeeded", "succeeded"]
    finally:
        worker.stop()
        api.stop()
        server.stop()


SLOWTEXT = """
import time
from conveyor import TextStream
def run(n: int) -> TextStream:
    for i in range(n):
        print(f"made word{i}")
        yield f"word{i} "
        time.sleep(0.4)
"""


def test_invoke_streams_chunks_as_they_come(tmp_path: Path) -> None:
    """`conveyor invoke NAME --stream` prints each chunk when it is made (the first long
    before the invocation ends), the lines printed and the status on stderr; the poet
    example streams its words."""
    server = RedisServer(tmp_path / "redis").start()
    functions = tmp_path / "functions"
    copy_examples(functions, "poet")
    write_function(functions, "slowtext", SLOWTEXT, TOML)
    write_function(functions, "hello", HELLO.format(word="hello"), TOML)
    config = write_settings(tmp_path / "deploy.toml", server.url, functions)
    api, base = start_api(config, tmp_path / "api.log", free_port())
    worker = start_worker(config, tmp_path / "worker.log", redis_client=server.client())
    try:
        wait_for(
            lambda: httpx.get(f"{base}/functions/slowtext").json().get("status") == "ready",
            30,
            "slowtext deployed",
        )
        command = [*conveyor("invoke", "slowtext", "--input", "6", "--stream", "--url", base)]
        env = {**os.environ, "CONVEYOR_CONFIG": str(config)}
        pipe = subprocess.PIPE
        with subprocess.Popen(command, stdout=pipe, stderr=pipe, env=env) as proc:
            assert proc.stdout is not None
            first = proc.stdout.read(6)
            assert first == b"word0 " and proc.poll() is None  # more to come: still running
            rest, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert (first + rest).decode() == "word0 word1 word2 word3 word4 word5 \n"
        assert "| made word3" in err.decode() and err.decode().rstrip().endswith("[succeeded]")
        done = run(
            "invoke", "poet", "--input", '{"prompt": "The", "max_chars": 120, "seed": 1}',
            "--stream", "--url", base, config=config,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert len(done.stdout) == 121 and "[running" in done.stderr
        whole = run("invoke", "hello", "--input", '"x"', "--stream", "--url", base, config=config)
        assert whole.returncode == 0 and "hello does not stream" in whole.stderr
        assert json.loads(whole.stdout)["output"] == "hello x"
    finally:
        worker.stop()
        api.stop()
        server.stop()
