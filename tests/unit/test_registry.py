from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conveyor.errors import FunctionNotFoundError, FunctionUnavailableError
from conveyor.functions.registry import Registry
from tests.support import QUEUES, importing_refresh, load, write_function

MANIFEST = '[function]\nhandler = "handler:run"\n'


def registry(root: Path, import_code: bool = True) -> Registry:
    """Folders checked by importing them (as the inspector does), or on manifests alone."""
    reg = Registry(root, QUEUES)
    if import_code:
        importing_refresh(reg)
    else:
        reg.refresh()
    return reg


def test_function_and_class_handlers_with_input_schema(functions_dir: Path) -> None:
    write_function(functions_dir, "plain", "def run(x: int) -> int:\n    return x\n", MANIFEST)
    write_function(
        functions_dir,
        "model",
        """
        from pydantic import BaseModel
        class In(BaseModel):
            a: float
        class Model:
            def setup(self): ...
            def predict(self, item: In) -> float:
                return item.a
        """,
        '[function]\nhandler = "handler:Model"\n',
    )
    reg = registry(functions_dir)
    plain, model = reg.serving("plain"), reg.serving("model")
    assert plain.schemas and plain.schemas.standalone("input") == {"type": "integer"}
    assert plain.schemas.standalone("output") == {"type": "integer"}
    assert load(functions_dir / "model").is_class
    assert model.schemas and model.schemas.standalone("input")["required"] == ["a"]
    assert model.schemas.standalone("output") == {"type": "number"}
    assert [e.name for e in reg.entries()] == ["model", "plain"]


def test_two_folders_with_handler_py_never_shadow(functions_dir: Path) -> None:
    write_function(functions_dir, "one", "def run(x: int) -> str:\n    return 'one'\n", MANIFEST)
    write_function(functions_dir, "two", "def run(x: int) -> str:\n    return 'two'\n", MANIFEST)
    (functions_dir / "two" / "util.py").write_text("WHO = 'two-util'\n")
    (functions_dir / "two" / "handler.py").write_text(
        "from .util import WHO\ndef run(x: int) -> str:\n    return WHO\n"
    )
    one, two = load(functions_dir / "one"), load(functions_dir / "two")
    assert one.handler(1) == "one" and two.handler(1) == "two-util"
    assert "handler" not in sys.modules


def test_version_is_a_digest_of_the_folder(functions_dir: Path) -> None:
    folder = write_function(functions_dir, "f", "def run(x: int) -> int:\n    return 1\n", MANIFEST)
    reg = registry(functions_dir, import_code=False)
    first = reg.entry("f").spec
    assert reg.refresh() == []  # nothing changed, nothing reloaded
    (folder / "weights.bin").write_bytes(b"\x00" * 10)
    changes = reg.refresh()
    assert [(c.name, c.action) for c in changes] == [("f", "updated")]
    second = reg.entry("f").spec
    assert first and second and first.version != second.version
    assert len(second.version) == 12


def test_broken_version_keeps_last_good_serving(functions_dir: Path) -> None:
    folder = write_function(functions_dir, "f", "def run(x: int) -> int:\n    return 1\n", MANIFEST)
    write_function(functions_dir, "other", "def run(x: int) -> int:\n    return 2\n", MANIFEST)
    reg = registry(functions_dir)
    good = reg.serving("f").spec
    (folder / "function.toml").write_text('[function]\nhandler = "handler:run"\nbogus = 1\n')
    changes = importing_refresh(reg)
    assert [(c.name, c.action) for c in changes] == [("f", "failed")]
    entry = reg.serving("f")  # still serves
    assert entry.status == "error" and "bogus: unknown key" in (entry.error or "")
    assert entry.spec == good
    assert reg.serving("other").status == "ready"
    (folder / "function.toml").write_text(MANIFEST)
    (folder / "handler.py").write_text("def run(x: int) -> int:\n    return 3\n")
    importing_refresh(reg)
    fixed = reg.serving("f")
    assert fixed.status == "ready" and load(folder).handler(0) == 3


def test_broken_new_function_is_listed_not_served(functions_dir: Path) -> None:
    write_function(functions_dir, "bad", "import does_not_exist\n", MANIFEST)
    write_function(functions_dir, "noattr", "x = 1\n", MANIFEST)
    write_function(
        functions_dir, "twoargs", "def run(a: int, b: int) -> int:\n    return a\n", MANIFEST
    )
    (functions_dir / "Upper").mkdir()
    (functions_dir / "nomanifest").mkdir()
    reg = registry(functions_dir)
    errors = {e.name: e.error for e in reg.entries()}
    assert "ModuleNotFoundError: No module named 'does_not_exist'" in (errors["bad"] or "")
    assert "handler.py:1" in (errors["bad"] or "")
    assert "has no attribute 'run'" in (errors["noattr"] or "")
    assert "exactly one input parameter" in (errors["twoargs"] or "")
    assert "folder name must match" in (errors["Upper"] or "")
    assert "function.toml: missing" in (errors["nomanifest"] or "")
    with pytest.raises(FunctionUnavailableError, match="no good version"):
        reg.serving("bad")


def test_removed_folder_is_gone(functions_dir: Path) -> None:
    import shutil

    write_function(functions_dir, "f", "def run(x: int) -> int:\n    return 1\n", MANIFEST)
    reg = registry(functions_dir)
    shutil.rmtree(functions_dir / "f")
    assert [(c.name, c.action) for c in reg.refresh()] == [("f", "removed")]
    with pytest.raises(FunctionNotFoundError):
        reg.entry("f")


def test_output_schemas_from_return_annotations(functions_dir: Path) -> None:
    write_function(
        functions_dir,
        "shared",
        """
        from pydantic import BaseModel, computed_field
        class Point(BaseModel):
            x: float = 0.0
            @computed_field
            def norm(self) -> float:
                return abs(self.x)
        class Model:
            def predict(self, p: Point) -> list[Point]:
                return [p]
        """,
        '[function]\nhandler = "handler:Model"\n',
    )
    write_function(
        functions_dir,
        "batched",
        """
        class Model:
            def predict_batch(self, xs: list[int]) -> list[str]:
                return [str(x) for x in xs]
        """,
        '[function]\nhandler = "handler:Model"\n[batching]\n',
    )
    write_function(functions_dir, "bare", "def run(x):\n    return x\n", MANIFEST)
    write_function(functions_dir, "odd", "def run(x: int) -> type:\n    return int\n", MANIFEST)
    reg = registry(functions_dir)
    shared = reg.serving("shared").schemas
    assert shared is not None
    # One model, two shapes: what it validates and what it dumps (with the computed field).
    inp, out = shared.standalone("input"), shared.standalone("output")
    assert "norm" not in inp["properties"] and "norm" in out["$defs"]["Point-Output"]["properties"]
    assert out["type"] == "array" and out["items"] == {"$ref": "#/$defs/Point-Output"}
    batched = reg.serving("batched").schemas
    assert batched and batched.input == {"type": "integer"} and batched.output == {"type": "string"}
    bare = reg.serving("bare").schemas
    assert bare and bare.input == {} and bare.output == {}
    odd = reg.serving("odd").schemas  # a return type JSON Schema cannot describe: any JSON
    assert odd and "not described" in odd.output["description"]


def test_scan_marks_new_versions_loading_until_checked(functions_dir: Path) -> None:
    folder = write_function(functions_dir, "f", "def run(x: int) -> int:\n    return 1\n", MANIFEST)
    reg = Registry(functions_dir, QUEUES)
    (spec,) = reg.scan().candidates
    assert reg.entry("f").status == "loading"
    with pytest.raises(FunctionUnavailableError, match="being loaded"):
        reg.serving("f")
    assert reg.accept(spec) is not None and reg.entry("f").status == "ready"
    (folder / "handler.py").write_text("def run(x: int) -> int:\n    return 2\n")
    (newer,) = reg.scan().candidates
    assert reg.serving("f").spec == spec  # the good version serves while the next is checked
    (folder / "handler.py").write_text("def run(x: int) -> int:\n    return 3\n")
    (newest,) = reg.scan().candidates
    assert reg.reject(newer, "too late") is None  # superseded: its verdict is ignored
    assert reg.reject(newest, "broken") is not None
    assert reg.entry("f").status == "error" and reg.serving("f").spec == spec
    (folder / "handler.py").write_text("def run(x: int) -> int:\n    return 1\n")
    assert reg.scan().candidates == []  # back to the version that serves: no error left
    assert reg.entry("f").status == "ready" and reg.entry("f").error is None


def test_the_registry_never_imports(functions_dir: Path) -> None:
    write_function(functions_dir, "f", "raise SystemExit('imported!')\n", MANIFEST)
    reg = registry(functions_dir, import_code=False)
    assert reg.entry("f").status == "ready" and reg.entry("f").schemas is None
