"""A pipeline run's state in Redis, as the API reads it: each step's status and invocations.

The run itself is an invocation record (``pipeline`` set); its state hash
(:func:`keyspace.run`) holds the frozen plan, the input, the step running and, per step
``k``, ``status:k``, ``started:k``, ``finished:k``, ``attempts:k``, ``each:k`` (its
elements, -1 for one invocation) and ``out:k``. Only the scripts write it
(``pipelines/lua``); it expires with the run's record.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis.asyncio as aioredis

from conveyor.db import keyspace
from conveyor.db.connections import broker_errors


def step_ids(run_id: str, step: str, each: int) -> list[str]:
    """The ids of a step's invocations (``each``: its elements; -1: one invocation)."""
    if each < 0:
        return [f"{run_id}.{step}"]
    return [f"{run_id}.{step}.{i}" for i in range(each)]


def steps_view(run_id: str, raw: dict[str, str]) -> list[dict[str, Any]] | None:
    """Each step of a run as its result shows it; None when its state is gone."""
    if "plan" not in raw:
        return None
    plan = json.loads(raw["plan"])
    current = int(raw.get("step", -1))
    shown = []
    for k, step in enumerate(plan["steps"]):
        view: dict[str, Any] = {
            "name": step["name"],
            "function": step["function"],
            "version": step["version"],
            "status": raw.get(f"status:{k}", "pending"),
            "for_each": step.get("each") is not None,
            "invocations": [],
            "attempts": int(raw.get(f"attempts:{k}", 0)),
        }
        if step["kind"] != "pipeline":  # where it waits (a warning names a queue no one serves)
            fields = step["fields"]
            view["queue"] = fields[fields.index("queue") + 1]
        if k <= current and f"each:{k}" in raw:
            view["invocations"] = step_ids(run_id, step["name"], int(raw[f"each:{k}"]))
        for field, key in (("started_at", "started"), ("finished_at", "finished")):
            if f"{key}:{k}" in raw:
                view[field] = float(raw[f"{key}:{k}"])
        shown.append(view)
    return shown


STEP_FIELDS = ("status", "started", "finished", "attempts", "each")
MAX_LOGGED = 1000  # a run's logs read at most this many of its steps' invocations


class Runs:
    """Reads runs' state (the API's side)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def steps(self, run_id: str) -> list[dict[str, Any]] | None:
        """Each step's state, read without its outputs (a fan-in's may be large)."""
        key = keyspace.run(run_id)
        with broker_errors():
            plan, step = await self.redis.hmget(key, ["plan", "step"])
            if plan is None:
                return None
            count = len(json.loads(plan)["steps"])
            names = [f"{part}:{k}" for k in range(count) for part in STEP_FIELDS]
            values = await self.redis.hmget(key, names)
        raw = {n: v for n, v in zip(names, values, strict=True) if v is not None}
        return steps_view(run_id, cast(dict[str, str], {**raw, "plan": plan, "step": step}))

    async def logs(self, run_id: str) -> str:
        """What a run's steps printed or logged, each invocation's under its step's name
        (those that printed nothing left out; a pipeline step's own steps within)."""
        steps = await self.steps(run_id) or []
        named = [(s["name"], i) for s in steps for i in s["invocations"]][:MAX_LOGGED]
        with broker_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, invocation in named:
                    pipe.hmget(keyspace.record(invocation), "logs", "pipeline")
                found = await pipe.execute()
        parts = []
        for (step, invocation), (printed, pipeline) in zip(named, found, strict=True):
            text = await self.logs(invocation) if pipeline else printed
            if text:
                parts.append(f"--- {step} ({invocation})\n{text.rstrip()}\n")
        return "".join(parts)
