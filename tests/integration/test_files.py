"""Files in and out on a real worker: every input form (upload reference, data URI, URL
through the SSRF guard, multipart), outputs as URLs and data URIs, ranges, expiry and
holds, a refused content type, and the Redis file store's chunks."""

from __future__ import annotations

import base64
import errno
import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from litestar.testing import TestClient

from conveyor.db.connections import sync_client
from conveyor.files.store import FileStore
from conveyor.worker.files import Attempt, WorkerFiles
from tests.support import Stack, invoke, wait_for, write_function

pytestmark = pytest.mark.integration

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

READER = """
    import hashlib
    from typing import Annotated
    from pydantic import BaseModel
    from conveyor import File, Accept

    class Doc(BaseModel):
        doc: File
        extra: list[File] = []

    def run(item: Doc) -> dict:
        def seen(f):
            return {
                "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                "declared": f.sha256,
                "size": f.size,
                "filename": f.filename,
                "content_type": f.content_type,
                "is_file": isinstance(f, File),
                "local": str(f).startswith("/"),
                "path": str(f),
            }
        return {"doc": seen(item.doc), "extra": [seen(f) for f in item.extra]}
"""

PICKY = """
    from typing import Annotated
    from pydantic import BaseModel
    from conveyor import File, Accept

    class Photo(BaseModel):
        photo: Annotated[File, Accept("image/png", "image/jpeg")]

    def run(item: Photo) -> int:
        return item.photo.size
"""

MAKER = """
    from pathlib import Path
    import tempfile
    from pydantic import BaseModel

    class Made(BaseModel):
        picture: Path
        note: str

    def run(n: int) -> Made:
        folder = Path(tempfile.mkdtemp())
        (folder / "out.bin").write_bytes(bytes(range(256)) * n)
        return Made(picture=folder / "out.bin", note=f"{n}")
"""
TOML = '[function]\nhandler = "handler:run"\n'

PAIR = """
    import tempfile
    from pathlib import Path

    def run(n: int) -> list[Path] | Path:
        folder = Path(tempfile.mkdtemp())
        made = []
        for i in range(max(n, 1)):
            (folder / f"{i}.txt").write_text(f"file {i}")
            made.append(folder / f"{i}.txt")
        return made if n > 1 else made[0]
"""


class Origin:
    """An HTTP server on loopback serving a few files, as a user's own storage would."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/away?"):  # a redirect to another address
                    self.send_response(302)
                    self.send_header("Location", unquote(self.path.removeprefix("/away?")))
                    self.end_headers()
                    return
                if self.path.startswith("/slow"):
                    time.sleep(3)
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", self.path.removeprefix("/redirect"))
                    self.end_headers()
                    return
                found = origin.files.get(self.path)
                if found is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", found[0])
                self.send_header("Content-Length", str(len(found[1])))
                self.end_headers()
                self.wfile.write(found[1])

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def stack(make_stack) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    stack = make_stack(
        '[files]\nallow_networks = ["127.0.0.0/8"]\nsweep_interval = 0.5\n'
        "fetch_timeout = 1.5\nmax_bytes = 4194304\n"
    )
    write_function(stack.functions, "reader", READER, TOML)
    write_function(stack.functions, "picky", PICKY, TOML)
    write_function(stack.functions, "maker", MAKER, TOML)
    write_function(stack.functions, "pair", PAIR, TOML)
    stack.worker("--concurrency", "2")
    yield stack


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    origin = Origin()
    yield origin
    origin.server.shutdown()


def upload(api: TestClient, data: bytes, **params: str) -> dict:  # type: ignore[type-arg]
    content_type = params.pop("content_type", "application/octet-stream")
    response = api.post(
        "/files", content=data, params=params, headers={"Content-Type": content_type}
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_an_upload_is_served_whole_and_in_ranges(api: TestClient) -> None:  # type: ignore[type-arg]
    data = bytes(range(256)) * 9000  # 2.3 MB: three chunks in Redis
    made = upload(api, data, filename="raw.bin")
    assert made["size"] == len(data) and made["sha256"] == hashlib.sha256(data).hexdigest()
    assert made["url"] == f"http://127.0.0.1/files/{made['id']}"
    assert made["filename"] == "raw.bin" and made["expires_at"]
    whole = api.get(f"/files/{made['id']}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["etag"] == f'"{made["sha256"]}"'
    assert whole.headers["content-type"] == "application/octet-stream"
    assert 'filename="raw.bin"' in whole.headers["content-disposition"]
    # a range across the first chunk boundary, and the last bytes
    part = api.get(f"/files/{made['id']}", headers={"Range": "bytes=1048000-1049999"})
    assert part.status_code == 206 and part.content == data[1048000:1050000]
    assert part.headers["content-range"] == f"bytes 1048000-1049999/{len(data)}"
    tail = api.get(f"/files/{made['id']}", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    beyond = api.get(f"/files/{made['id']}", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    same = api.get(f"/files/{made['id']}", headers={"If-None-Match": whole.headers["etag"]})
    assert same.status_code == 304
    assert api.delete(f"/files/{made['id']}").status_code == 204
    gone = api.get(f"/files/{made['id']}")
    assert gone.status_code == 404 and gone.json()["type"].endswith("file-not-found")


def test_an_uploaded_file_reaches_the_handler(api: TestClient) -> None:  # type: ignore[type-arg]
    data = b"hello file " * 1000
    made = upload(api, data, filename="notes.txt", content_type="text/plain")
    for reference in (made["url"], f"conveyor://files/{made['id']}"):
        status, done = invoke(api, "reader", {"doc": reference}, wait=30)
        assert status == 200, done
        seen = done["output"]["doc"]
        assert seen["sha256"] == hashlib.sha256(data).hexdigest() == seen["declared"]
        assert seen == {**seen, "size": len(data), "filename": "notes.txt", "is_file": True}
        assert seen["content_type"] == "text/plain" and seen["local"]


def test_a_data_uri_and_a_url_reach_the_handler(api: TestClient, origin: Origin) -> None:  # type: ignore[type-arg]
    inline = b"\x00\x01 inline bytes"
    fetched = b"fetched from the origin " * 5000
    origin.files["/data/report.csv"] = ("text/csv", fetched)
    uri = "data:application/octet-stream;base64," + base64.b64encode(inline).decode()
    item = {
        "doc": uri,
        "extra": [origin.url("/data/report.csv"), origin.url("/redirect/data/report.csv")],
    }
    status, done = invoke(api, "reader", item, wait=30)
    assert status == 200, done
    out = done["output"]
    assert out["doc"]["sha256"] == hashlib.sha256(inline).hexdigest()
    for seen in out["extra"]:
        assert seen["sha256"] == hashlib.sha256(fetched).hexdigest()
        assert seen["filename"] == "report.csv" and seen["content_type"] == "text/csv"


def test_a_bad_url_is_a_422_naming_the_field(api: TestClient, origin: Origin) -> None:  # type: ignore[type-arg]
    origin.files["/big.bin"] = ("application/octet-stream", b"x" * (5 * 1024 * 1024))
    origin.files["/slow/a.csv"] = ("text/csv", b"a,b\n")
    cases = {
        origin.url("/missing"): "answered 404",
        origin.url("/away?" + quote(f"http://[::1]:{origin.port}/data/report.csv")): "loopback",
        origin.url("/big.bin"): "max_bytes",
        origin.url("/slow/a.csv"): "fetch_timeout",
        f"http://[::1]:{origin.port}/data/report.csv": "loopback",  # not in allow_networks
        "http://169.254.169.254/latest/meta-data": "link-local",
        "ftp://example.com/x": "a file is an http(s) URL",
        "data:image/png;base64,!!!": "does not decode",
        "conveyor://files/" + "0" * 32: "never uploaded",
    }
    for url, why in cases.items():
        response = api.post(
            "/functions/reader/invoke", json={"input": {"doc": "data:,x", "extra": [url]}}
        )
        assert response.status_code == 422, (url, response.text)
        [error] = response.json()["errors"]
        assert error["field"] == "input.extra.0" and why in error["message"], (url, error)


def test_multipart_streams_the_files_in(api: TestClient) -> None:  # type: ignore[type-arg]
    first, second = b"first part " * 3000, PNG
    response = api.post(
        "/functions/reader/invoke",
        params={"wait": 30},
        data={"input": '{"doc": null, "extra": [null]}'},
        files={
            "doc": ("first.txt", first, "text/plain"),
            "extra.0": ("pixel.png", second, "image/png"),
        },
    )
    assert response.status_code == 200, response.text
    out = response.json()["output"]
    assert out["doc"]["sha256"] == hashlib.sha256(first).hexdigest()
    assert out["doc"]["filename"] == "first.txt"
    assert out["extra"][0]["content_type"] == "image/png" and out["extra"][0]["size"] == len(PNG)
    missing = api.post("/functions/reader/invoke", files={"doc": ("a", b"x", "text/plain")})
    assert missing.status_code == 422 and "'input'" in missing.json()["detail"]


def test_a_refused_content_type_is_a_422(api: TestClient) -> None:  # type: ignore[type-arg]
    png = "data:image/png;base64," + base64.b64encode(PNG).decode()
    status, done = invoke(api, "picky", {"photo": png}, wait=30)
    assert status == 200 and done["output"] == len(PNG)
    lying = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()
    text = upload(api, b"plain words", content_type="text/plain")
    for value, why in ((lying, "not a format the field accepts"), (text["url"], "not a format")):
        response = api.post("/functions/picky/invoke", json={"input": {"photo": value}})
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["field"] == "input.photo" and why in error["message"]
    schema = api.get("/functions/picky").json()["input_schema"]
    photo = schema["properties"]["photo"]
    assert photo["type"] == "string" and photo["format"] == "uri"
    assert photo["contentMediaType"] == "image/png, image/jpeg"


def test_outputs_are_urls_or_data_uris(api: TestClient) -> None:  # type: ignore[type-arg]
    status, done = invoke(api, "maker", 3, wait=30)
    assert status == 200, done
    expected = bytes(range(256)) * 3
    url = done["output"]["picture"]
    assert done["output"]["note"] == "3" and url.startswith("http://127.0.0.1/files/")
    [listed] = done["files"]
    assert listed["url"] == url and listed["size"] == len(expected)
    assert listed["sha256"] == hashlib.sha256(expected).hexdigest()
    assert listed["content_type"] == "application/octet-stream" and listed["expires_at"]
    assert api.get(url).content == expected
    inline = api.get(
        done["result_url"] if "result_url" in done else f"/functions/maker/results/{done['id']}",
        params={"files": "data_uri"},
    ).json()
    assert (
        inline["output"]["picture"]
        == "data:application/octet-stream;base64," + base64.b64encode(expected).decode()
    )
    schema = api.get("/functions/maker").json()["output_schema"]
    assert schema["properties"]["picture"]["format"] == "uri"


def test_expired_files_are_gone_unless_held(stack: Stack) -> None:
    store = FileStore(stack.settings().files, sync_client(stack.settings()))
    loose = store.put_bytes(b"x" * 10, kind="upload", owner=None, ttl=60)
    held = store.put_bytes(b"y" * 10, kind="upload", owner=None, ttl=60)
    client = stack.redis
    due = client.zscore("conveyor:files:expiry", loose.id)
    assert due is not None and abs(due - (time.time() + 60)) < 5  # due at its ttl
    client.hset("conveyor:job:held-job", mapping={"status": "queued"})
    client.sadd(f"conveyor:file-holders:{held.id}", "job:held-job")  # as a submit holds it
    # both due now (the holder is in place first: a busy machine cannot sweep in between)
    client.zadd("conveyor:files:expiry", {loose.id: 0, held.id: 0})
    store.sweep()  # the API sweeps too, every 0.5 s: either removes it
    wait_for(lambda: store.get(loose.id) is None, 10, "the loose file swept")
    assert not client.exists(f"conveyor:file-data:{loose.id}")
    assert store.get(held.id) is not None  # its invocation has not ended
    client.hset("conveyor:job:held-job", "status", "succeeded")
    client.zadd("conveyor:files:expiry", {held.id: 0})
    store.sweep()
    assert store.get(held.id) is None


def test_map_items_take_files(api: TestClient) -> None:  # type: ignore[type-arg]
    made = upload(api, b"shared by every item")
    inline = "data:text/plain;base64," + base64.b64encode(b"inline item").decode()
    inputs = [{"doc": made["url"]}, {"doc": inline}, {"doc": "ftp://nowhere/x"}]
    job = api.post("/functions/reader/map", json={"inputs": inputs})
    assert job.status_code == 202, job.text
    status = api.get(job.json()["status_url"], params={"wait": 30}).json()
    assert status["status"] == "succeeded" or status["counts"]["failed"] == 1, status
    lines = [json.loads(line) for line in api.get(job.json()["results_url"]).text.splitlines()]
    assert [line["status"] for line in lines] == ["succeeded", "succeeded", "failed"]
    assert lines[0]["output"]["doc"]["sha256"] == made["sha256"]
    assert lines[1]["output"]["doc"]["sha256"] == hashlib.sha256(b"inline item").hexdigest()
    assert "input.doc" in lines[2]["error"]["message"] or "doc" in json.dumps(lines[2]["error"])


def test_a_part_that_is_no_file_field_is_refused(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    before = len(stack.redis.keys("conveyor:file:*"))
    response = api.post(
        "/functions/reader/invoke",
        data={"input": '{"doc": "data:,x"}'},
        files={"comment": ("c.txt", b"words", "text/plain")},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "input.comment"
    assert len(stack.redis.keys("conveyor:file:*")) == before  # the part's file is gone


def test_map_items_return_files_as_urls(api: TestClient) -> None:  # type: ignore[type-arg]
    job = api.post("/functions/maker/map", json={"inputs": [1, 2]}).json()
    api.get(job["status_url"], params={"wait": 30})
    for order in ("index", "completion"):
        text = api.get(job["results_url"], params={"order": order}).text
        lines = sorted((json.loads(line) for line in text.splitlines()), key=lambda x: x["index"])
        for n, line in enumerate(lines, start=1):
            url = line["output"]["picture"]
            assert url.startswith("http://127.0.0.1/files/"), line
            assert api.get(url).content == bytes(range(256)) * n


def test_a_file_is_never_a_page_of_the_api(api: TestClient) -> None:  # type: ignore[type-arg]
    page = upload(api, b"<script>alert(sessionStorage)</script>", content_type="text/html")
    served = api.get(page["url"])
    assert served.headers["content-type"].startswith("text/html")
    assert "sandbox" in served.headers["content-security-policy"]
    assert served.headers["content-disposition"].startswith("attachment")
    picture = upload(api, PNG, content_type="image/png")
    assert api.get(picture["url"]).headers["content-disposition"].startswith("inline")


def test_a_file_over_max_bytes_is_a_413(api: TestClient) -> None:  # type: ignore[type-arg]
    big = b"y" * (4 * 1024 * 1024 + 1)
    refused = api.post("/files", content=big, headers={"Content-Type": "text/plain"})
    assert refused.status_code == 413 and "max_bytes" in refused.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield big[: 1 << 20]
        yield big[1 << 20 :]

    refused = api.post("/files", content=chunks(), headers={"Content-Type": "text/plain"})
    assert refused.status_code == 413 and "max_bytes" in refused.json()["detail"]


def test_a_full_memory_scratch_falls_back_to_disk(stack: Stack, tmp_path: Path) -> None:
    settings = stack.settings()
    store = FileStore(settings.files, sync_client(settings))
    meta = store.put_bytes(b"abc", kind="upload", owner=None, ttl=60)
    files = WorkerFiles(settings, lambda: store.index.redis)
    files.memory = str(tmp_path)
    files._store = store
    fetch = store.fetch

    def full(*args: Any) -> Any:  # the first write fails as a full /dev/shm does
        store.fetch = fetch  # type: ignore[method-assign]
        raise OSError(errno.ENOSPC, "No space left on device")

    store.fetch = full  # type: ignore[method-assign]
    attempt = Attempt(files, "conveyor:job:x", 60)
    got = attempt._fetch("input.doc", meta.id)
    assert got.read_bytes() == b"abc" and got.sha256 == meta.sha256
    assert str(got).startswith(files.disk) and files.memory is None
    attempt.cleanup()
    assert not got.exists()


def test_a_file_name_no_folder_can_hold_is_made_safe(api: TestClient) -> None:  # type: ignore[type-arg]
    """'..' and a name over 255 bytes are stored safe and written safe: the invocations
    that use them succeed, and the pool process keeps writing small files to memory."""
    long = "é" * 200 + ".txt"  # 404 bytes
    for name, kept in (("..", None), (".", None), (long, "é" * 125 + ".txt")):
        made = upload(api, b"x", filename=name)
        assert made["filename"] == kept, made
        status, done = invoke(api, "reader", {"doc": made["url"]}, wait=30)
        assert status == 200 and done["status"] == "succeeded", done
        assert done["output"]["doc"]["filename"] == kept
        if Path("/dev/shm").is_dir():
            assert done["output"]["doc"]["path"].startswith("/dev/shm/"), done


def test_a_retry_with_the_same_data_uri_is_the_same_invocation(api: TestClient) -> None:  # type: ignore[type-arg]
    body = {"input": {"doc": "data:text/plain;base64," + base64.b64encode(b"once").decode()}}
    headers = {"Idempotency-Key": "files-retry-1"}
    first = api.post("/functions/reader/invoke", json=body, headers=headers, params={"wait": 30})
    again = api.post("/functions/reader/invoke", json=body, headers=headers, params={"wait": 30})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["id"] == again.json()["id"]
    other = {"input": {"doc": "data:text/plain;base64," + base64.b64encode(b"twice").decode()}}
    conflict = api.post("/functions/reader/invoke", json=other, headers=headers)
    assert conflict.status_code == 409


def test_a_path_alone_or_in_a_list_is_a_file(api: TestClient) -> None:  # type: ignore[type-arg]
    status, alone = invoke(api, "pair", 1, wait=30)
    assert status == 200, alone
    assert alone["output"] == alone["files"][0]["url"]
    assert api.get(alone["output"]).content == b"file 0"
    status, both = invoke(api, "pair", 2, wait=30)
    assert status == 200, both
    assert [api.get(url).content for url in both["output"]] == [b"file 0", b"file 1"]
    assert [f["content_type"] for f in both["files"]] == ["text/plain", "text/plain"]


def test_too_many_file_parts_is_a_413(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    before = len(stack.redis.keys("conveyor:file:*"))
    parts = [("input", (None, '{"doc": null}'))]
    parts += [(f"extra.{i}", (f"{i}.txt", b"x", "text/plain")) for i in range(65)]
    refused = api.post("/functions/reader/invoke", files=parts)
    assert refused.status_code == 413 and "64 file parts" in refused.json()["detail"]
    assert len(stack.redis.keys("conveyor:file:*")) == before
