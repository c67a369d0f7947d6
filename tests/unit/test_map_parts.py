"""Map jobs' pure parts: chunk sizes, result lines, ETA, which lists a chunk yields to."""

from __future__ import annotations

from conveyor.db import keyspace
from conveyor.maps import db as maps
from conveyor.worker.chunks import _more_urgent


def test_a_chunk_aims_at_its_seconds_and_whole_batches() -> None:
    assert maps.chunk_size(0, None, 0.05, 1024) == 1  # not timed yet: one item
    assert maps.chunk_size(16, None, 0.05, 1024) == 16  # ... or one batch
    assert maps.chunk_size(0, 0.001, 0.05, 1024) == 50
    assert maps.chunk_size(0, 1e-7, 0.05, 1024) == 1024  # capped
    assert maps.chunk_size(0, 10.0, 0.05, 1024) == 1  # slow items: one at a time
    assert maps.chunk_size(16, 0.001, 0.05, 1024) == 48  # whole batches
    assert maps.chunk_size(64, 1.0, 0.05, 1024) == 64  # never less than one batch


def test_result_lines_from_what_is_stored() -> None:
    stored = '{"s":"succeeded","a":2,"d":1.5,"o":{"x":1}}'
    assert maps.result_line(3, stored, "running") == {
        "index": 3,
        "status": "succeeded",
        "attempts": 2,
        "output": {"x": 1},
        "duration_ms": 1.5,
    }
    failed = '{"s":"failed","a":0,"e":{"type":"ValidationError","message":"item 4: x"}}'
    assert maps.result_line(4, failed, "failed")["error"]["type"] == "ValidationError"  # type: ignore[index]
    assert maps.result_line(5, None, "running") is None  # not done: the stream waits
    assert maps.result_line(5, None, "cancelled") == {
        "index": 5,
        "status": "cancelled",
        "attempts": 0,
    }


def test_entries_keep_the_input_text() -> None:
    entry = maps.entry(7, 1, '{"a": [1, 2]}')
    assert maps.Item.parse(entry) == maps.Item(7, 1, {"a": [1, 2]})


def test_a_chunk_yields_to_its_priority_and_above_never_to_itself() -> None:
    # priority 5 -> kombu step 4; its chunks sit at step 5 and yield to steps 0..4
    assert _more_urgent("realtime", 5) == [keyspace.queue_list("realtime", s) for s in range(5)]
    # priority 0 -> step 9, its chunks too (there is no step 10): they yield to 0..8 only
    assert _more_urgent("q", 0) == [keyspace.queue_list("q", s) for s in range(9)]
    assert _more_urgent("q", 9) == [keyspace.queue_list("q", 0)]


def test_eta_from_the_rate_so_far() -> None:
    job = maps.MapJob(
        id="j",
        function="f",
        version="v",
        status="running",
        total=1000,
        succeeded=200,
        failed=50,
        cancelled=0,
        priority=5,
        created_at=0.0,
        started_at=100.0,
        finished_at=None,
        owner=None,
        webhook=None,
    )
    assert maps.eta(job, 110.0) == 30  # 250 in 10 s: 750 more in 30 s
    assert maps.eta(job, 100.0) is not None
    done = maps.MapJob(**{**job.__dict__, "status": "failed", "finished_at": 120.0})
    assert maps.eta(done, 130.0) is None
