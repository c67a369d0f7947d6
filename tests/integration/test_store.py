"""The function store: history, rollback and unpin, invoking a retained version, retention
with queued work protected, a removed folder's queued work, and deploys pushed over HTTP
(``PUT /functions/{name}``) from folders the API cannot see. Real Redis, real workers that
have no functions folder of their own."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from conveyor.store.bundle import pack
from tests.support import (
    Stack,
    invoke,
    result,
    until_reloaded,
    wait_for,
    wait_until,
    write_function,
)

pytestmark = pytest.mark.integration

GREET = 'def run(x: str) -> str:\n    return "{word} " + x\n'
TOML = '[function]\nhandler = "handler:run"\n'


def _write(root: Path, word: str, name: str = "greet") -> Path:
    return write_function(root, name, GREET.format(word=word), TOML)


def _deploy_word(api: TestClient, root: Path, word: str, name: str = "greet") -> str:  # type: ignore[type-arg]
    """Change the folder; the new version once it serves."""
    before = api.get(f"/functions/{name}").json().get("version")
    _write(root, word, name)
    listed = until_reloaded(
        api, name, lambda f: f.get("version") not in (None, before) and f["status"] == "ready"
    )
    return str(listed["version"])


def _versions(api: TestClient, name: str = "greet") -> dict[str, Any]:  # type: ignore[type-arg]
    response = api.get(f"/functions/{name}/versions")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _zip(folder: Path) -> bytes:
    return pack(folder, 64 * 1024 * 1024).data


def test_history_rollback_unpin_and_invoking_a_retained_version(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    _write(stack.functions, "v1")
    stack.worker()
    with stack.api() as api:
        v1 = api.get("/functions/greet").json()["version"]
        assert invoke(api, "greet", "a", wait=30)[1]["output"] == "v1 a"
        v2 = _deploy_word(api, stack.functions, "v2")
        assert invoke(api, "greet", "a", wait=30)[1]["output"] == "v2 a"

        history = _versions(api)
        assert history["serving"] == v2 and history["latest"] == v2 and history["pinned"] is None
        assert [(v["version"], v["status"], v["source"]) for v in history["versions"]] == [
            (v2, "serving", "folder"),
            (v1, "retained", "folder"),
        ]

        # An old version, by digest: it validates and runs as it was.
        status, old = invoke(api, "greet", "b", wait=30, version=v1)
        assert status == 200 and old["output"] == "v1 b" and old["version"] == v1
        status, unknown = invoke(api, "greet", "b", version="0123456789ab")
        assert status == 404 and v1 in unknown["detail"] and v2 in unknown["detail"]
        bad = api.post("/functions/greet/invoke?version=nope", json={"input": "b"})
        assert bad.status_code == 400 and "12 hex digits" in bad.json()["detail"]

        # Roll back: v1 serves, pinned, everywhere the function is listed.
        back = api.post("/functions/greet/rollback", json={"version": v1})
        assert back.status_code == 200, back.text
        assert back.json()["serving"] == v1 and back.json()["pinned"] == v1
        listed = api.get("/functions/greet").json()
        assert listed["version"] == v1 and listed["pinned"] is True
        assert invoke(api, "greet", "c", wait=30)[1]["output"] == "v1 c"
        # ... and forward again, to a pinned v2, then unpinned.
        assert api.post("/functions/greet/rollback", json={"version": v2}).json()["pinned"] == v2
        assert invoke(api, "greet", "d", wait=30)[1]["output"] == "v2 d"
        unpinned = api.post("/functions/greet/unpin").json()
        assert unpinned["serving"] == v2 and unpinned["pinned"] is None
        assert "pinned" not in api.get("/functions/greet").json()

        # A pin holds until the folder changes again.
        api.post("/functions/greet/rollback", json={"version": v1})
        v3 = _deploy_word(api, stack.functions, "v3")
        after = _versions(api)
        assert after["serving"] == v3 and after["pinned"] is None
        assert invoke(api, "greet", "e", wait=30)[1]["output"] == "v3 e"

        for body, status_code in (
            ({"version": "0123456789ab"}, 404),
            ({"version": v1, "extra": 1}, 422),
            ({}, 422),
        ):
            answer = api.post("/functions/greet/rollback", json=body)
            assert answer.status_code == status_code, answer.text
        assert api.post("/functions/nope/rollback", json={"version": v1}).status_code == 404
        assert api.get("/functions/nope/versions").status_code == 404

        # Broken, then put back as it was: the error goes, the same version serves.
        manifest = stack.functions / "greet" / "function.toml"
        manifest.write_text(TOML + "bogus = 1\n")
        until_reloaded(api, "greet", lambda f: f["status"] == "error" and f["version"] == v3)
        manifest.write_text(TOML)
        fixed = until_reloaded(api, "greet", lambda f: f["status"] == "ready")
        assert fixed["version"] == v3 and "error" not in fixed


def test_retention_keeps_versions_with_queued_work(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("store", keep_versions=2, collect_interval=0.5)
    _write(stack.functions, "w1")
    client = stack.redis
    with stack.api() as api:
        v1 = api.get("/functions/greet").json()["version"]
        queued = [invoke(api, "greet", str(i))[1]["id"] for i in range(3)]  # no worker yet
        later = [_deploy_word(api, stack.functions, word) for word in ("w2", "w3", "w4")]
        v2, v3, v4 = later

        kept = wait_until(
            lambda: _versions(api), lambda h: len(h["versions"]) == 3, 10, "collection"
        )
        assert [(v["version"], v["active"]) for v in kept["versions"]] == [
            (v4, 0),
            (v3, 0),
            (v1, 3),  # past keep_versions, but 3 invocations wait for it
        ]
        assert not client.exists(f"conveyor:bundle:greet:{v2}")
        assert client.exists(f"conveyor:bundle:greet:{v1}")
        status, gone = invoke(api, "greet", "x", version=v2)
        assert status == 404 and "GET /functions/greet/versions" in gone["detail"]

        stack.worker()  # it has no folder: v1 comes from the store
        outputs = [result(api, "greet", i, wait=30) for i in queued]
        assert [(r["status"], r["output"], r["version"]) for r in outputs] == [
            ("succeeded", f"w1 {i}", v1) for i in range(3)
        ]
        done = wait_until(
            lambda: _versions(api), lambda h: len(h["versions"]) == 2, 10, "v1 collected"
        )
        assert [v["version"] for v in done["versions"]] == [v4, v3]
        assert not client.exists(f"conveyor:bundle:greet:{v1}")
        assert client.hlen("conveyor:versions-in-use") == 0
        report("keep_versions=2: v2 collected at once; v1 kept with 3 queued, collected after")


def test_a_removed_folder_is_gone_but_its_queued_work_runs(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    folder = _write(stack.functions, "bye")
    _write(stack.functions, "lost", "lost")
    with stack.api() as api:
        queued = [invoke(api, "greet", str(i))[1]["id"] for i in range(2)]
        shutil.rmtree(folder)
        wait_for(lambda: api.get("/functions/greet").status_code == 404, 10, "removal")
        assert invoke(api, "greet", "x")[0] == 404

        # A version the store lost (Redis lost it, or it was deleted by hand): its queued
        # invocation fails saying so, and nothing else is disturbed.
        lost = api.get("/functions/lost").json()["version"]
        orphan = invoke(api, "lost", "x")[1]["id"]
        stack.redis.delete(f"conveyor:bundle:lost:{lost}", f"conveyor:function:lost:version:{lost}")

        stack.worker()
        assert [result(api, "greet", i, wait=30)["output"] for i in queued] == ["bye 0", "bye 1"]
        failed = result(api, "lost", orphan, wait=30)
        assert (
            failed["status"] == "failed" and failed["error"]["type"] == "FunctionUnavailableError"
        )
        assert (
            f"version {lost} of 'lost' is not in the function store" in failed["error"]["message"]
        )


def test_a_pushed_folder_serves_and_is_validated_as_a_dropped_one(
    make_stack, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.worker()
    elsewhere = tmp_path / "laptop"  # a folder the API never sees
    with stack.api() as api:

        def put(data: bytes, name: str = "hello", media: str = "application/zip") -> Any:
            headers = {"content-type": media, "Prefer": "wait=60"}  # the outcome, not a 202
            return api.put(f"/functions/{name}", content=data, headers=headers)

        first = put(_zip(_write(elsewhere, "pushed", "hello")))
        assert first.status_code == 201, first.text
        body = first.json()
        assert body["outcome"] == "deployed" and body["source"] == "push" and body["files"] == 2
        assert first.headers["location"] == "/functions/hello"
        assert invoke(api, "hello", "x", wait=30)[1]["output"] == "pushed x"
        again = put(_zip(elsewhere / "hello"))
        assert again.status_code == 200 and again.json()["outcome"] == "unchanged"

        # The same errors as a dropped folder's, naming the same files.
        write_function(stack.functions, "badtoml", GREET, TOML + "[queue]\npriority = 11\n")
        dropped = until_reloaded(api, "badtoml", lambda f: f["status"] == "error")["error"]
        bad = write_function(elsewhere, "badtoml", GREET, TOML + "[queue]\npriority = 11\n")
        refused = put(_zip(bad), "badtoml")
        assert refused.status_code == 422
        assert refused.json()["detail"] == dropped.replace(f"{stack.functions}/", "")
        assert refused.json()["detail"].startswith("badtoml/function.toml: [queue] priority")
        broken = write_function(elsewhere, "broken", "import not_installed_anywhere\n", TOML)
        refused = put(_zip(broken), "broken")
        assert refused.status_code == 422
        assert refused.json()["detail"] == (
            "importing broken/handler.py raised ModuleNotFoundError: No module named"
            " 'not_installed_anywhere' (at broken/handler.py:1)"
        )
        assert api.get("/functions/broken").status_code == 404  # a refused push leaves nothing

        assert put(b"not a zip").status_code == 400
        clash = io.BytesIO()
        with zipfile.ZipFile(clash, "w") as archive:
            for name in ("function.toml", "handler.py", "a", "a/b.py"):
                archive.writestr(name, "")
        clashing = put(clash.getvalue(), "clash")
        assert clashing.status_code == 422, clashing.text
        assert "a is a file and the folder of a/b.py" in clashing.json()["detail"]
        assert put(_zip(elsewhere / "hello"), media="application/json").status_code == 415
        assert put(_zip(elsewhere / "hello"), name="Bad_Name").status_code == 422

        # A folder and a push for one function: the newest deploy serves.
        _write(stack.functions, "from-folder", "both")
        until_reloaded(api, "both", lambda f: f["status"] == "ready")
        pushed = put(_zip(_write(elsewhere, "from-push", "both")), "both")
        assert pushed.status_code == 200 and pushed.json()["outcome"] == "deployed"
        assert invoke(api, "both", "x", wait=30)[1]["output"] == "from-push x"
        _deploy_word(api, stack.functions, "folder-again", "both")
        assert invoke(api, "both", "x", wait=30)[1]["output"] == "folder-again x"
        sources = [v["source"] for v in _versions(api, "both")["versions"]]
        assert sources == ["folder", "push", "folder"]

        # A pushed function goes only when asked to; its queued work still runs.
        assert api.delete("/functions/hello").status_code == 204
        assert api.get("/functions/hello").status_code == 404
        assert api.delete("/functions/hello").status_code == 404


def test_a_folder_over_the_limit_is_refused_with_its_largest_files(
    make_stack, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("store", max_bundle_bytes=1024 * 1024)
    big = _write(stack.functions, "big", "big")
    (big / "weights.bin").write_bytes(b"\1" * (2 * 1024 * 1024))
    with stack.api() as api:
        listed = until_reloaded(api, "big", lambda f: f["status"] == "error")
        assert "big: its files add up to 2.0 MiB, over the 1.0 MiB" in listed["error"]
        assert "the largest: weights.bin (2.0 MiB), handler.py" in listed["error"]

        # Pushed: refused from the archive's own listing, before anything is written.
        heavy = io.BytesIO()
        with zipfile.ZipFile(heavy, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("function.toml", TOML)
            archive.writestr("handler.py", GREET.format(word="x"))
            archive.writestr("model.pt", b"\0" * (3 * 1024 * 1024))  # deflates to a few KiB
        refused = api.put(
            "/functions/heavy",
            content=heavy.getvalue(),
            headers={"content-type": "application/zip", "Prefer": "wait=60"},
        )
        assert refused.status_code == 413, refused.text
        assert "model.pt (3.0 MiB)" in refused.json()["detail"]
        assert "[store] max_bundle_bytes" in refused.json()["detail"]
        huge = api.put(
            "/functions/huge",
            content=b"\0" * (3 * 1024 * 1024),
            headers={"content-type": "application/zip"},
        )
        assert huge.status_code == 413 and "the bundle is over" in huge.json()["detail"]


def test_a_deployment_is_taken_then_followed(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without ``Prefer: wait``, a deploy is taken (202) once its bundle is read, whatever
    it holds, and its status URL says how it went: a good folder serves, bytes that are no
    function folder fail with the problem a waiting deploy would have got."""
    stack: Stack = make_stack()
    stack.worker()
    with stack.api() as api:

        def follow(answer: Any) -> dict[str, Any]:
            assert answer.status_code == 202, answer.text
            assert answer.headers["location"] == answer.json()["status_url"]
            return wait_until(  # type: ignore[no-any-return]
                lambda: api.get(answer.json()["status_url"]).json(),
                lambda body: body["status"] != "running",
                30,
                "the deployment's end",
            )

        zipped = {"content-type": "application/zip"}
        good = follow(
            api.put(
                "/functions/later", content=_zip(_write(tmp_path, "x", "later")), headers=zipped
            )
        )
        assert good["status"] == "deployed" and good["deployment"]["version"], good
        assert invoke(api, "later", "y", wait=30)[1]["output"] == "x y"
        png = follow(
            api.put("/functions/picture", content=b"\x89PNG\r\n\x1a\n" + bytes(40), headers=zipped)
        )
        assert png["status"] == "failed" and png["error"]["status"] == 400, png
        assert "not a zip archive" in png["error"]["detail"]
        assert api.get("/functions/picture").status_code == 404  # nothing was deployed
        unknown = api.get("/functions/later/deployments/00000000-0000-0000-0000-000000000000")
        assert unknown.status_code == 404
