from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import (
    BatchSizeError,
    FunctionLoadError,
    OutputNotSerializableError,
    TextStreamError,
    ValidationError,
)
from conveyor.functions.registry import Registry
from conveyor.runtime import Runner, encode_output, error_payload, validate_input
from conveyor.runtime.streaming import StreamStopped
from tests.support import QUEUES, importing_refresh, write_function
from tests.support import load as load_folder


def load(root: Path, name: str, code: str, handler: str = "handler:run", extra: str = "") -> Any:
    return load_folder(
        write_function(root, name, code, f'[function]\nhandler = "{handler}"\n' + extra)
    )


def test_class_setup_runs_once_per_version(functions_dir: Path) -> None:
    fn = load(
        functions_dir,
        "counter",
        """
        from pydantic import BaseModel
        class In(BaseModel):
            n: int
        class Out(BaseModel):
            n: int
            setups: int
        SETUPS = []
        class Counter:
            def setup(self):
                SETUPS.append(1)
            def predict(self, item: In) -> Out:
                return Out(n=item.n * 2, setups=len(SETUPS))
        """,
        "handler:Counter",
    )
    runner = Runner()
    assert runner.run(fn, {"n": 1}) == '{"n":2,"setups":1}'
    assert runner.run(fn, {"n": "3"}) == '{"n":6,"setups":1}'


def test_validation_names_the_field(functions_dir: Path) -> None:
    fn = load(
        functions_dir,
        "typed",
        """
        from pydantic import BaseModel
        class In(BaseModel):
            a: int
            b: list[float]
        def run(x: In) -> int:
            return x.a
        """,
    )
    with pytest.raises(ValidationError) as info:
        validate_input(fn, {"a": "x", "b": [1, "y"]})
    fields = [e["field"] for e in info.value.errors]
    assert fields == ["input.a", "input.b.1"]
    assert "input.a:" in str(info.value)


def test_outputs_are_json_only() -> None:
    assert encode_output({"a": [1, 2.5, None, "x"]}) == '{"a":[1,2.5,null,"x"]}'
    with pytest.raises(OutputNotSerializableError, match="not JSON-serialisable"):
        encode_output(object())
    for bad in (float("nan"), [1.0, float("inf")], {"x": -float("inf")}):
        with pytest.raises(OutputNotSerializableError):
            encode_output(bad)
    # the words alone are text, not numbers
    assert json.loads(encode_output({"NaN": "Infinity"})) == {"NaN": "Infinity"}
    assert json.loads(encode_output(["é", 1e16, 0.1])) == ["é", 1e16, 0.1]


def test_error_payload() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        payload = error_payload(exc, folder=Path(__file__).parent)
    assert payload["type"] == "RuntimeError" and payload["message"] == "boom"
    assert 'File "unit/test_runtime.py"' in payload["traceback"]
    assert "raise RuntimeError" in payload["traceback"]


def test_a_traceback_shows_the_functions_frames_only(tmp_path: Path) -> None:
    folder = write_function(
        tmp_path,
        "parse",
        "import json\ndef run(text: str) -> object:\n    return json.loads(text)\n",
        '[function]\nhandler = "handler:run"\n',
    )
    fn = load_folder(folder)
    try:
        Runner().run(fn, "{not json")
    except ValueError as exc:
        shown = error_payload(exc, folder=fn.folder)["traceback"]
    assert 'File "parse/handler.py", line 3, in run' in shown
    assert "return json.loads(text)" in shown
    assert "frames of the platform or libraries]" in shown  # the runner's, json's
    assert str(tmp_path) not in shown and "site-packages" not in shown and "/lib/" not in shown
    assert shown.rstrip().endswith("line 1 column 2 (char 1)")


BATCHER = """
    from pydantic import BaseModel
    class In(BaseModel):
        n: int
    class Batcher:
        def predict_batch(self, items: list[In]) -> list:
            if any(i.n == 13 for i in items):
                raise ValueError("unlucky")
            return [ValueError("odd") if i.n == 7 else (object() if i.n == 8 else i.n * 10)
                    for i in items]
    """


def test_batch_failures_stay_with_their_item(functions_dir: Path) -> None:
    fn = load(
        functions_dir,
        "batcher",
        BATCHER,
        "handler:Batcher",
        extra="[batching]\nmax_batch_size = 8\n",
    )
    assert fn.schemas().standalone("input")["required"] == ["n"]
    outcomes = Runner().run_batch(
        fn, [{"n": 1}, {"n": "x"}, {"n": 7}, {"n": 13}, {"n": 8}, {"n": 2}]
    )
    assert outcomes[0] == "10" and outcomes[5] == "20"
    assert isinstance(outcomes[1], ValidationError)
    assert isinstance(outcomes[2], ValueError) and str(outcomes[2]) == "odd"
    assert isinstance(outcomes[3], ValueError) and str(outcomes[3]) == "unlucky"
    assert isinstance(outcomes[4], OutputNotSerializableError)


def test_wrong_number_of_outputs_fails_the_batch(functions_dir: Path) -> None:
    fn = load(
        functions_dir,
        "short",
        """
        class Short:
            def predict_batch(self, items: list[int]) -> list[int]:
                return items[:-1]
    """,
        "handler:Short",
        extra="[batching]\n",
    )
    outcomes = Runner().run_batch(fn, [1, 2])
    assert all(isinstance(o, BatchSizeError) for o in outcomes)
    assert "returned 1 outputs for 2 inputs" in str(outcomes[0])


def test_batching_needs_predict_batch(functions_dir: Path) -> None:
    write_function(
        functions_dir,
        "plain",
        "def run(x: int) -> int:\n    return x\n",
        '[function]\nhandler = "handler:run"\n[batching]\n',
    )
    write_function(
        functions_dir,
        "badlist",
        """
        class B:
            def predict_batch(self, items: int) -> list:
                return []
    """,
        '[function]\nhandler = "handler:B"\n[batching]\n',
    )
    reg = Registry(functions_dir, QUEUES)
    importing_refresh(reg)
    assert "must be a class with predict_batch" in (reg.entry("plain").error or "")
    assert "annotated list[X]" in (reg.entry("badlist").error or "")


def test_a_generator_streams_and_its_output_is_the_list_of_chunks(functions_dir: Path) -> None:
    fn = load(
        functions_dir,
        "gen",
        """
        from collections.abc import Iterator
        def run(n: int) -> Iterator[int]:
            for i in range(n):
                yield i * i
        """,
    )
    sent: list[str] = []

    class Sink:
        def chunk(self, encoded: str) -> None:
            sent.append(encoded)

    assert fn.streaming is not None and fn.streaming.chunk_type is int
    assert Runner().run(fn, 4, sink=Sink()) == "[0,1,4,9]"
    assert sent == ["0", "1", "4", "9"]
    assert fn.schemas().stream == {"type": "integer"}
    assert fn.schemas().output == {"type": "array", "items": {"type": "integer"}}


def test_a_text_stream_joins_its_chunks_and_refuses_other_values(functions_dir: Path) -> None:
    fn = load(
        functions_dir,
        "words",
        """
        from conveyor import TextStream
        def run(words: list) -> TextStream:
            yield from words
        """,
    )
    assert Runner().run(fn, ["a", "b ", "ç"]) == '"ab ç"'
    with pytest.raises(TextStreamError, match="yielded a int"):
        Runner().run(fn, ["a", 1])


def test_a_stopping_sink_closes_the_generator_where_it_stands(functions_dir: Path) -> None:
    fn = load(
        functions_dir,
        "closing",
        """
        CLOSED = []
        def run(n: int):
            try:
                for i in range(n):
                    yield i
            finally:
                CLOSED.append(True)
        """,
    )

    class Stop:
        def chunk(self, encoded: str) -> None:
            if encoded == "2":
                raise StreamStopped("cancelled")

    with pytest.raises(StreamStopped):
        Runner().run(fn, 10, sink=Stop())
    assert fn.handler.__globals__["CLOSED"] == [True]


def test_batching_and_streaming_together_is_an_error_naming_both(functions_dir: Path) -> None:
    with pytest.raises(FunctionLoadError, match=r"\[batching\] and a streaming handler"):
        load(
            functions_dir,
            "both",
            """
            class Model:
                def predict_batch(self, xs: list[int]) -> list[int]:
                    for x in xs:
                        yield x
            """,
            "handler:Model",
            "[batching]\nmax_batch_size = 4\n",
        )
