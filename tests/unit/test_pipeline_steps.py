"""A pipeline's steps read and checked as at deploy: every error names the file, the step
and the reason; the pipeline's schemas are its steps'."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import FunctionLoadError, ManifestError
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.manifest import Manifest, parse_manifest
from conveyor.pipelines.steps import Known, SelectorError, check_pipeline, parse_selector
from conveyor.settings import QueueSettings

PARTS = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": {"type": "integer"}},
        "label": {"type": "string"},
        "box": {"$ref": "#/$defs/Box"},
    },
}
KNOWN = {
    "split": Known(
        FunctionSchemas(
            {"type": "integer"},
            PARTS,
            {"Box": {"type": "object", "properties": {"w": {"type": "number"}}}},
        )
    ),
    "inc": Known(FunctionSchemas({"type": "integer"}, {"type": "integer"}, {})),
    "any": Known(FunctionSchemas({}, {}, {})),
    "total": Known(
        FunctionSchemas(
            {"type": "object"},
            {"$ref": "#/$defs/Box"},
            {"Box": {"type": "object", "properties": {"sum": {"type": "integer"}}}},
        )
    ),
    "inner": Known(FunctionSchemas({}, {}, {}), steps=("other",)),
    "other": Known(FunctionSchemas({}, {}, {}), steps=("pipe",)),
}

GOOD = """
[[steps]]
name = "split"
function = "split"

[[steps]]
name = "each"
function = "inc"
for_each = "$.steps.split.output.items"

[[steps]]
name = "total"
function = "total"
input = { values = "$.steps.each.output", label = "$.steps.split.output.label", w = "$.steps.split.output.box.w", top = 3 }
"""


def manifest(text: str) -> Manifest:
    return Manifest.model_validate(tomllib.loads(text))


def check(text: str, input_schema: dict[str, Any] | None = None) -> FunctionSchemas:
    return check_pipeline("pipe", manifest(text), "pipe/function.toml", KNOWN.get, input_schema)


def test_a_good_pipeline_has_its_steps_schemas() -> None:
    schemas = check(GOOD)
    assert schemas.input == {"type": "integer"}
    # two functions define Box differently: the second is renamed
    assert schemas.output == {"$ref": "#/$defs/total.Box"}
    assert set(schemas.defs) == {"Box", "total.Box"}
    assert schemas.defs["total.Box"]["properties"] == {"sum": {"type": "integer"}}


def test_the_output_can_be_selected_and_a_fan_out_is_a_list() -> None:
    text = GOOD + '\n[pipeline]\noutput = "$.steps.each.output"\n'
    schemas = check(text)
    assert schemas.output == {"type": "array", "items": {"type": "integer"}}
    declared = check(GOOD, {"type": "object", "properties": {"n": {"type": "integer"}}})
    assert declared.input["properties"] == {"n": {"type": "integer"}}


STEP = '\n[[steps]]\nname = "{name}"\nfunction = "{function}"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (STEP.format(name="a", function="missing"), r"'a': function 'missing' is not deployed"),
        (STEP.format(name="a", function="pipe"), r"'a': function 'pipe' is this pipeline"),
        (
            STEP.format(name="a", function="inner"),
            r"'a': pipelines would contain themselves: pipe -> inner -> other -> pipe",
        ),
        (
            STEP.format(name="a", function="inc") + STEP.format(name="a", function="inc"),
            r"\[\[steps\]\] 'a': the name 'a' is used by another step",
        ),
        (
            STEP.format(name="a", function="inc") + 'input = "$.steps.nope.output"\n',
            r"'a': \$.steps.nope.output: there is no step named 'nope'",
        ),
        (
            STEP.format(name="a", function="inc")
            + 'input = "$.steps.b.output"\n'
            + STEP.format(name="b", function="inc"),
            r"'a': \$.steps.b.output: a step can only use earlier steps, not a later step",
        ),
        (
            STEP.format(name="a", function="inc") + 'input = "$.steps.a.output"\n',
            r"not itself",
        ),
        (
            STEP.format(name="a", function="split")
            + STEP.format(name="b", function="inc")
            + 'input = "$.steps.a.output.crops"\n',
            r"'b': \$.steps.a.output.crops: .crops: no such key \(the schema has: box, items,"
            r" label\)",
        ),
        (
            STEP.format(name="a", function="split")
            + STEP.format(name="b", function="inc")
            + 'input = "$.steps.a.output.label.x"\n',
            r"\.x reads a key of an object, but this is a string",
        ),
        (
            STEP.format(name="a", function="split")
            + STEP.format(name="b", function="inc")
            + 'input = "$.steps.a.output.box.h"\n',
            r"\.h: no such key \(the schema has: w\)",
        ),
        (
            STEP.format(name="a", function="split")
            + STEP.format(name="b", function="inc")
            + 'for_each = "$.steps.a.output.label"\n',
            r"'b': for_each = '\$.steps.a.output.label' selects a string, not a list",
        ),
        (
            STEP.format(name="a", function="inc") + 'input = "$.item"\n',
            r"'a': \$.item: only a for_each step has an item",
        ),
        (
            STEP.format(name="a", function="inc")
            + STEP.format(name="b", function="inc")
            + 'input = "$.input[0]"\n',
            r"\[0\] indexes a list, but this is an integer",
        ),
        (
            STEP.format(name="a", function="inc") + 'input = "$.output"\n',
            r"a selector starts with \$.input, \$.steps.<name>.output",
        ),
        (
            STEP.format(name="a", function="inc") + '[pipeline]\noutput = "$.steps.z.output"\n',
            r"there is no step named 'z'",
        ),
    ],
)
def test_each_deploy_time_error_names_the_file_the_step_and_the_reason(
    text: str, expected: str
) -> None:
    with pytest.raises(FunctionLoadError, match=expected) as info:
        check(text)
    assert str(info.value).startswith("pipe/function.toml: ")


def test_a_schema_that_does_not_say_lets_any_path_through() -> None:
    text = STEP.format(name="a", function="any") + STEP.format(name="b", function="inc")
    text += 'input = { x = "$.steps.a.output.whatever[3].deep", n = 1, list = ["$.input", 2] }\n'
    assert check(text).output == {"type": "integer"}


def test_selectors() -> None:
    sel = parse_selector("$.steps.detect.output.boxes[0].w")
    assert (sel.source, sel.step, sel.path) == ("step", "detect", ("boxes", 0, "w"))
    assert parse_selector("$.input[-1]").path == (-1,)
    assert parse_selector("$.item").source == "item"
    with pytest.raises(SelectorError, match="cannot read '\\[x\\]'"):
        parse_selector("$.input[x]")


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "function.toml").write_text(text)
    return tmp_path / "function.toml"


QUEUES = {"default": QueueSettings()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[function]\nhandler = "h:run"\n' + STEP.format(name="a", function="inc"),
            r"\[function\] handler and \[\[steps\]\] are both set",
        ),
        ("steps = []\n", r"\[\[steps\]\] is empty"),
        (
            STEP.format(name="a", function="inc") + "[batching]\nmax_batch_size = 2\n",
            r"\[batching\] does not apply to a pipeline",
        ),
        (STEP.format(name="A b", function="inc"), r"\[\[steps\]\] #1 name: String should match"),
        (STEP.format(name="a", function="inc") + "on_error = 'ignore'\n", r"#1 on_error"),
        (
            '[function]\nhandler = "h:run"\n[pipeline]\noutput = "$.input"\n',
            r"\[pipeline\] is only for a pipeline",
        ),
    ],
)
def test_manifest_errors_of_a_pipeline(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ManifestError, match=expected):
        parse_manifest(write(tmp_path, text), QUEUES)


def test_an_input_the_steps_select_from_is_typed_by_where_it_goes() -> None:
    text = (
        STEP.format(name="a", function="total")
        + 'for_each = "$.input.boxes"\ninput = { w = "$.item", n = "$.input.n" }\n'
        + STEP.format(name="b", function="inc")
        + 'input = "$.input.count"\n'
    )
    schemas = check(text)
    assert schemas.input["required"] == ["boxes", "count", "n"]
    assert schemas.input["properties"]["count"] == {"type": "integer"}
    assert schemas.input["properties"]["boxes"] == {"type": "array", "items": {}}
