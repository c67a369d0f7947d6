"""Function folders: manifest model, loader, registry of versions, watcher."""

from __future__ import annotations

from conveyor.functions.loader import LoadedFunction, load_function
from conveyor.functions.manifest import Manifest, parse_manifest
from conveyor.functions.registry import FunctionEntry, FunctionSpec, Registry

__all__ = [
    "FunctionEntry",
    "FunctionSpec",
    "LoadedFunction",
    "Manifest",
    "Registry",
    "load_function",
    "parse_manifest",
]
