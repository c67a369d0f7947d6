"""The Lua scripts as files: every one parses, names its keys and arguments, and is called
by name; the constants the counting fragment repeats are Python's."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from conveyor.db import scripts
from conveyor.db.scripts import Script, ScriptError, script
from conveyor.metrics import db as stats

PACKAGE = Path(str(resources.files("conveyor")))
ALL = sorted(PACKAGE.glob("*/lua/*.lua"))


def _is_fragment(path: Path) -> bool:
    return "-- KEYS:" not in path.read_text()


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_every_script_has_a_header_and_reads_only_names(path: Path) -> None:
    if _is_fragment(path):
        assert "KEYS" not in path.read_text() and "ARGV" not in path.read_text()
        return
    loaded = script(path.parent.parent.name, path.stem)
    body = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("--"))
    # positions only within the variadic tails the header declares
    assert ("KEYS[" in body) <= (loaded.key_rest is not None), loaded.name
    assert ("ARGV[" in body) <= (loaded.arg_rest is not None), loaded.name
    for used in re.findall(r"\bK\.(\w+)", loaded.source):
        assert used in loaded.keys, f"{loaded.name} reads K.{used}, not in its header"
    for used in re.findall(r"\bA\.(\w+)", loaded.source):
        assert used in loaded.args, f"{loaded.name} reads A.{used}, not in its header"
    assert "--! include" not in loaded.source


def test_no_lua_left_in_python() -> None:
    for module in PACKAGE.rglob("*.py"):
        text = module.read_text()
        assert "redis.call(" not in text or module.name == "test_scripts.py", module
        assert "register_script(" not in text or module.name == "scripts.py", module
        assert ".eval(" not in text and "evalsha(" not in text, module


def test_command_orders_named_values_and_refuses_others() -> None:
    submit = script("invocations", "submit")
    values = {name: f"k:{name}" for name in submit.keys}
    values |= {name: f"a:{name}" for name in submit.args}
    keys, args = submit.command(**values, fields=["status", "queued"], holders=["h1", "h2"])
    assert keys == [*(f"k:{name}" for name in submit.keys), "h1", "h2"]
    assert args == [*(f"a:{name}" for name in submit.args), "status", "queued"]
    with pytest.raises(ScriptError, match=r"missing \['fields'\], unknown \['typo'\]"):
        submit.command(**values, holders=[], typo=1)


def test_a_header_naming_a_key_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = {
        "twice": "-- KEYS: job job\n-- ARGV: id\nreturn 1\n",
        "shared": "-- KEYS: job\n-- ARGV: job\nreturn 1\n",
        "reserved": "-- KEYS: end\n-- ARGV:\nreturn 1\n",
        "middle": "-- KEYS: job\n-- ARGV: ...rest id\nreturn 1\n",
        "headless": "return 1\n",
    }
    monkeypatch.setattr(scripts, "_read", lambda package, name: texts[name])
    for name in texts:
        with pytest.raises(ScriptError):
            script("test", name)


def test_fragments_are_included_once(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = {
        "main": "-- KEYS: job\n-- ARGV: id\n--! include test/a\n--! include test/b\nreturn f()\n",
        "a": "--! include test/b\nlocal function f() return g() end\n",
        "b": "local function g() return 1 end\n",
    }
    monkeypatch.setattr(scripts, "_read", lambda package, name: texts[name])
    loaded: Script = script("test", "main")
    assert loaded.source.count("local function g()") == 1
    assert loaded.source.index("function g") < loaded.source.index("function f")


def test_the_counting_fragment_repeats_python_constants() -> None:
    text = (PACKAGE / "metrics" / "lua" / "count.lua").read_text()
    seconds = re.search(r"local SECONDS = \{(.*)\}", text)
    assert seconds is not None
    assert tuple(float(v) for v in seconds.group(1).split(",")) == stats.SECONDS_BUCKETS
    assert f"local STATS_TTL = {stats.STATS_TTL}\n" in text
    assert f"local RECENT = {stats.RECENT}\n" in text
