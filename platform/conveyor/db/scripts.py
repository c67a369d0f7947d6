"""Lua scripts as files, called with named arguments.

Every state change is one Lua script, kept as ``<package>/lua/<name>.lua`` beside the code
that calls it. A script opens with a header naming its keys and arguments in order::

    -- KEYS: job events
    -- ARGV: allowed to ttl ...fields

(``...name`` last: the rest, read in the body from ``KEYS[K_REST]`` or ``ARGV[A_REST]``
on). The body reads them by name, ``K.job`` and ``A.ttl``: :func:`script` prepends the
tables that map names to positions, so only the header knows the order, and a caller
passes every value by name to :meth:`Script.command` (or :meth:`Scripts.call`). A line
``--! include <package>/<name>`` inserts the fragment ``conveyor/<package>/lua/<name>.lua``
(Lua functions shared by scripts) once, where it stands.

:class:`Scripts` registers each script with one Redis client once: calls go by EVALSHA,
and redis-py loads a script Redis does not know (a restarted or new primary) on NOSCRIPT,
in a pipeline too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.commands.core import Script as RedisScript

_INCLUDE = re.compile(r"^--! include ([a-z_]+)/([a-z_]+)$", re.M)
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_LUA_WORDS = frozenset(  # Lua's reserved words: not a name for K.<name> or A.<name>
    {
        *("and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto"),
        *("if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true"),
        *("until", "while"),
    }
)


class ScriptError(Exception):
    """A script file that does not follow the format, or a call that does not match it."""


@dataclass(frozen=True)
class Script:
    """One ``.lua`` file: its names, and its source ready to run."""

    name: str
    keys: tuple[str, ...]
    args: tuple[str, ...]
    key_rest: str | None  # the name of KEYS' variadic tail, if it has one
    arg_rest: str | None  # the name of ARGV's
    source: str

    def command(self, **values: Any) -> tuple[list[Any], list[Any]]:
        """KEYS and ARGV in the script's order, from every key and argument by name (a
        variadic tail: a sequence)."""
        rests = [r for r in (self.key_rest, self.arg_rest) if r]
        wanted = {*self.keys, *self.args, *rests}
        if wanted != values.keys():
            missing = sorted(wanted - values.keys())
            unknown = sorted(values.keys() - wanted)
            raise ScriptError(f"script {self.name}: missing {missing}, unknown {unknown}")
        keys = [values[name] for name in self.keys]
        args = [values[name] for name in self.args]
        if self.key_rest:
            keys.extend(values[self.key_rest])
        if self.arg_rest:
            args.extend(values[self.arg_rest])
        return keys, args


def script(package: str, name: str) -> Script:
    """The script ``conveyor/<package>/lua/<name>.lua``."""
    text = _read(package, name)
    header = dict(_header(text))
    if "KEYS" not in header or "ARGV" not in header:
        raise ScriptError(f"{package}/{name}.lua: no '-- KEYS:' and '-- ARGV:' header")
    keys, key_rest = _names(f"{package}/{name}.lua", header["KEYS"])
    args, arg_rest = _names(f"{package}/{name}.lua", header["ARGV"])
    every = [*keys, *args, *filter(None, (key_rest, arg_rest))]
    if len(set(every)) != len(every):
        raise ScriptError(f"{package}/{name}.lua: a key and an argument share a name")
    preamble = [
        "local K = {" + ", ".join(f"{k} = KEYS[{i}]" for i, k in enumerate(keys, 1)) + "}",
        "local A = {" + ", ".join(f"{a} = ARGV[{i}]" for i, a in enumerate(args, 1)) + "}",
    ]
    if key_rest:
        preamble.append(f"local K_REST = {len(keys) + 1}")
    if arg_rest:
        preamble.append(f"local A_REST = {len(args) + 1}")
    body = _resolve(text, set())
    source = "\n".join(preamble) + "\n" + body
    return Script(f"{package}/{name}", keys, args, key_rest, arg_rest, source)


def _names(where: str, declared: list[str]) -> tuple[tuple[str, ...], str | None]:
    """The names of a header line, and that of its variadic tail (``...name``, last)."""
    rest = declared[-1][3:] if declared and declared[-1].startswith("...") else None
    names = tuple(declared[:-1] if rest else declared)
    for n in (*names, *([rest] if rest else [])):
        if not _NAME.fullmatch(n) or n in _LUA_WORDS:
            raise ScriptError(f"{where}: {n!r} is not a name (or only the last is '...name')")
    if len(set(names)) != len(names):
        raise ScriptError(f"{where}: a name appears twice in {declared}")
    return names, rest


def _header(text: str) -> list[tuple[str, list[str]]]:
    found = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        for part in ("KEYS", "ARGV"):
            prefix = f"-- {part}:"
            if line.startswith(prefix):
                found.append((part, line[len(prefix) :].split()))
    return found


def _resolve(text: str, included: set[str]) -> str:
    def include(match: re.Match[str]) -> str:
        package, name = match.groups()
        if f"{package}/{name}" in included:
            return ""
        included.add(f"{package}/{name}")
        return _resolve(_read(package, name), included)

    return _INCLUDE.sub(include, text)


@cache
def _read(package: str, name: str) -> str:
    try:
        return (resources.files(f"conveyor.{package}") / "lua" / f"{name}.lua").read_text()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ScriptError(f"no script {package}/{name}.lua") from exc


class Scripts:
    """The scripts registered with one client (sync or asyncio): each loaded once."""

    def __init__(self, client: redis.Redis | aioredis.Redis) -> None:
        self.client = client
        self._registered: dict[str, RedisScript | AsyncScript] = {}

    def call(self, script: Script, *, client: Any = None, **values: Any) -> Any:
        """Run ``script`` with its keys and arguments by name; ``client``: a pipeline to
        queue it on instead. On an asyncio client the caller awaits what this returns,
        with a pipeline too (that queues it)."""
        registered = self._registered.get(script.name)
        if registered is None:
            registered = self.client.register_script(script.source)
            self._registered[script.name] = registered
        keys, args = script.command(**values)
        return registered(keys=keys, args=args, client=client)
