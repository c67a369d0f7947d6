"""What user code's processes see of the environment: everything but the platform's secrets.

User code runs in the API's inspector subprocess (importing a version to read its types)
and in a worker's pool children. Neither needs a webhook signing secret, a Redis password
or an API key, and a handler that logs or uploads ``os.environ`` must not leak them. Hidden:

- every ``CONVEYOR_*`` variable whose name says it holds a secret (``SECRET``,
  ``PASSWORD``, ``TOKEN``, ``KEY``, ``CREDENTIAL``) or whose value is a URL with a password
  (``CONVEYOR_REDIS__URL=redis://:pw@host``);
- the variables an operator names in ``[worker] hidden_env`` (names or ``fnmatch``
  patterns: ``AWS_*``), for credentials the worker process itself needs.

The inspector is started with the filtered environment. A worker removes them from its own
environment before its pool starts (the children inherit what it has then) and overwrites
their values in the environment block the kernel shows as ``/proc/<pid>/environ``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
from collections.abc import Iterable, Mapping

_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]+@", re.IGNORECASE)
PLATFORM_PREFIX = "CONVEYOR_"


def is_hidden(name: str, value: str, hidden: Iterable[str] = ()) -> bool:
    """Whether user code must not see this variable."""
    if name.upper().startswith(PLATFORM_PREFIX) and (
        _SECRET_NAME.search(name.removeprefix(PLATFORM_PREFIX)) or _URL_PASSWORD.match(value)
    ):
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in hidden)


def user_environment(environ: Mapping[str, str], hidden: Iterable[str] = ()) -> dict[str, str]:
    """``environ`` without what :func:`is_hidden` hides: the environment for user code."""
    patterns = list(hidden)
    return {k: v for k, v in environ.items() if not is_hidden(k, v, patterns)}


def hide_from_user_code(hidden: Iterable[str] = ()) -> list[str]:
    """Remove the hidden variables from this process's environment (what its forked
    children inherit) and blank their values in its original environment block; the
    names removed. Call it once the settings are read."""
    patterns = list(hidden)
    names = [k for k, v in os.environ.items() if is_hidden(k, v, patterns)]
    for name in names:
        del os.environ[name]
    if names:
        _blank_block(set(names))
    return names


def blank_environ_block(hidden: Iterable[str] = ()) -> None:
    """Only blank the block: for a process that passes the variables on to workers it
    starts (their values stay in ``os.environ``), while user code may read its /proc."""
    patterns = list(hidden)
    _blank_block({k for k, v in os.environ.items() if is_hidden(k, v, patterns)})


def _blank_block(names: set[str]) -> None:
    """Overwrite ``NAME=value`` entries of the block the kernel reports as
    ``/proc/self/environ`` (set at exec, never changed by ``del os.environ[...]``) with
    ``NAME=****``, so a child reading its parent's or its own file finds no value."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            block = mem.read(end - start)
            offset = 0
            for entry in block.split(b"\0"):
                name, sep, value = entry.partition(b"=")
                if sep and name.decode(errors="replace") in names:
                    mem.seek(start + offset + len(name) + 1)
                    mem.write(b"*" * len(value))
                offset += len(entry) + 1
