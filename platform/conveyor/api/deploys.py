"""Remote deploy: ``PUT /functions/{name}`` takes a zipped folder, ``GET
/functions/{name}/deployments/{id}`` says how its deployment went.

A deployment is accepted (``202``, with its status URL) once its bundle is read within the
size limit: whatever the bytes hold, they are taken, and unpacking, inspecting and storing
them happens next, in this API process; the outcome (``deployed``, ``unchanged``, or
``failed`` with the problem) is recorded in Redis (:mod:`conveyor.store.deployments`).
``Prefer: wait=<seconds>`` (RFC 7240; ``conveyor deploy`` sends it) answers with the outcome
itself when it comes in time: ``201``/``200`` and the deployment, or the problem (``422``
with the folder's error, ``400`` not a zip of a folder).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from conveyor.api.operations import BUNDLE_MEDIA
from conveyor.api.problems import problem_type, status_of
from conveyor.errors import BundleTooLargeError, ConveyorError, DeploymentNotFoundError
from conveyor.functions.manifest import check_function_name
from conveyor.log import get_logger
from conveyor.results import iso
from conveyor.store.bundle import size_text
from conveyor.store.deployer import Deployer
from conveyor.store.deployments import DeploymentLog

log = get_logger(__name__)

ZIP = "application/zip"
STALE_MARGIN = 120.0  # seconds past the inspect timeout before a running record is stale
_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass
class Deploys:
    """Deployments this API process runs, and the log every process reads."""

    deployer: Deployer
    log: DeploymentLog
    longest: float  # the longest a deployment takes: the inspect timeout and a margin
    running: dict[str, asyncio.Task[tuple[dict[str, Any], int]]] = field(default_factory=dict)

    async def accept(self, name: str, data: bytes, existed: bool) -> str:
        """Record a new deployment of ``data`` and start it; its id."""
        deployment_id = str(uuid.uuid4())
        await self.log.start(deployment_id, name)
        task = asyncio.create_task(
            self._run(deployment_id, name, data, existed), name=f"conveyor-deploy-{name}"
        )
        self.running[deployment_id] = task
        task.add_done_callback(lambda done: self._forget(deployment_id, done))
        return deployment_id

    def _forget(self, deployment_id: str, task: asyncio.Task[Any]) -> None:
        self.running.pop(deployment_id, None)
        if not task.cancelled():
            task.exception()  # recorded in the log; nobody else may ask for it

    async def outcome(self, deployment_id: str, wait: float) -> tuple[dict[str, Any], int] | None:
        """The deployment's body and status once done within ``wait`` seconds (a failure
        raised as the error a synchronous deploy raises), else None."""
        task = self.running.get(deployment_id)
        if task is None:
            return None
        done, _ = await asyncio.wait({task}, timeout=wait)
        return task.result() if done else None

    async def _run(
        self, deployment_id: str, name: str, data: bytes, existed: bool
    ) -> tuple[dict[str, Any], int]:
        try:
            outcome, stored = await self.deployer.push(name, data)
        except ConveyorError as exc:
            status, slug = status_of(exc)
            error = {"status": status, "type": problem_type(slug), "detail": str(exc)}
            await self.log.finish(deployment_id, "failed", error=error)
            raise
        except Exception as exc:
            log.exception("deploy_crashed", function=name, deployment=deployment_id)
            error = {"status": 500, "type": problem_type("internal-error")}
            await self.log.finish(deployment_id, "failed", error={**error, "detail": repr(exc)})
            raise
        body = {
            "function": name,
            "version": stored.version,
            "outcome": outcome,
            "source": stored.source,
            "bundle_bytes": stored.size,
            "files": stored.files,
            "files_bytes": stored.files_bytes,
            "function_url": f"/functions/{name}",
            "versions_url": f"/functions/{name}/versions",
        }
        await self.log.finish(deployment_id, outcome, deployment=body)
        return body, 200 if existed else 201

    async def status(self, name: str, deployment_id: str) -> dict[str, Any]:
        """What ``GET .../deployments/{id}`` answers."""
        found = await self.log.get(deployment_id)
        if found is None or found.get("function") != name:
            raise DeploymentNotFoundError(
                f"no deployment {deployment_id!r} of {name!r} (records are kept for a day)"
            )
        started = float(found["started_at"])
        stale = time.time() - started > self.longest and deployment_id not in self.running
        if found["status"] == "running" and stale:
            found["status"] = "failed"
            found["error"] = {
                "status": 503,
                "type": problem_type("deployment-interrupted"),
                "detail": "the API process deploying it stopped before it finished; deploy again",
            }
        body = {
            "id": deployment_id,
            "function": name,
            "status": found["status"],
            "started_at": iso(started),
            "status_url": status_url(name, deployment_id),
        }
        if "finished_at" in found:
            body["finished_at"] = iso(float(found["finished_at"]))
        for key in ("deployment", "error"):
            if key in found:
                body[key] = found[key]
        return body


def status_url(name: str, deployment_id: str) -> str:
    return f"/functions/{name}/deployments/{deployment_id}"


def prefer_wait(request: Request[Any, Any, Any], longest: float) -> float:
    """``Prefer: wait=N`` (RFC 7240): seconds to wait for the outcome (0 when absent)."""
    found = _WAIT.search(request.headers.get("prefer", ""))
    return min(float(found[1]), longest) if found else 0.0


def _bundle_allowance(limit: int) -> int:
    """Bytes a zip of ``limit`` bytes of files may take on the wire (headers, stored data)."""
    return limit + max(1024 * 1024, limit // 100)


async def read_bundle(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The request's zip, within what a bundle may take: 415 for another media type, 413
    past the size."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in BUNDLE_MEDIA:
        raise HTTPException(
            status_code=415,
            detail=f"send the function folder as {ZIP} (conveyor deploy PATH packs one), not"
            f" {media or 'nothing'}",
        )
    allowance = _bundle_allowance(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > allowance:
            raise BundleTooLargeError(
                f"the bundle is over {size_text(allowance)}; a version's files may add up to"
                f" {size_text(limit)} ([store] max_bundle_bytes; with an S3 file store, [files]"
                " bundles_above lifts it to [files] max_bytes). Or keep large weights out of the"
                " folder: have setup() load them from a path or URL every worker reaches"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def deploy(
    deploys: Deploys, request: Request[Any, Any, Any], name: str, *, existed: bool, limit: int
) -> Response[dict[str, Any]]:
    """``PUT /functions/{name}``: the outcome if ``Prefer: wait`` gets it, else ``202``."""
    check_function_name(name)  # before its name goes into a Location header
    data = await read_bundle(request, limit)
    wait = prefer_wait(request, deploys.longest)
    deployment_id = await deploys.accept(name, data, existed)
    done = await deploys.outcome(deployment_id, wait) if wait else None
    url = status_url(name, deployment_id)
    if done is not None:
        body, status = done
        headers = {"Location": body["function_url"], "Preference-Applied": f"wait={wait:g}"}
        return Response({**body, "deployment_url": url}, status_code=status, headers=headers)
    accepted = {"id": deployment_id, "function": name, "status": "running", "status_url": url}
    return Response(accepted, status_code=202, headers={"Location": url})
