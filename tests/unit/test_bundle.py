"""Bundles (a function folder as one zip) and the worker's cache of unpacked versions."""

from __future__ import annotations

import io
import os
import stat
import threading
import warnings
import zipfile
from pathlib import Path

import pytest

from conveyor.errors import BundleError, BundleTooLargeError
from conveyor.functions.digest import folder_digest
from conveyor.store.bundle import pack, unpack
from conveyor.store.cache import VersionCache
from tests.support import write_function

MANIFEST = '[function]\nhandler = "handler:run"\n'


def _folder(root: Path) -> Path:
    folder = write_function(root, "hello", "def run(x: str) -> str:\n    return x\n", MANIFEST)
    (folder / "sub").mkdir()
    (folder / "sub" / "util.py").write_text("WHO = 1\n")
    (folder / "weights.bin").write_bytes(os.urandom(200_000))
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"junk")
    (folder / ".hidden").write_text("not part of a version")
    return folder


def test_a_bundle_unpacks_to_the_same_version(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "fns")
    bundle = pack(folder, 10 * 1024 * 1024)
    assert bundle.version == folder_digest(folder) and bundle.files == 4
    assert bundle.size == sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) - 4 - 21
    names = zipfile.ZipFile(io.BytesIO(bundle.data)).namelist()
    assert names == ["function.toml", "handler.py", "sub/util.py", "weights.bin"]
    kinds = {
        i.filename: i.compress_type for i in zipfile.ZipFile(io.BytesIO(bundle.data)).infolist()
    }
    assert kinds["handler.py"] == zipfile.ZIP_DEFLATED
    assert kinds["weights.bin"] == zipfile.ZIP_STORED  # random bytes: not worth deflating
    out = unpack(bundle.data, tmp_path / "out" / "hello", 10 * 1024 * 1024)
    assert folder_digest(out) == bundle.version
    assert pack(folder, 10 * 1024 * 1024).data == bundle.data  # the same folder, the same bytes


def test_too_large_names_the_limit_and_the_largest_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "fns")
    (folder / "model.pt").write_bytes(b"\0" * 3 * 1024 * 1024)
    with pytest.raises(BundleTooLargeError) as caught:
        pack(folder, 2 * 1024 * 1024)
    message = str(caught.value)
    assert "hello: its files add up to 3.2 MiB, over the 2.0 MiB" in message
    assert "[store] max_bundle_bytes" in message
    assert "the largest: model.pt (3.0 MiB), weights.bin (195.3 KiB)" in message
    assert "setup() load them from a path or URL" in message
    # unpacking checks the sizes the archive declares before writing anything
    bundle = pack(folder, 10 * 1024 * 1024)
    with pytest.raises(BundleTooLargeError, match=r"model\.pt"):
        unpack(bundle.data, tmp_path / "out" / "hello", 2 * 1024 * 1024)
    assert not (tmp_path / "out").exists()


def _zip(*entries: tuple[str, bytes], mode: int | None = None) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # a name twice is what one of the cases is about
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a zip", "not a zip archive"),
        (_zip(("function.toml", b""), ("../evil.py", b"")), "not a plain relative path"),
        (_zip(("/etc/evil", b"")), "not a plain relative path"),
        (_zip(("a\\..\\evil", b"")), "not a plain relative path"),
        (_zip(("link", b"/etc/passwd"), mode=stat.S_IFLNK | 0o777), "only regular files"),
        (
            _zip(("hello/function.toml", b""), ("hello/handler.py", b"")),
            "at the top of the archive",
        ),
        (_zip(("function.toml", b""), ("function.toml", b"")), "in the archive twice"),
        (
            _zip(("function.toml", b""), ("a", b""), ("a/b.py", b"")),
            "entries clash: a is a file and the folder of a/b.py",
        ),
    ],
)
def test_unsafe_or_malformed_archives_are_refused(
    tmp_path: Path, data: bytes, message: str
) -> None:
    with pytest.raises(BundleError, match=message):
        unpack(data, tmp_path / "out" / "hello", 1024 * 1024)
    assert not (tmp_path / "evil.py").exists()


def test_the_cache_unpacks_a_version_once_for_all_processes(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "fns")
    bundle = pack(folder, 10 * 1024 * 1024)
    cache = VersionCache(tmp_path / "cache")
    fetched = []

    def fetch() -> bytes:
        fetched.append(1)
        return bundle.data

    found: list[Path | None] = []
    threads = [
        threading.Thread(target=lambda: found.append(cache.install("hello", bundle.version, fetch)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fetched) == 1 and len(set(found)) == 1
    path = found[0]
    assert path is not None and path.name == "hello" and folder_digest(path) == bundle.version
    assert cache.versions() == [("hello", bundle.version)]
    assert cache.install("other", "0" * 12, lambda: None) is None  # the store lacks it
    with pytest.raises(BundleError, match="unpacks to version"):
        cache.install("hello", "0" * 12, lambda: bundle.data)  # not what it claims to be
    cache.remove("hello", bundle.version)
    assert cache.versions() == [] and cache.get("hello", bundle.version) is None


def test_a_cached_version_that_changed_is_unpacked_again(tmp_path: Path) -> None:
    """Another process (user code) wrote into a version's folder: the next process to
    import it finds its files do not match the digest, and gets the store's again."""
    folder = _folder(tmp_path / "fns")
    bundle = pack(folder, 10 * 1024 * 1024)
    cache = VersionCache(tmp_path / "cache")
    path = cache.verified("hello", bundle.version, lambda: bundle.data)
    assert path is not None
    handler = path / "handler.py"
    original = handler.read_text()
    assert stat.S_IMODE(handler.stat().st_mode) == 0o444  # read-only once unpacked
    assert stat.S_IMODE(path.stat().st_mode) == 0o555
    handler.chmod(0o644)
    handler.write_text("def run(x):\n    return 'rewritten by another function'\n")
    (path / "__pycache__").mkdir(mode=0o755)
    (path / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"forged")
    again = cache.verified("hello", bundle.version, lambda: bundle.data)
    assert again == path and handler.read_text() == original
    assert not (path / "__pycache__").exists()
    cache.remove("hello", bundle.version)
    assert cache.versions() == []
