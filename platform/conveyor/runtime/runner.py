"""Per-process execution of handlers: class handlers are built and set up once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.functions.loader import LoadedFunction
from conveyor.log import get_logger
from conveyor.runtime.encoding import encode_output
from conveyor.runtime.validation import validate_input

log = get_logger(__name__)


class Runner:
    """Runs invocations in this process; keeps one set-up instance per function."""

    def __init__(self) -> None:
        self._instances: dict[str, tuple[str, Callable[[Any], Any]]] = {}

    def prepare(self, fn: LoadedFunction) -> Callable[[Any], Any]:
        """The callable for ``fn``: a class is instantiated and ``setup()`` once per version."""
        if not fn.is_class:
            return fn.handler  # type: ignore[no-any-return]
        cached = self._instances.get(fn.name)
        if cached is not None and cached[0] == fn.version:
            return cached[1]
        self._instances.pop(fn.name, None)  # drop the old version's model before loading
        instance = fn.handler()
        setup = getattr(instance, "setup", None)
        if callable(setup):
            log.info("function_setup_started", function=fn.name, version=fn.version)
            setup()
            log.info("function_setup_finished", function=fn.name, version=fn.version)
        predict: Callable[[Any], Any] = instance.predict
        self._instances[fn.name] = (fn.version, predict)
        return predict

    def run(self, fn: LoadedFunction, raw_input: Any) -> str:
        """Validate, call and encode: the invocation's output as JSON."""
        value = validate_input(fn, raw_input)
        return encode_output(self.prepare(fn)(value))

    def forget(self, name: str) -> None:
        self._instances.pop(name, None)
