"""A run's plan: its pipeline's steps frozen when the run is accepted.

Every step names the version of its function serving (or pinned) at that moment, its
route, the fields of its invocations' records and the template of their message (or, for
a batching function, of its stream item and drain trigger; for a pipeline, that
pipeline's own plan, nested), so a run runs those versions to its end whatever is
deployed meanwhile. ``pipelines/lua/advance`` reads it: it fills in each invocation's id
and input and queues it in the step that ends the step before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conveyor.broker.app import BrokerApp
from conveyor.broker.messages import (
    Route,
    chunk_template,
    message_template,
    trigger_template,
)
from conveyor.db import keyspace
from conveyor.errors import FunctionUnavailableError
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.registry import FunctionSpec
from conveyor.pipelines.steps import Selector, parse_selector, read_steps

MAX_DEPTH = 8  # pipelines within pipelines

Resolve = Callable[[str], tuple[FunctionSpec, FunctionSchemas]]


@dataclass
class Planner:
    """Builds plans for one process: ``resolve`` gives a function's serving version;
    ``window``: a for_each step's chunks under way at first, per worker process of its
    queue (``[map] window``); ``max_fanout``: a for_each step's elements at most
    (``[pipelines] max_fanout``); ``element_window``: the elements of a step over a
    streaming function or a pipeline under way at once (``[pipelines] window``)."""

    app: BrokerApp
    resolve: Resolve
    pending_ttl: int
    window: int = 2
    max_fanout: int = 10_000
    element_window: int = 128

    def plan(
        self,
        spec: FunctionSpec,
        priority: int | None,
        depth: int = 0,
        workers: Callable[[str], int] | None = None,
    ) -> dict[str, Any]:
        """``spec``'s plan, each step at ``priority`` (a request's) unless it names one;
        ``workers``: the live worker processes of a queue (the census), for the windows."""
        manifest = spec.manifest
        steps = read_steps(manifest, f"{spec.name} {spec.version}")
        names = [step.name for step in steps]
        planned = []
        uses: list[str] = []
        for step in steps:
            try:
                inner, schemas = self.resolve(step.function)
            except FunctionUnavailableError as exc:
                raise FunctionUnavailableError(
                    f"pipeline {spec.name!r}, step {step.name!r}: {exc}"
                ) from None
            level = step.section.priority if step.section.priority is not None else priority
            built = {
                "name": step.name,
                "function": inner.name,
                "version": inner.version,
                "input": step.input.plan(names),
                "each": step.for_each.plan(names) if step.for_each else None,
                "skip": step.section.on_error == "skip",
                "in_use": keyspace.in_use(inner.name, inner.version),
            } | self._runs(inner, schemas, level, depth, workers)
            if step.for_each is not None and built["kind"] != "pipeline" and not schemas.streams:
                # its elements run as a map job's items, in chunks: a map job's speed
                built["job"] = self._job(inner, level, workers)
            uses.append(built["in_use"])
            planned.append(built)
        output = manifest.pipeline.output if manifest.pipeline else None
        selected: Selector | None = parse_selector(output) if output else None
        return {
            "keys": keyspace.run_key_parts(),
            "pending_ttl": self.pending_ttl,
            "steps": planned,
            "output": selected.plan(names) if selected else None,
            "uses": uses,
            "max_fanout": self.max_fanout,
            "element_window": self.element_window,
        }

    def _job(
        self, spec: FunctionSpec, priority: int | None, workers: Callable[[str], int] | None
    ) -> dict[str, Any]:
        """How a for_each step's elements run as a map job: its fields, the template of
        its first chunks' messages (the chunks after them are fed as chunks end)."""
        manifest = spec.manifest
        batch = manifest.batching.max_batch_size if manifest.batching else 0
        fields = {
            "function": spec.name,
            "version": spec.version,
            "queue": manifest.target_queue,
            "priority": str(manifest.queue.priority if priority is None else priority),
            "timeout": repr(manifest.limits.timeout),
            "ttl": str(manifest.results.ttl),
            "batch": str(batch),
            "chunks": "0",
            "outstanding": "0",
            "kind": "step",
        }
        size = max(batch, 1)
        queue_list, chunk = chunk_template(self.app, fields, size)
        count = workers(manifest.target_queue) if workers is not None else 0
        return {
            "fields": _flat(fields),
            "queue": queue_list,
            "sent_sequence": keyspace.sent_sequence(queue_list),
            "chunk": chunk,
            "size": size,
            "window": max(1, count) * self.window,
        }

    def _runs(
        self,
        spec: FunctionSpec,
        schemas: FunctionSchemas,
        priority: int | None,
        depth: int,
        workers: Callable[[str], int] | None,
    ) -> dict[str, Any]:
        """How a step's invocations of ``spec`` run: their records' fields and messages."""
        manifest = spec.manifest
        level = manifest.queue.priority if priority is None else priority
        fields = {
            "function": spec.name,
            "version": spec.version,
            "queue": manifest.target_queue,
            "priority": str(level),
            "ttl": str(manifest.results.ttl),
        }
        if manifest.is_pipeline:
            if depth >= MAX_DEPTH:
                raise FunctionUnavailableError(
                    f"pipeline {spec.name!r} is nested more than {MAX_DEPTH} deep"
                )
            fields |= {"pipeline": "1", "stream": "1"}
            inner = self.plan(spec, priority, depth + 1, workers)
            return {"kind": "pipeline", "fields": _flat(fields), "plan": inner}
        if schemas.streams:
            fields["stream"] = "1"
        route = Route.of(spec.name, manifest, level)
        if manifest.batching is not None:
            trigger_list, trigger = trigger_template(self.app, route, spec.version)
            return {
                "kind": "batch",
                "fields": _flat(fields),
                "queue": keyspace.batch_stream(spec.name),
                "armed": keyspace.batch_armed(spec.name),
                "armed_ttl": keyspace.BATCH_ARMED_TTL,
                "trigger_list": trigger_list,
                "trigger": trigger,
            }
        queue_list, message = message_template(self.app, route, spec.version)
        return {
            "kind": "task",
            "fields": _flat(fields),
            "queue": queue_list,
            "sent_sequence": keyspace.sent_sequence(queue_list),
            "message": message,
        }


def input_fanouts(plan: dict[str, Any], value: Any) -> list[tuple[str, int]]:
    """The for_each steps of a run that select their list from its input: each one's
    selector and how many elements it has in ``value`` (known before the run is accepted:
    refused past ``[pipelines] max_fanout``, counted against its key's limits)."""
    found = []
    for step in plan["steps"]:
        each = step.get("each")
        if not each or each.get("sel") != "input":
            continue
        node = _selected(value, each["path"])
        if isinstance(node, list):
            found.append((str(each["text"]), len(node)))
    return found


def _selected(value: Any, path: list[str | int]) -> Any:
    """What a selector's path picks out of ``value`` (None where it picks nothing)."""
    node = value
    for part in path:
        if isinstance(node, list) and isinstance(part, int):
            if not -len(node) <= part < len(node):
                return None
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str):
            if part not in node:
                return None
            node = node[part]
        else:
            return None
    return node


def count_against(plan: dict[str, Any], key: dict[str, str]) -> dict[str, Any]:
    """``plan`` with its API key's counters (``key``: its daily and rate keys, its rate's
    emission): each for_each step counts its elements against them as it starts them,
    but for those over the run's own input, counted when the run was accepted."""
    plan["key"] = key | {"counted_input": True}
    nested = [step["plan"] for step in plan["steps"] if step.get("kind") == "pipeline"]
    while nested:
        inner = nested.pop()
        inner["key"] = key | {"counted_input": False}
        nested += [step["plan"] for step in inner["steps"] if step.get("kind") == "pipeline"]
    return plan


def _flat(fields: dict[str, str]) -> list[str]:
    return [value for pair in fields.items() for value in pair]


def encoded(plan: dict[str, Any]) -> str:
    return json.dumps(plan, separators=(",", ":"))
