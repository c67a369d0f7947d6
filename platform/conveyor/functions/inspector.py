"""Learning a version's schemas without running its code in this process.

The API must not import user code: a module that calls ``os._exit`` at import would take
the API down, one that blocks would freeze hot reload, one that imports torch would put
torch in its memory. :class:`Inspector` runs the same import a worker pool child does
(:func:`~conveyor.functions.loader.load_function`) in a short-lived subprocess, in its own
process group, with a time limit and a memory limit (``RLIMIT_DATA``), without the
platform's secrets in its environment (:mod:`conveyor.environment`), and turns whatever
happened into either the version's :class:`FunctionSchemas` or a
:class:`FunctionLoadError` that says what happened and where.

The child (``python -m conveyor.functions.inspector``) reads its request on stdin and
answers on its original stdout; the handler's own prints go to stderr, whose tail is kept
to explain a crash (``faulthandler`` names the line).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import os
import re
import resource
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from conveyor.environment import user_environment
from conveyor.errors import FunctionLoadError
from conveyor.functions.loader import FunctionSchemas, module_file, version_schemas
from conveyor.functions.manifest import Manifest
from conveyor.functions.registry import FunctionSpec
from conveyor.settings import Settings

STDERR_TAIL = 16 * 1024
CONCURRENT = 8  # inspections at once per process; each is a Python interpreter
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')


@dataclass(frozen=True)
class Limits:
    timeout: float  # seconds
    memory_mb: int
    hidden_env: tuple[str, ...] = ()  # [worker] hidden_env: not for user code either

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        functions = settings.functions
        return cls(
            functions.inspect_timeout, functions.inspect_memory, tuple(settings.worker.hidden_env)
        )


# An environment's interpreter, by id, and the environment variables its processes get.
Interpreter = Callable[[str, Mapping[str, str]], tuple[str, dict[str, str]]]


class Inspects(Protocol):
    """What checks a version and gives its schemas (or a FunctionLoadError)."""

    async def inspect(self, spec: FunctionSpec) -> FunctionSchemas: ...


class Inspector:
    """Runs inspections in subprocesses, at most :data:`CONCURRENT` at once."""

    def __init__(self, limits: Limits, interpreter: Interpreter | None = None) -> None:
        self.limits = limits
        self.interpreter = interpreter  # an environment's Python, by id
        self._slots = asyncio.Semaphore(CONCURRENT)

    async def inspect(self, spec: FunctionSpec) -> FunctionSchemas:
        """Import ``spec`` in a subprocess; its schemas, or a FunctionLoadError."""
        async with self._slots:
            outcome, returncode, stderr = await self._run(spec)
        return explain(spec, self.limits, outcome, returncode, stderr)

    async def _run(self, spec: FunctionSpec) -> tuple[dict[str, Any] | None, int | None, str]:
        request = {
            "name": spec.name,
            "version": spec.version,
            "folder": str(spec.folder),
            "manifest": spec.manifest.model_dump(mode="json"),
            "memory_mb": self.limits.memory_mb,
        }
        python, environ = sys.executable, dict(os.environ)
        if (environment := spec.manifest.environment_id) is not None:
            if self.interpreter is None:
                raise FunctionLoadError(f"{spec.name}: no environments here to import it in")
            python, environ = self.interpreter(environment, environ)  # the code as it will run
        proc = await asyncio.create_subprocess_exec(
            python,
            "-m",
            "conveyor.functions.inspector",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a timeout kills whatever the import started, too
            # never the platform's secrets (user code runs here); never a GPU to read types
            env={
                **user_environment(environ, self.limits.hidden_env),
                "CUDA_VISIBLE_DEVICES": "",
            },
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(json.dumps(request).encode())
        proc.stdin.close()
        try:
            async with asyncio.timeout(self.limits.timeout):
                out, err = await asyncio.gather(proc.stdout.read(), _tail(proc.stderr))
                returncode: int | None = await proc.wait()
        except TimeoutError:
            out, err, returncode = b"", "", None
        finally:
            if proc.returncode is None:  # timed out, or the caller gave up (a newer version)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        try:
            outcome = json.loads(out) if out else None
        except json.JSONDecodeError:
            outcome = None
        return outcome, returncode, err


async def _tail(stream: asyncio.StreamReader) -> str:
    """The last bytes a stream carried: what a crashing import printed, bounded."""
    kept = b""
    while chunk := await stream.read(65536):
        kept = (kept + chunk)[-STDERR_TAIL:]
    return kept.decode(errors="replace")


def explain(
    spec: FunctionSpec,
    limits: Limits,
    outcome: dict[str, Any] | None,
    returncode: int | None,
    stderr: str,
) -> FunctionSchemas:
    """An inspection's schemas, or the error a user can act on."""
    module = module_file(spec.folder, spec.manifest.module)
    if returncode is None:
        raise FunctionLoadError(
            f"importing {module} did not finish within {limits.timeout:g} s ([functions]"
            " inspect_timeout); move slow work (downloads, model loading) into setup()"
        )
    if outcome is not None and "schemas" in outcome:
        return FunctionSchemas.from_json(outcome["schemas"])
    if outcome is not None and outcome.get("memory"):
        raise FunctionLoadError(
            f"importing {module} allocated more than {limits.memory_mb} MiB ([functions]"
            " inspect_memory); load large data in setup(), not at module level"
        )
    if outcome is not None and "exited" in outcome:
        raise FunctionLoadError(_exited(module, outcome["exited"], stderr, spec.folder))
    if outcome is not None and "error" in outcome:
        raise FunctionLoadError(str(outcome["error"]))
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ""
        raise FunctionLoadError(
            f"{module} crashed ({name or f'signal {-returncode}'}) while being imported"
            f"{_where(stderr, spec.folder)}"
        )
    raise FunctionLoadError(_exited(module, returncode, stderr, spec.folder))


def _exited(module: str, code: Any, stderr: str, folder: Path) -> str:
    if code is None or isinstance(code, int):
        status = f"status {code or 0}"
    else:
        status = f"status 1 ({code})"  # sys.exit("message")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = f" ({lines[-1][:300]})" if lines and status == "status 1" else ""
    return (
        f"{module} exited with {status} while being imported{_where(stderr, folder)}{said};"
        " a module must not end its process (a stray exit() or sys.exit() at module level?)"
    )


def _where(stderr: str, folder: Path) -> str:
    """`` (at handler.py:3)`` from the innermost frame in the folder that stderr shows."""
    for match in _FRAME.finditer(stderr):  # faulthandler prints the innermost frame first
        file = Path(match["file"])
        if file.is_relative_to(folder):
            return f" (at {file.relative_to(folder.parent)}:{match['line']})"
    return ""


# -- the child ---------------------------------------------------------------------------


def _child() -> int:
    request = json.loads(sys.stdin.read())
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the handler's prints must not corrupt the answer
    faulthandler.enable()
    limit = int(request["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    manifest = Manifest.model_validate(request["manifest"])
    outcome: dict[str, Any]
    try:
        folder = Path(request["folder"])
        schemas = version_schemas(request["name"], request["version"], folder, manifest)
        outcome = {"schemas": schemas.to_json()}
    except FunctionLoadError as exc:
        cause = exc.__cause__
        if isinstance(cause, SystemExit):
            outcome = {"exited": cause.code}
        elif isinstance(cause, MemoryError):
            outcome = {"memory": True}
        else:
            outcome = {"error": str(exc)}
    except MemoryError:
        outcome = {"memory": True}
    answer.write(json.dumps(outcome, default=str))
    answer.flush()
    os._exit(0)  # no atexit hooks or threads of the user's module may hold us


if __name__ == "__main__":
    raise SystemExit(_child())
