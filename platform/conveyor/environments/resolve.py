"""Requirements resolved at deploy into a lock, against the worker runtime's own pins.

A worker process in a function's environment imports the platform (its own package,
linked in) and what the platform imports: Celery, kombu, redis, pydantic, structlog ... at
the versions this installation runs. Those are :func:`runtime_pins`: the platform's
requirements (no extras) and theirs, as installed. The function's lines are resolved
together with them as constraints (``uv pip compile``), so a lock that asks another
version of any of them is a conflict named at deploy, never a worker that breaks later.

The lock is uv's output without headers or annotations (so the same requirements on the
same index give the same bytes); its digest is the environment's id. uv resolves from its
cached index pages first (offline) and asks the index only when they do not suffice, so a
deploy on a machine that has seen the packages costs a tenth of a second. uv reads the
package index this machine's pip reads (``pip config``: index-url, extra-index-url,
find-links), so a function's packages come from nowhere else.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conveyor.errors import EnvironmentResolveError

PLATFORM = "conveyor"
RESOLVE_TIMEOUT = 300.0  # seconds: a resolution that downloads metadata from the index
_CAUSE = re.compile(r"^\s*(?:cause|╰─▶|hint)?:?\s*(Because .*)$", re.MULTILINE)


@dataclass(frozen=True)
class Lock:
    """A resolved environment: exact versions and hashes; ``id`` its digest."""

    text: str

    @property
    def id(self) -> str:
        return environment_id(self.text)


def environment_id(lock: str) -> str:
    return hashlib.sha256(lock.encode()).hexdigest()[:16]


def uv_binary() -> str:
    """uv, as installed beside this interpreter (the ``uv`` package)."""
    from uv import find_uv_bin

    return str(find_uv_bin())


@functools.cache
def runtime_pins() -> tuple[str, ...]:
    """``name==version`` of every distribution a worker imports, as installed here."""
    pins: dict[str, str] = {}
    todo = [(PLATFORM, frozenset[str]())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a marker's requirement for another platform
        key = canonicalize_name(dist.metadata["Name"])
        if key != PLATFORM:
            pins[key] = f"{key}=={dist.version}"
        for raw in dist.requires or []:
            requirement = Requirement(raw)
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""})
            ):
                continue
            todo.append((requirement.name, frozenset(requirement.extras)))
    return tuple(sorted(pins.values()))


@functools.cache
def index_options() -> tuple[str, ...]:
    """uv's options for the index this machine's pip uses (its config and PIP_*)."""
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    found: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        found[key.rpartition(".")[2]] = value.strip().strip("'\"")
    for key in ("index-url", "extra-index-url", "find-links"):
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            found[key] = env
    # pip takes the best match from every index; uv's default stops at the first that lists
    # a name (its guard against dependency confusion): the same choice as pip here
    options: list[str] = ["--index-strategy", "unsafe-best-match"]
    if found.get("index-url"):
        options += ["--index-url", found["index-url"]]
    for flag in ("extra-index-url", "find-links"):
        for location in found.get(flag, "").split():
            if _reachable(location):
                options += [f"--{flag}", location]
    return tuple(options)


def _reachable(location: str) -> bool:
    """A local index or folder that exists (pip warns and skips one that does not; uv
    would fail); any other location as it is."""
    if location.startswith("file://"):
        return Path(location.removeprefix("file://")).exists()
    if "://" not in location:
        return Path(location).exists()
    return True


def uv_environ(cache: Path) -> dict[str, str]:
    """uv's environment: its cache under ``cache``, no configuration of its own."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    return {**environ, "UV_CACHE_DIR": str(cache), "UV_NO_CONFIG": "1"}


def resolve(lines: list[str], cache: Path) -> Lock:
    """``lines`` with the runtime's pins, locked; EnvironmentResolveError naming the
    package when a requirement does not exist, cannot be resolved, or conflicts."""
    pins = runtime_pins()
    with tempfile.TemporaryDirectory(prefix="conveyor-resolve-") as tmp:
        wanted = Path(tmp, "requirements.in")
        wanted.write_text("\n".join([*lines, *pins]) + "\n")
        constraints = Path(tmp, "runtime.txt")
        constraints.write_text("\n".join(pins) + "\n")
        command = [
            uv_binary(),
            "pip",
            "compile",
            str(wanted),
            "--constraint",
            str(constraints),
            "--python",
            sys.executable,
            "--generate-hashes",
            "--no-header",
            "--no-annotate",
            "--quiet",
            *index_options(),
        ]
        # from uv's cached index pages first (0.1 s, not 3: the runtime's 70-odd pins need
        # no request); the index itself for what the cache has never seen
        done = _compile([*command, "--offline"], lines, cache)
        if done.returncode != 0:
            done = _compile(command, lines, cache)
    if done.returncode != 0:
        raise EnvironmentResolveError(explain(lines, pins, done.stderr))
    return Lock(done.stdout)


def _compile(command: list[str], lines: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    return run_uv(command, cache, RESOLVE_TIMEOUT, f"resolving {', '.join(lines)}")


def run_uv(
    command: list[str], cache: Path, timeout: float, doing: str
) -> subprocess.CompletedProcess[str]:
    """A uv command with its cache under ``cache``; EnvironmentResolveError past ``timeout``
    (``doing``: what it was, for the error)."""
    try:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=uv_environ(cache),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EnvironmentResolveError(f"{doing} took longer than {timeout:g} s") from None


def explain(lines: list[str], pins: tuple[str, ...], stderr: str) -> str:
    """uv's reason, as a deploy error that names the packages and the runtime's part."""
    causes = [m.group(1).strip() for m in _CAUSE.finditer(stderr)]
    reason = " ".join(causes) if causes else stderr.strip().splitlines()[-1:][0] if stderr else ""
    named = {canonicalize_name(Requirement(line).name) for line in lines}
    runtime = [
        pin
        for pin in pins
        if pin.partition("==")[0] in named or re.search(rf"\b{re.escape(pin)}\b", reason)
    ]
    clash = (
        f"; the worker runtime pins {', '.join(runtime)} (what a worker imports must stay at"
        " the platform's versions)"
        if runtime
        else ""
    )
    return f"[environment] {', '.join(lines)} cannot be resolved: {reason}{clash}"
