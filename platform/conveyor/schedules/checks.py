"""A schedule's input, checked at deploy against its function's input schema (its
``[training]`` handler's, for a schedule with ``training = true``)."""

from __future__ import annotations

import json

import jsonschema_rs

from conveyor.errors import FunctionLoadError
from conveyor.functions.inspector import Inspects
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.manifest import MANIFEST_FILE
from conveyor.functions.registry import FunctionSpec


def check_inputs(spec: FunctionSpec, schemas: FunctionSchemas) -> None:
    """FunctionLoadError naming the schedule whose input its function would refuse."""
    if not spec.manifest.schedules:
        return
    where = str(spec.path / MANIFEST_FILE) if spec.path else f"{spec.name}/{MANIFEST_FILE}"
    validator = jsonschema_rs.validator_for({**schemas.input, "$defs": schemas.defs})
    trainer = None
    if schemas.training is not None:
        trainer = jsonschema_rs.validator_for(schemas.training)
    for index, schedule in enumerate(spec.manifest.schedules):
        check = trainer if schedule.training else validator
        errors = [] if check is None else list(check.iter_errors(schedule.input))
        if errors:
            shown = json.dumps(schedule.input)
            what = "a training input" if schedule.training else "an input"
            raise FunctionLoadError(
                f"{where}: [[schedules]] #{index + 1} input: {shown} is not {what} of"
                f" {spec.name!r}: {errors[0].message}"
            )


class ScheduleInspector:
    """Inspects with ``inspector``, then checks the version's schedules' inputs."""

    def __init__(self, inspector: Inspects) -> None:
        self.inspector = inspector

    async def inspect(self, spec: FunctionSpec) -> FunctionSchemas:
        schemas = await self.inspector.inspect(spec)
        check_inputs(spec, schemas)
        return schemas
