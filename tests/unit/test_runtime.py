from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import InputValidationError, OutputNotSerializableError
from conveyor.functions.registry import Registry
from conveyor.runtime import Runner, encode_output, error_payload, validate_input
from conveyor.settings import QueueSettings
from support import write_function


def load(root: Path, name: str, code: str, handler: str = "handler:run"):  # type: ignore[no-untyped-def]
    write_function(root, name, code, f'[function]\nhandler = "{handler}"\n')
    reg = Registry(root, {"default": QueueSettings()}, import_code=True)
    reg.refresh()
    return reg.serving(name).loaded


def test_class_setup_runs_once_per_version(functions_dir: Path) -> None:
    fn = load(
        functions_dir,
        "counter",
        """
        from pydantic import BaseModel
        class In(BaseModel):
            n: int
        class Out(BaseModel):
            n: int
            setups: int
        SETUPS = []
        class Counter:
            def setup(self):
                SETUPS.append(1)
            def predict(self, item: In) -> Out:
                return Out(n=item.n * 2, setups=len(SETUPS))
        """,
        "handler:Counter",
    )
    runner = Runner()
    assert runner.run(fn, {"n": 1}) == '{"n":2,"setups":1}'
    assert runner.run(fn, {"n": "3"}) == '{"n":6,"setups":1}'


def test_validation_names_the_field(functions_dir: Path) -> None:
    fn = load(
        functions_dir,
        "typed",
        """
        from pydantic import BaseModel
        class In(BaseModel):
            a: int
            b: list[float]
        def run(x: In) -> int:
            return x.a
        """,
    )
    with pytest.raises(InputValidationError) as info:
        validate_input(fn, {"a": "x", "b": [1, "y"]})
    fields = [e["field"] for e in info.value.errors]
    assert fields == ["input.a", "input.b.1"]
    assert "input.a:" in str(info.value)


def test_outputs_are_json_only() -> None:
    assert encode_output({"a": [1, 2.5, None, "x"]}) == '{"a":[1,2.5,null,"x"]}'
    with pytest.raises(OutputNotSerializableError, match="not JSON-serialisable"):
        encode_output(object())
    with pytest.raises(OutputNotSerializableError):
        encode_output(float("nan"))


def test_error_payload() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        payload = error_payload(exc)
    assert payload["type"] == "RuntimeError" and payload["message"] == "boom"
    assert "raise RuntimeError" in payload["traceback"]
