"""Import a function folder as a package of its own, never by bare module name.

Each (function, version) becomes a private package ``conveyor_fn.<name>.v<version>`` whose
``__path__`` is the folder, so two folders may both contain ``handler.py`` and a module in
the folder reaches its siblings with relative imports (``from .utils import x``).

Only worker pool children and the API's inspector subprocess (:mod:`.inspector`) call
:func:`load_function`: user code never runs in the API process.
"""

from __future__ import annotations

import collections.abc
import importlib
import importlib.util
import inspect
import json
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter

from conveyor.errors import FunctionLoadError
from conveyor.functions.manifest import Manifest
from conveyor.handler_types import FILE_MARK, TextStream, mark_paths

PACKAGE_ROOT = "conveyor_fn"
DEFS_REF = "#/$defs/"


@dataclass(frozen=True)
class FunctionSchemas:
    """A version's input and output JSON Schemas (2020-12, as pydantic writes them).

    Both may refer to ``defs`` as ``#/$defs/<name>``; a model used by both sides under
    different shapes gets two names (``X-Input``, ``X-Output``).
    """

    input: dict[str, Any]
    output: dict[str, Any]
    defs: dict[str, Any]
    stream: dict[str, Any] | None = None  # a streaming handler's chunk; None: no stream
    training: dict[str, Any] | None = None  # [training]'s input, standalone; None: none

    def standalone(self, side: Literal["input", "output", "stream"]) -> dict[str, Any]:
        """One side's schema on its own, with the definitions it uses under ``$defs``."""
        schema = {"input": self.input, "output": self.output, "stream": self.stream}[side] or {}
        ref = schema.get("$ref")
        if len(schema) == 1 and isinstance(ref, str) and ref.startswith(DEFS_REF):
            schema = self.defs[ref.removeprefix(DEFS_REF)]  # a bare model: show it inline
        used = referenced(schema, self.defs)
        return {**schema, "$defs": {n: self.defs[n] for n in sorted(used)}} if used else schema

    def for_training(self) -> FunctionSchemas:
        """The ``[training]`` handler's input as a version's schemas (its file fields are
        taken as an invocation's are)."""
        training = dict(self.training or {})
        defs = training.pop("$defs", {})
        return FunctionSchemas(training, {}, defs)

    @cached_property
    def takes_files(self) -> bool:
        """Whether the input has a file field (worked out once per version)."""
        return FILE_MARK in json.dumps([self.input, self.defs])

    @property
    def streams(self) -> bool:
        return self.stream is not None

    def to_json(self) -> str:
        return json.dumps(
            {
                "input": self.input,
                "output": self.output,
                "defs": self.defs,
                "stream": self.stream,
                "training": self.training,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FunctionSchemas:
        data = json.loads(text)
        return cls(
            data["input"], data["output"], data["defs"], data.get("stream"), data.get("training")
        )


def referenced(schema: Any, defs: dict[str, Any]) -> set[str]:
    """Names of the definitions ``schema`` refers to, directly or through others."""
    found: set[str] = set()
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(DEFS_REF):
                name = ref.removeprefix(DEFS_REF)
                if name not in found and name in defs:
                    found.add(name)
                    todo.append(defs[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found


@dataclass(frozen=True)
class Streaming:
    """How a streaming handler's chunks become its output: a list of them, or (``text``,
    ``-> TextStream``) their joined text."""

    chunk_type: Any
    text: bool = False


@dataclass(frozen=True)
class LoadedFunction:
    """A function's code, imported: the handler and the types it declares."""

    name: str
    version: str
    manifest: Manifest
    handler: Any
    input_type: Any
    input_adapter: TypeAdapter[Any]
    output_type: Any
    package: str
    folder: Path | None = None  # where its files are (tracebacks show paths inside it)
    streaming: Streaming | None = None  # a generator: it streams its output

    @property
    def is_class(self) -> bool:
        return inspect.isclass(self.handler)

    def schemas(self) -> FunctionSchemas:
        """The input schema (what the handler validates), the output schema (what its
        return annotation dumps to) and a streaming handler's chunk schema; a type pydantic
        cannot describe is any JSON."""
        output, note = _described(self.output_type)
        sides = [("input", "validation", self.input_adapter), ("output", "serialization", output)]
        if self.streaming is not None:
            sides.append(("stream", "serialization", _described(self.streaming.chunk_type)[0]))
        mapping, defs = TypeAdapter.json_schemas(sides)  # type: ignore[arg-type]
        out = mapping[("output", "serialization")]
        if note is not None:
            out = {**out, "description": f"the return annotation is {note}"}
        chunk = mapping.get(("stream", "serialization"))
        return FunctionSchemas(
            mark_paths(dict(mapping[("input", "validation")])),
            mark_paths(dict(out)),
            mark_paths(dict(defs.get("$defs", {}))),
            None if chunk is None else mark_paths(dict(chunk)),
        )


def _described(kind: Any) -> tuple[TypeAdapter[Any], str | None]:
    """An adapter for ``kind``, or for any JSON with a note when pydantic cannot describe it."""
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(kind)
        adapter.json_schema(mode="serialization")
        return adapter, None
    except Exception as exc:
        return TypeAdapter(Any), f"not described: {exc}".splitlines()[0]


def module_file(folder: Path, module: str) -> str:
    """``<folder>/<module>.py`` as users name it in messages: from the functions root."""
    return f"{folder.name}/{module.replace('.', '/')}.py"


def package_name(name: str, version: str) -> str:
    return f"{PACKAGE_ROOT}.{name.replace('-', '_')}.v{version}"


def load_function(name: str, version: str, folder: Path, manifest: Manifest) -> LoadedFunction:
    """Import ``folder``'s handler module and check the handler contract."""
    package = package_name(name, version)
    module = _import(package, folder, manifest.module)
    handler = getattr(module, manifest.attribute, None)
    where = module_file(folder, manifest.module)
    if handler is None:
        unload(package)
        raise FunctionLoadError(f"{where}: has no attribute {manifest.attribute!r}")
    try:
        streaming = None
        if manifest.batching:
            input_type, output_type = _batch_types(handler)
        else:
            input_type, output_type = _types(handler)
            streaming = _streaming(handler, output_type)
            if streaming is not None:
                output_type = str if streaming.text else _list_of(streaming.chunk_type)
        adapter: TypeAdapter[Any] = TypeAdapter(input_type)
        adapter.json_schema()
    except FunctionLoadError as exc:
        unload(package)
        raise FunctionLoadError(f"{where}: {exc}") from None
    except Exception as exc:  # pydantic cannot build a schema for the annotation
        unload(package)
        raise FunctionLoadError(f"{where}: input annotation is not a usable schema: {exc}") from exc
    return LoadedFunction(
        name,
        version,
        manifest,
        handler,
        input_type,
        adapter,
        output_type,
        package,
        folder,
        streaming,
    )


def version_schemas(name: str, version: str, folder: Path, manifest: Manifest) -> FunctionSchemas:
    """A version's schemas, its ``[training]`` handler's input included: what the
    inspector hands the API (each handler imported and checked)."""
    schemas = load_function(name, version, folder, manifest).schemas()
    if manifest.training is not None:
        trainer = load_function(name, version, folder, manifest.for_training())
        schemas = replace(schemas, training=trainer.schemas().standalone("input"))
    return schemas


def unload(package: str) -> None:
    """Forget every module of a loaded version so its memory can be reclaimed."""
    for mod in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[mod]


def _ensure_parent(name: str) -> None:
    parent, _, _ = name.rpartition(".")
    if parent and parent not in sys.modules:
        _ensure_parent(parent)
        module = ModuleType(parent)
        module.__path__ = []
        sys.modules[parent] = module


def _import(package: str, folder: Path, module_name: str) -> ModuleType:
    _ensure_parent(package)
    init = folder / "__init__.py"
    spec: ModuleSpec | None
    if init.exists():
        spec = importlib.util.spec_from_file_location(
            package, init, submodule_search_locations=[str(folder)]
        )
    else:
        spec = ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
    if spec is None:
        raise FunctionLoadError(f"{folder.name}: cannot be imported")
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[package] = pkg
    try:
        if spec.loader is not None:
            spec.loader.exec_module(pkg)
        return importlib.import_module(f"{package}.{module_name}")
    except BaseException as exc:
        unload(package)
        if isinstance(exc, KeyboardInterrupt):
            raise
        tb = traceback.extract_tb(exc.__traceback__)
        frames = [f for f in tb if Path(f.filename).is_relative_to(folder)]
        at = ""
        if frames:
            at = f" (at {Path(frames[-1].filename).relative_to(folder.parent)}:{frames[-1].lineno})"
        raise FunctionLoadError(
            f"importing {module_file(folder, module_name)} raised {type(exc).__name__}: {exc}{at}"
        ) from exc


def _types(handler: Any) -> tuple[Any, Any]:
    """(input type, output type) of a function ``f(input) -> output`` or of a class's
    ``predict(self, input) -> output``; Any where an annotation is missing."""
    if inspect.isclass(handler):
        target = getattr(handler, "predict", None)
        if not callable(target):
            raise FunctionLoadError(f"class {handler.__name__} has no predict(self, input)")
        skip = 1
    elif callable(handler):
        target, skip = handler, 0
    else:
        raise FunctionLoadError("handler must be a function or a class")
    params = list(inspect.signature(target).parameters.values())[skip:]
    if len(params) != 1:
        raise FunctionLoadError(
            f"{getattr(target, '__qualname__', target)} must take exactly one input parameter"
        )
    hints = _hints(target)
    return hints.get(params[0].name, Any), hints.get("return", Any)


_ITERATORS = (
    collections.abc.Iterator,
    collections.abc.Generator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncGenerator,
)


def _streaming(handler: Any, returned: Any) -> Streaming | None:
    """How ``handler`` streams: a generator (async too), or annotated to return an iterator
    (``Iterator[X]``, ``TextStream`` ...); None when it returns its output whole."""
    target = getattr(handler, "predict", None) if inspect.isclass(handler) else handler
    if returned is TextStream:
        return Streaming(str, text=True)
    if get_origin(returned) in _ITERATORS:
        args = get_args(returned)
        return Streaming(args[0] if args else Any)
    return Streaming(Any) if _generator(target) else None


def _list_of(kind: Any) -> Any:
    return list[kind]


def _generator(target: Any) -> bool:
    return inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)


def _batch_types(handler: Any) -> tuple[Any, Any]:
    """With [batching]: a class whose ``predict_batch(self, inputs: list[X]) -> list[Y]``
    sets the input type X and the output type Y."""
    predict = getattr(handler, "predict", None)
    batch = getattr(handler, "predict_batch", None) if inspect.isclass(handler) else None
    if any(_generator(f) for f in (predict, batch)):
        raise FunctionLoadError(
            "[batching] and a streaming handler (a generator) cannot go together: a batch"
            " returns each item's output whole; remove [batching] from function.toml or"
            " return the output instead of yielding it"
        )
    if not callable(batch):
        raise FunctionLoadError(
            "with [batching] the handler must be a class with predict_batch(self, inputs)"
        )
    params = list(inspect.signature(batch).parameters.values())[1:]
    if len(params) != 1:
        raise FunctionLoadError("predict_batch must take exactly one parameter: the inputs")
    hints = _hints(batch)
    hint = hints.get(params[0].name, Any)
    if hint is not Any and not _is_list(hint):
        raise FunctionLoadError(
            f"predict_batch's inputs must be annotated list[X] (X is one input), not {hint}"
        )
    returned = hints.get("return", Any)
    return _element(hint), _element(returned) if _is_list(returned) else Any


def _hints(target: Any) -> dict[str, Any]:
    try:
        return get_type_hints(target, include_extras=True)  # keep Annotated constraints
    except Exception as exc:
        raise FunctionLoadError(f"cannot resolve the type annotations: {exc}") from exc


def _is_list(hint: Any) -> bool:
    return get_origin(hint) in (list, Sequence, collections.abc.Sequence) and bool(get_args(hint))


def _element(hint: Any) -> Any:
    return get_args(hint)[0] if _is_list(hint) else Any
