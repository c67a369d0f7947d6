"""Import a function folder as a package of its own, never by bare module name.

Each (function, version) becomes a private package ``conveyor_fn.<name>.v<version>`` whose
``__path__`` is the folder, so two folders may both contain ``handler.py`` and a module in
the folder reaches its siblings with relative imports (``from .utils import x``).
"""

from __future__ import annotations

import collections.abc
import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter

from conveyor.errors import FunctionLoadError
from conveyor.functions.manifest import Manifest

PACKAGE_ROOT = "conveyor_fn"


@dataclass(frozen=True)
class LoadedFunction:
    """A function's code, imported: the handler and the input type it declares."""

    name: str
    version: str
    manifest: Manifest
    handler: Any
    input_type: Any
    input_adapter: TypeAdapter[Any]
    package: str

    @property
    def is_class(self) -> bool:
        return inspect.isclass(self.handler)

    def input_schema(self) -> dict[str, Any]:
        return self.input_adapter.json_schema()


def package_name(name: str, version: str) -> str:
    return f"{PACKAGE_ROOT}.{name.replace('-', '_')}.v{version}"


def load_function(name: str, version: str, folder: Path, manifest: Manifest) -> LoadedFunction:
    """Import ``folder``'s handler module and check the handler contract."""
    package = package_name(name, version)
    module = _import(package, folder, manifest.module)
    handler = getattr(module, manifest.attribute, None)
    where = f"{folder / (manifest.module.replace('.', '/') + '.py')}"
    if handler is None:
        unload(package)
        raise FunctionLoadError(f"{where}: has no attribute {manifest.attribute!r}")
    try:
        input_type = _batch_input_type(handler) if manifest.batching else _input_type(handler)
        adapter: TypeAdapter[Any] = TypeAdapter(input_type)
        adapter.json_schema()
    except FunctionLoadError as exc:
        unload(package)
        raise FunctionLoadError(f"{where}: {exc}") from None
    except Exception as exc:  # pydantic cannot build a schema for the annotation
        unload(package)
        raise FunctionLoadError(f"{where}: input annotation is not a usable schema: {exc}") from exc
    return LoadedFunction(name, version, manifest, handler, input_type, adapter, package)


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
        raise FunctionLoadError(f"{folder}: cannot be imported")
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
        frames = [f for f in tb if f.filename.startswith(str(folder))]
        at = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        raise FunctionLoadError(
            f"{folder}: importing {module_name!r} failed: {type(exc).__name__}: {exc}{at}"
        ) from exc


def _input_type(handler: Any) -> Any:
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
    try:
        hints = get_type_hints(target)
    except Exception as exc:
        raise FunctionLoadError(f"cannot resolve the input annotation: {exc}") from exc
    return hints.get(params[0].name, Any)


def _batch_input_type(handler: Any) -> Any:
    """With [batching]: a class whose ``predict_batch(self, inputs: list[X])`` sets X."""
    batch = getattr(handler, "predict_batch", None) if inspect.isclass(handler) else None
    if not callable(batch):
        raise FunctionLoadError(
            "with [batching] the handler must be a class with predict_batch(self, inputs)"
        )
    params = list(inspect.signature(batch).parameters.values())[1:]
    if len(params) != 1:
        raise FunctionLoadError("predict_batch must take exactly one parameter: the inputs")
    try:
        hint = get_type_hints(batch).get(params[0].name, Any)
    except Exception as exc:
        raise FunctionLoadError(f"cannot resolve the input annotation: {exc}") from exc
    if hint is Any:
        return Any
    if get_origin(hint) not in (list, Sequence, collections.abc.Sequence) or not get_args(hint):
        raise FunctionLoadError(
            f"predict_batch's inputs must be annotated list[X] (X is one input), not {hint}"
        )
    return get_args(hint)[0]
