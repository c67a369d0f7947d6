"""A function folder as one zip archive: what the function store keeps per version and what
``conveyor deploy`` sends.

:func:`pack` takes the files that make the version (:func:`~conveyor.functions.digest.
folder_files`), sorted, with fixed timestamps; each is deflated unless a sample of it does
not compress (model weights rarely do: deflating 20 MiB of float32 took 0.6 s to save 7 %).
:func:`unpack` writes only regular files with plain relative names, after checking that
their declared sizes add up to the limit: an archive cannot write outside its folder or
grow past what it says.
"""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from conveyor.errors import BundleConflictError, BundleError, BundleTooLargeError
from conveyor.functions.digest import VERSION_LENGTH, folder_files
from conveyor.functions.manifest import MANIFEST_FILE

MAX_FILES = 10_000
NAMED_FILES = 5  # the largest files a size error names
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SAMPLE = 64 * 1024
_WORTH_IT = 0.9  # deflate a file if a sample of it shrinks below this fraction
_SKIPPED = ("__pycache__",)


@dataclass(frozen=True)
class Bundle:
    """A packed folder: the archive, the version it holds, its files and their bytes."""

    data: bytes
    version: str
    files: int
    size: int


def pack(folder: Path, limit: int) -> Bundle:
    """``folder`` as a bundle; :class:`BundleTooLargeError` when its files add up past
    ``limit``, naming the largest."""
    files = folder_files(folder)
    sizes = folder_sizes(folder, files)
    check_size(folder.name, sizes, limit)
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in files:
            data = file.read_bytes()
            relative = file.relative_to(folder)
            digest.update(str(relative).encode() + b"\0")
            digest.update(hashlib.sha256(data).digest())
            info = zipfile.ZipInfo(relative.as_posix(), date_time=_EPOCH)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED if _compresses(data) else zipfile.ZIP_STORED
            archive.writestr(info, data)
    return Bundle(
        buffer.getvalue(), digest.hexdigest()[:VERSION_LENGTH], len(files), sum(sizes.values())
    )


def folder_sizes(folder: Path, files: list[Path] | None = None) -> dict[str, int]:
    """The size of each file that makes the folder's version, by its path in the folder."""
    return {
        file.relative_to(folder).as_posix(): file.stat().st_size
        for file in (folder_files(folder) if files is None else files)
    }


def check_size(name: str, sizes: dict[str, int], limit: int) -> None:
    total = sum(sizes.values())
    if total <= limit:
        return
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:NAMED_FILES]
    named = ", ".join(f"{path} ({size_text(size)})" for path, size in largest)
    raise BundleTooLargeError(
        f"{name}: its files add up to {size_text(total)}, over the {size_text(limit)} a version"
        f" may have ([store] max_bundle_bytes; with an S3 file store, [files] bundles_above lifts"
        f" it to [files] max_bytes); the largest: {named}. Or keep large weights out of the"
        " folder: have setup() load them from a path or URL every worker reaches"
    )


def unpack(data: bytes, dest: Path, limit: int) -> Path:
    """Write the bundle's files into ``dest`` (created); the folder."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise BundleError(f"not a zip archive of a function folder: {exc}") from None
    with archive:
        members = _members(archive)
        check_size(dest.name, {info.filename: info.file_size for info in members}, limit)
        dest.mkdir(parents=True)
        for info in members:
            target = dest.joinpath(*PurePosixPath(info.filename).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as source, target.open("xb") as out:
                    while chunk := source.read(1024 * 1024):
                        out.write(chunk)
            except FileExistsError:
                raise BundleError(f"{info.filename}: in the archive twice") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise BundleError(
                    f"{info.filename}: cannot be read from the archive: {exc}"
                ) from None
    return dest


def _members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The regular files to write; anything that could escape the folder is refused."""
    infos = archive.infolist()
    if len(infos) > MAX_FILES:
        raise BundleError(f"the archive has {len(infos)} entries; at most {MAX_FILES}")
    members = []
    for info in infos:
        path = PurePosixPath(info.filename)
        if info.is_dir():
            continue
        if (
            "\\" in info.filename
            or path.is_absolute()
            or any(part in ("", ".", "..") for part in path.parts)
        ):
            raise BundleError(f"{info.filename!r}: not a plain relative path in the folder")
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: the archiver did not say
        if kind and kind != stat.S_IFREG:
            raise BundleError(f"{info.filename}: only regular files (no links or devices)")
        if any(part.startswith(".") or part in _SKIPPED for part in path.parts) or path.suffix in (
            ".pyc",
            ".pyo",
        ):
            continue  # not part of a version, as in a folder
        members.append(info)
    names = {info.filename for info in members}
    _check_clashes([info.filename for info in members])
    if MANIFEST_FILE not in names:
        nested = sorted(n for n in names if PurePosixPath(n).name == MANIFEST_FILE)
        if nested:
            raise BundleError(
                f"{MANIFEST_FILE} must be at the top of the archive (found {nested[0]}): zip"
                " the folder's contents, or use `conveyor deploy PATH`"
            )
    return members


def _check_clashes(names: list[str]) -> None:
    """A name twice, or a file that is also a folder of another entry (``a`` and ``a/b.py``),
    cannot be unpacked into one folder: say which entries clash."""
    files: set[str] = set()
    clashes: list[str] = []
    for name in names:
        if name in files:
            clashes.append(f"{name} is in the archive twice")
        files.add(name)
    for name in names:
        parts = PurePosixPath(name).parts
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in files:
                clashes.append(f"{folder} is a file and the folder of {name}")
    if clashes:
        raise BundleConflictError(
            f"the archive's entries clash: {', '.join(sorted(set(clashes))[:NAMED_FILES])};"
            " a function folder's files must each have their own path"
        )


def _compresses(data: bytes) -> bool:
    sample = data[:_SAMPLE]
    return len(sample) < 1024 or len(zlib.compress(sample, 1)) < _WORTH_IT * len(sample)


def size_text(size: int) -> str:
    """``512 B``, ``7.7 KiB``, ``20.0 MiB``."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"
