"""Per-process execution of handlers: class handlers are built and set up once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from conveyor.errors import (
    BatchSizeError,
    OutputNotSerializableError,
    SetupError,
    ValidationError,
)
from conveyor.functions.loader import LoadedFunction
from conveyor.log import get_logger
from conveyor.nesting import DEFAULT_DEPTH
from conveyor.runtime.encoding import encode_output
from conveyor.runtime.streaming import ChunkSink, drain
from conveyor.runtime.validation import validate_input

log = get_logger(__name__)


class FileBridge(Protocol):
    """How one invocation's files reach the handler and leave it (the worker's files)."""

    def inputs(self, fn: LoadedFunction, raw: Any) -> Any:
        """``raw`` with each file reference a local file (a ``conveyor.File``)."""

    def outputs(self, output: Any) -> Any:
        """``output`` with each ``Path`` in it stored and replaced by its reference."""


class Runner:
    """Runs invocations in this process; keeps one set-up instance per function."""

    def __init__(self, max_depth: int = DEFAULT_DEPTH) -> None:
        self.max_depth = max_depth  # nesting an input may have ([api] max_json_depth)
        self._instances: dict[str, tuple[str, Any]] = {}

    def instance(self, fn: LoadedFunction) -> Any:
        """The set-up instance of a class handler: built and ``setup()`` once per version."""
        cached = self._instances.get(fn.name)
        if cached is not None and cached[0] == fn.version:
            return cached[1]
        self._instances.pop(fn.name, None)  # drop the old version's model before loading
        try:
            instance = fn.handler()
            setup = getattr(instance, "setup", None)
            if callable(setup):
                log.info("function_setup_started", function=fn.name, version=fn.version)
                setup()
                log.info("function_setup_finished", function=fn.name, version=fn.version)
        except Exception as exc:
            raise SetupError(
                f"{fn.name} {fn.version}: setting up {fn.handler.__name__} failed:"
                f" {type(exc).__name__}: {exc}"
            ) from exc
        self._instances[fn.name] = (fn.version, instance)
        return instance

    def prepare(self, fn: LoadedFunction) -> Callable[[Any], Any]:
        """The callable that runs one input of ``fn``."""
        if not fn.is_class:
            return fn.handler  # type: ignore[no-any-return]
        return self.instance(fn).predict  # type: ignore[no-any-return]

    def run(
        self,
        fn: LoadedFunction,
        raw_input: Any,
        files: FileBridge | None = None,
        sink: ChunkSink | None = None,
    ) -> str:
        """Validate, call and encode: the invocation's output as JSON. With ``files``, file
        inputs are fetched before and file outputs stored after. A streaming handler's
        chunks go to ``sink`` as they are made (see :func:`drain`)."""
        if files is not None:
            raw_input = files.inputs(fn, raw_input)
        value = validate_input(fn, raw_input, self.max_depth)
        output = self.prepare(fn)(value)
        if fn.streaming is not None:
            return drain(fn.streaming, output, sink, None if files is None else files.outputs)
        return encode_output(output if files is None else files.outputs(output))

    def run_batch(
        self,
        fn: LoadedFunction,
        raw_inputs: list[Any],
        propagate: tuple[type[BaseException], ...] = (),
        files: Sequence[FileBridge] | None = None,
    ) -> list[str | Exception]:
        """One outcome per input, in order: its output as JSON, or why it failed.

        An input that fails validation fails alone. If ``predict_batch`` raises, each item
        is retried on its own so that only the items that raise fail; exceptions listed in
        ``propagate`` (a time limit) end the whole batch instead. ``predict_batch`` may
        also return an exception instance in place of one item's output. ``files``: one
        bridge per input (see :meth:`run`).
        """
        outcomes: list[str | Exception] = [Exception("not run")] * len(raw_inputs)
        valid: list[tuple[int, Any]] = []
        for i, raw in enumerate(raw_inputs):
            try:
                given = raw if files is None else files[i].inputs(fn, raw)
                valid.append((i, validate_input(fn, given, self.max_depth)))
            except (ValidationError, OSError) as exc:
                outcomes[i] = exc
        if valid:
            predict_batch = self.instance(fn).predict_batch
            values = [value for _, value in valid]
            for (i, _), outcome in zip(valid, _call(predict_batch, values, propagate), strict=True):
                outcomes[i] = _stored(None if files is None else files[i], outcome)
        return outcomes


def _call(
    predict_batch: Callable[[list[Any]], Any],
    values: list[Any],
    propagate: tuple[type[BaseException], ...],
) -> list[_Raw | Exception]:
    try:
        outputs = list(predict_batch(values))
    except propagate:
        raise
    except Exception as exc:
        if len(values) == 1:
            return [exc]
        return [outcome for v in values for outcome in _call(predict_batch, [v], propagate)]
    if len(outputs) != len(values):
        wrong = BatchSizeError(
            f"predict_batch returned {len(outputs)} outputs for {len(values)} inputs"
        )
        return [wrong] * len(values)
    return [output if isinstance(output, Exception) else _Raw(output) for output in outputs]


class _Raw:
    """One item's output, encoded once its files are stored (:func:`_stored`)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _stored(files: FileBridge | None, outcome: _Raw | Exception) -> str | Exception:
    if not isinstance(outcome, _Raw):
        return outcome
    try:
        return encode_output(outcome.value if files is None else files.outputs(outcome.value))
    except (OutputNotSerializableError, OSError) as exc:
        return exc
