"""The hand-written OpenAPI document against the app it describes."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from litestar.routes import HTTPRoute

from conveyor.api.app import create_app
from conveyor.api.openapi import Options, document
from conveyor.api.params import QUERY
from conveyor.settings import load_settings
from tests.support import loaded_entries, write_function, write_settings

MODELS = """
from pydantic import BaseModel, computed_field
class Input(BaseModel):
    x: float
class Point(BaseModel):
    x: float
    @computed_field
    def double(self) -> float:
        return 2 * self.x
class Model:
    def predict(self, p: Point) -> Point:
        return p
"""


def test_every_route_is_documented_with_its_methods(tmp_path: Path) -> None:
    """Each route the app serves is in the document with the same methods, and nothing else
    is (a function's own paths count as the generic route they are served by)."""
    config = write_settings(tmp_path / "deploy.toml", "redis://127.0.0.1:1/0", tmp_path / "fns")
    app = create_app(load_settings(config))
    write_function(
        tmp_path / "fns",
        "f",
        "def run(x: int) -> int:\n    return x\n\ndef train(x: int) -> dict:\n    return {}\n",
        '[function]\nhandler = "handler:run"\n[training]\nhandler = "handler:train"\n',
    )
    entries = loaded_entries(tmp_path / "fns")
    served: dict[str, set[str]] = {}
    queries: dict[tuple[str, str], set[str]] = {}  # what each route lets through
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for handler in route.route_handlers:
            if handler.resolve_include_in_schema():
                for method in handler.http_methods:
                    served.setdefault(path, set()).add(method.lower())
                    queries[(path, method.lower())] = set(handler.opt[QUERY])
    documented: dict[str, set[str]] = {}
    documented_queries: dict[tuple[str, str], set[str]] = {}
    for path, item in document(entries, Options(max_wait=60))["paths"].items():
        generic = path.replace("/functions/f/", "/functions/{name}/")
        documented.setdefault(generic, set()).update(item)
        for method, operation in item.items():
            params = operation.get("parameters", [])
            documented_queries[(generic, method)] = {
                p["name"] for p in params if p["in"] == "query"
            }
    assert documented == served
    assert documented_queries == queries  # any other query parameter is a 400


PUBLIC = {"/healthz", "/readyz"}


def test_every_route_but_health_knows_its_caller(tmp_path: Path) -> None:
    """The caller (its key's scopes) is what every documented route checks."""
    config = write_settings(tmp_path / "deploy.toml", "redis://127.0.0.1:1/0", tmp_path / "fns")
    app = create_app(load_settings(config))
    checked = 0
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not handler.resolve_include_in_schema() or route.path in PUBLIC:
                continue
            assert "caller" in inspect.signature(handler.fn).parameters, route.path
            checked += 1
    assert checked >= 6


def test_with_keys_every_operation_but_health_declares_401_and_403() -> None:
    doc = document([], Options(auth=True))
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key (cvk_...) from `conveyor keys create`",
    }
    for path, item in doc["paths"].items():
        for operation in item.values():
            if path in PUBLIC:
                assert operation["security"] == [] and "401" not in operation["responses"]
            else:
                assert {"401", "403"} <= set(operation["responses"]), path
                assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert "securitySchemes" not in document([], Options())["components"]


def test_function_components_resolve_and_have_unique_titles(tmp_path: Path) -> None:
    for name in ("shapes", "team-a"):
        write_function(tmp_path, name, MODELS, '[function]\nhandler = "handler:Model"\n')
    write_function(
        tmp_path,
        "plain",
        "def run(x: int) -> str:\n    return ''\n",
        '[function]\nhandler = "handler:run"\n',
    )
    doc = document(loaded_entries(tmp_path), Options(max_wait=30))
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas, ref
    titles = [s["title"] for s in schemas.values() if "title" in s]
    assert len(titles) == len(set(titles)), sorted(titles)
    # One model, validated one way and dumped another: two components.
    assert "double" in schemas["shapes.Point-Output"]["properties"]
    assert "double" not in schemas["shapes.Point-Input"]["properties"]
    assert schemas["team-a.Result"]["title"] == "TeamAResult"
    assert schemas["plain.Input"] == {"type": "integer", "title": "PlainInput"}
    invoke = doc["paths"]["/functions/plain/invoke"]["post"]
    assert invoke["parameters"][0]["schema"] == {"type": "number", "minimum": 0, "maximum": 30}
    assert {"200", "202", "400", "404", "409", "413", "415", "422", "429", "503"} == set(
        invoke["responses"]
    )
    assert invoke["responses"]["422"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []
