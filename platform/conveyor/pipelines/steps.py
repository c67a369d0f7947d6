"""A pipeline's ``[[steps]]``: selectors, input templates, and the checks made at deploy.

A selector is a string starting with ``$.``: ``$.input`` (the run's input),
``$.steps.<name>.output`` (an earlier step's output: for a ``for_each`` step, the list of
its outputs in order) or, inside a ``for_each`` step, ``$.item`` (this element) and
``$.index`` (its position); each followed by ``.key`` and ``[n]`` parts (``[-1]``: the
last). A step's ``input`` is a selector, a table (an object whose values are built the
same way), an array (likewise), or any other value (a literal). The checks find what a
run could only fail on later: an unknown function or step, a step referring to itself or
a later one, a path the schema says cannot exist, a pipeline that contains itself.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import FunctionLoadError
from conveyor.functions.loader import DEFS_REF, FunctionSchemas
from conveyor.functions.manifest import Manifest, StepSection

PathPart = str | int
_PART = re.compile(r"\.([^.\[\]]+)|\[(-?\d+)\]")
_STEP = re.compile(r"^\$\.steps\.([^.\[\]]+)\.output")


@dataclass(frozen=True)
class Selector:
    """``$.input...``, ``$.item...``, ``$.index`` or ``$.steps.<name>.output...``."""

    text: str
    source: str  # "input", "item", "index" or "step"
    step: str | None  # the step named, for "step"
    path: tuple[PathPart, ...]

    def plan(self, steps: Sequence[str]) -> dict[str, Any]:
        """As the run's script reads it: the step by its position (0-based)."""
        where: Any = self.source if self.step is None else steps.index(self.step)
        return {"sel": where, "path": list(self.path), "text": self.text}


class SelectorError(ValueError):
    pass


def parse_selector(text: str) -> Selector:
    """A selector, or :class:`SelectorError` saying what one looks like."""
    rest: str
    step = None
    if text.startswith("$.input"):
        source, rest = "input", text[len("$.input") :]
    elif text.startswith("$.item"):
        source, rest = "item", text[len("$.item") :]
    elif text == "$.index":
        source, rest = "index", ""
    elif match := _STEP.match(text):
        source, step, rest = "step", match.group(1), text[match.end() :]
    else:
        raise SelectorError(
            f"{text!r}: a selector starts with $.input, $.steps.<name>.output, $.item or $.index"
        )
    path: list[PathPart] = []
    at = 0
    while at < len(rest):
        part = _PART.match(rest, at)
        if part is None:
            raise SelectorError(
                f"{text!r}: cannot read {rest[at:]!r}; a path is .key and [n] parts"
            )
        path.append(part.group(1) if part.group(1) is not None else int(part.group(2)))
        at = part.end()
    return Selector(text, source, step, tuple(path))


# -- input templates -------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A step's input as written: a selector, an object or array of templates, a literal."""

    kind: str  # "sel", "obj", "arr", "lit"
    selector: Selector | None = None
    keys: tuple[str, ...] = ()
    items: tuple[Template, ...] = ()
    literal: str = ""  # JSON

    def selectors(self) -> list[Selector]:
        if self.selector is not None:
            return [self.selector]
        return [s for item in self.items for s in item.selectors()]

    def plan(self, steps: Sequence[str]) -> dict[str, Any]:
        if self.kind == "sel":
            assert self.selector is not None
            return self.selector.plan(steps)
        if self.kind == "lit":
            return {"lit": self.literal}
        built: dict[str, Any] = {"items": [item.plan(steps) for item in self.items]}
        if self.kind == "obj":
            built["keys"] = [json.dumps(k) for k in self.keys]
        return built


def template(value: Any, where: str) -> Template:
    """``value`` (from TOML) as a template; SelectorError names ``where`` it went wrong."""
    if isinstance(value, str) and value.startswith("$."):
        try:
            return Template("sel", selector=parse_selector(value))
        except SelectorError as exc:
            raise SelectorError(f"{where}: {exc}") from None
    if isinstance(value, dict):
        keys = tuple(value)
        items = tuple(template(value[k], f"{where}.{k}") for k in keys)
        return Template("obj", keys=keys, items=items)
    if isinstance(value, list):
        items = tuple(template(v, f"{where}[{i}]") for i, v in enumerate(value))
        return Template("arr", items=items)
    if isinstance(value, datetime.date | datetime.time):
        raise SelectorError(f"{where}: a TOML date or time is not JSON; write it as a string")
    return Template("lit", literal=json.dumps(value))


@dataclass(frozen=True)
class Step:
    """One step, read: its input template and its fan-out."""

    index: int
    section: StepSection
    input: Template
    for_each: Selector | None

    @property
    def name(self) -> str:
        return self.section.name

    @property
    def function(self) -> str:
        return self.section.function


def read_steps(manifest: Manifest, where: str) -> list[Step]:
    """The steps of a pipeline's manifest with their defaults filled in (a step's input:
    the previous step's output, the run's input for the first, ``$.item`` for a
    ``for_each`` step); FunctionLoadError for a malformed selector or a name used twice."""
    assert manifest.steps is not None
    steps: list[Step] = []
    seen: set[str] = set()
    for i, section in enumerate(manifest.steps):
        at = f"{where}: [[steps]] {section.name!r}"
        if section.name in seen:
            raise FunctionLoadError(f"{at}: the name {section.name!r} is used by another step")
        seen.add(section.name)
        try:
            for_each = parse_selector(section.for_each) if section.for_each else None
            if section.input is not None:
                built = template(section.input, "input")
            elif for_each is not None:
                built = template("$.item", "input")
            elif i == 0:
                built = template("$.input", "input")
            else:
                built = template(f"$.steps.{manifest.steps[i - 1].name}.output", "input")
        except SelectorError as exc:
            raise FunctionLoadError(f"{at}: {exc}") from None
        steps.append(Step(i, section, built, for_each))
    return steps


# -- checks at deploy ----------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """A deployed function as a pipeline's check sees it: its schemas, and for a pipeline
    the functions its steps name (to find a pipeline that contains itself)."""

    schemas: FunctionSchemas
    steps: tuple[str, ...] = ()


Lookup = Callable[[str], Known | None]


@dataclass
class _Checker:
    name: str
    where: str
    steps: list[Step]
    known: dict[str, Known]
    input_schema: dict[str, Any] | None  # [pipeline] input_schema, if declared
    selected: Selector | None  # [pipeline] output, if declared
    defs: dict[str, Any] = field(default_factory=dict)

    def fail(self, step: Step | None, reason: str) -> FunctionLoadError:
        at = f"{self.where}: [[steps]] {step.name!r}: " if step is not None else f"{self.where}: "
        return FunctionLoadError(at + reason)

    def source_schema(self, sel: Selector, step: Step | None) -> dict[str, Any]:
        """What the selector's root refers to, as a schema ({} when not known)."""
        if sel.source == "input":
            return self.pipeline_input()
        if sel.source == "index":
            return {"type": "integer"}
        if sel.source == "item":
            assert step is not None and step.for_each is not None
            each = self.resolve(step.for_each, step)
            items = each.get("items")
            return items if isinstance(items, dict) else {}
        names = [s.name for s in self.steps]
        assert sel.step is not None
        if sel.step not in names:
            raise self.fail(step, f"{sel.text}: there is no step named {sel.step!r}")
        other = self.steps[names.index(sel.step)]
        if step is not None and other.index >= step.index:
            later = "itself" if other.index == step.index else f"a later step ({sel.step!r})"
            raise self.fail(step, f"{sel.text}: a step can only use earlier steps, not {later}")
        return self.step_output(other)

    def step_output(self, step: Step) -> dict[str, Any]:
        output = self.schemas_of(step).output
        single = self.localise(step.function, output)
        return {"type": "array", "items": single} if step.for_each is not None else single

    def pipeline_input(self) -> dict[str, Any]:
        """``[pipeline] input_schema``; else the first step's input when it takes the
        run's input whole; else an object with the keys its steps select from ``$.input``,
        each as the function it goes to takes it ({} where that is not known)."""
        if self.input_schema is not None:
            return self.input_schema
        first = self.steps[0]
        sel = first.input.selector
        if first.for_each is None and sel is not None and sel.source == "input" and not sel.path:
            return self.localise(first.function, self.schemas_of(first).input)
        keys: dict[str, dict[str, Any]] = {}
        for step in self.steps:
            target = self.localise(step.function, self.schemas_of(step).input)
            for placed, at in _placed(step.input, target, self.defs):
                used, schema = placed, at
                if placed.source == "item" and step.for_each is not None:
                    used, schema = step.for_each, _list_of(at, placed)
                if used.source != "input":
                    continue
                if not used.path or not isinstance(used.path[0], str):
                    return {}  # the whole input, or an index of it: nothing to say
                key = used.path[0]
                known = schema if len(used.path) == 1 else {}
                keys[key] = known if keys.get(key, {}) == {} else keys[key]
        if not keys:
            return {}
        return {"type": "object", "properties": keys, "required": sorted(keys)}

    def schemas_of(self, step: Step) -> FunctionSchemas:
        return self.known[step.function].schemas

    def localise(self, function: str, schema: dict[str, Any]) -> dict[str, Any]:
        """``schema`` of ``function`` with its definitions merged into this pipeline's (a
        name two functions define differently is prefixed with the function's)."""
        defs = self.known[function].schemas.defs
        renames: dict[str, str] = {}
        for def_name, body in defs.items():
            if def_name in self.defs and self.defs[def_name] != body:
                renames[def_name] = f"{function}.{def_name}"
        for def_name, body in defs.items():
            self.defs[renames.get(def_name, def_name)] = _renamed(body, renames)
        return _renamed(schema, renames)  # type: ignore[no-any-return]

    def resolve(self, sel: Selector, step: Step | None) -> dict[str, Any]:
        """The schema of what ``sel`` selects ({} when not known), or why it cannot be."""
        schema = self.source_schema(sel, step)
        for part in sel.path:
            try:
                schema = _child(schema, part, self.defs)
            except SelectorError as exc:
                raise self.fail(step, f"{sel.text}: {exc}") from None
        return schema

    def check(self, lookup: Lookup) -> FunctionSchemas:
        """Every step against the functions it names; the pipeline's schemas."""
        for step in self.steps:
            if step.function == self.name:
                raise self.fail(
                    step, f"function {self.name!r} is this pipeline: it would run itself"
                )
            found = lookup(step.function)
            if found is None:
                raise self.fail(
                    step, f"function {step.function!r} is not deployed (or has no good version)"
                )
            self.known[step.function] = found
            loop = self.contains(step.function, lookup, [self.name, step.function])
            if loop:
                raise self.fail(step, f"pipelines would contain themselves: {' -> '.join(loop)}")
        for step in self.steps:
            if step.for_each is not None:
                each = self.resolve(step.for_each, step)
                if each.get("type") not in (None, "array") and "$ref" not in each:
                    raise self.fail(
                        step,
                        f"for_each = {step.for_each.text!r} selects {_a(each['type'])}, not a list",
                    )
            for sel in step.input.selectors():
                if sel.source in ("item", "index") and step.for_each is None:
                    raise self.fail(step, f"{sel.text}: only a for_each step has an item")
                self.resolve(sel, step)
        inputs = self.pipeline_input()
        output = self.output_schema()
        return FunctionSchemas(inputs, output, dict(self.defs))

    def output_schema(self) -> dict[str, Any]:
        if self.selected is None:
            return self.step_output(self.steps[-1])
        if self.selected.source in ("item", "index"):
            raise self.fail(None, f"[pipeline] output: {self.selected.text}: there is no item")
        return self.resolve(self.selected, None)

    def contains(self, function: str, lookup: Lookup, trail: list[str]) -> list[str]:
        """The trail to this pipeline again through ``function``'s steps, or []."""
        found = self.known.get(function) or lookup(function)
        for inner in found.steps if found else ():
            if inner == self.name:
                return [*trail, inner]
            if inner in trail or len(trail) > 32:
                continue
            loop = self.contains(inner, lookup, [*trail, inner])
            if loop:
                return loop
        return []


def check_pipeline(
    name: str, manifest: Manifest, where: str, lookup: Lookup, input_schema: dict[str, Any] | None
) -> FunctionSchemas:
    """The schemas of pipeline ``name`` (its manifest at ``where``), or FunctionLoadError
    naming the file, the step and the reason. ``lookup``: the deployed functions."""
    steps = read_steps(manifest, where)
    output = manifest.pipeline.output if manifest.pipeline else None
    selected = None
    if output is not None:
        try:
            selected = parse_selector(output)
        except SelectorError as exc:
            raise FunctionLoadError(f"{where}: [pipeline] output: {exc}") from None
    checker = _Checker(name, where, steps, {}, input_schema, selected)
    return checker.check(lookup)


def _placed(
    built: Template, target: dict[str, Any], defs: Mapping[str, Any]
) -> list[tuple[Selector, dict[str, Any]]]:
    """Each selector of a template, with the schema of the place it fills in ``target``."""
    if built.selector is not None:
        return [(built.selector, target)]
    found = []
    for i, item in enumerate(built.items):
        part: PathPart = built.keys[i] if built.kind == "obj" else i
        try:
            inner = _child(target, part, defs)
        except SelectorError:
            inner = {}
        found += _placed(item, inner, defs)
    return found


def _list_of(schema: dict[str, Any], item: Selector) -> dict[str, Any]:
    """A list whose elements' ``item`` path is ``schema`` (only the whole is known)."""
    return {"type": "array", "items": schema} if not item.path else {"type": "array"}


def _show(part: PathPart) -> str:
    return f"[{part}]" if isinstance(part, int) else f".{part}"


def _renamed(node: Any, renames: Mapping[str, str]) -> Any:
    if not renames:
        return node
    if isinstance(node, dict):
        ref = node.get("$ref")
        out = {k: _renamed(v, renames) for k, v in node.items()}
        if isinstance(ref, str) and ref.startswith(DEFS_REF):
            name = ref.removeprefix(DEFS_REF)
            out["$ref"] = DEFS_REF + renames.get(name, name)
        return out
    if isinstance(node, list):
        return [_renamed(v, renames) for v in node]
    return node


def _child(schema: dict[str, Any], part: PathPart, defs: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of ``part`` of a value of ``schema``; {} when the schema does not say;
    SelectorError when it says there is no such part."""
    for _ in range(64):  # follow $ref chains
        ref = schema.get("$ref")
        if not (isinstance(ref, str) and ref.startswith(DEFS_REF)):
            break
        schema = defs.get(ref.removeprefix(DEFS_REF), {})
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list):
        return _any_child(branches, part, defs)
    if isinstance(part, int):
        return _item(schema, part)
    return _property(schema, part)


def _any_child(branches: list[Any], part: PathPart, defs: Mapping[str, Any]) -> dict[str, Any]:
    """A part of one of several schemas (``anyOf``): the first that has it."""
    reasons = []
    for branch in branches:
        if isinstance(branch, dict) and branch.get("type") != "null":
            try:
                return _child(branch, part, defs)
            except SelectorError as exc:
                reasons.append(str(exc))
    if reasons:
        raise SelectorError(reasons[0])
    return {}


def _item(schema: dict[str, Any], index: int) -> dict[str, Any]:
    kind = schema.get("type")
    if kind not in (None, "array"):
        raise SelectorError(f"[{index}] indexes a list, but this is {_a(kind)}")
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list) and -len(prefix) <= index < len(prefix):
        found = prefix[index]
        return found if isinstance(found, dict) else {}
    items = schema.get("items")
    return items if isinstance(items, dict) else {}


def _property(schema: dict[str, Any], key: str) -> dict[str, Any]:
    kind = schema.get("type")
    if kind not in (None, "object"):
        raise SelectorError(f".{key} reads a key of an object, but this is {_a(kind)}")
    properties = schema.get("properties")
    if isinstance(properties, dict) and key in properties:
        found = properties[key]
        return found if isinstance(found, dict) else {}
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        return extra
    if isinstance(properties, dict) and extra is not True:
        known = ", ".join(sorted(properties)) or "none"
        raise SelectorError(f".{key}: no such key (the schema has: {known})")
    return {}


def _a(kind: Any) -> str:
    return {"array": "a list", "object": "an object", "integer": "an integer"}.get(
        str(kind), f"a {kind}"
    )
