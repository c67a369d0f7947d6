"""Limits on what waits: ``[limits] max_queued`` answers 429 with Retry-After past its cap,
across API processes (the count is one sorted set in Redis); a purge cancels every waiting
invocation, and a recording handler proves none of them runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.support import (
    Stack,
    cli,
    free_port,
    invoke,
    make_key,
    most_at_once,
    result,
    start_api,
    wait_for,
    wait_until,
    write_function,
    write_recording_function,
)

pytestmark = pytest.mark.integration


def test_max_queued_answers_429_past_the_cap(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    runs = stack.root / "runs"
    write_recording_function(stack.functions, "capped", runs, "[limits]\nmax_queued = 3\n")
    with stack.api() as api:
        keyed = api.post(
            "/functions/capped/invoke", json={"input": 0}, headers={"Idempotency-Key": "k"}
        ).json()["id"]
        accepted = [keyed] + [invoke(api, "capped", n)[1]["id"] for n in (1, 2)]  # no worker
        described = api.get("/functions/capped").json()
        assert described["waiting"] == 3 and described["max_queued"] == 3, described
        refused = api.post("/functions/capped/invoke", json={"input": 9})
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"].isdigit()
        problem = refused.json()
        assert problem["type"] == "urn:conveyor:problem:queue-full"
        assert problem["limit"] == "max_queued" and problem["scope"] == "function"
        assert "max_queued" in problem["detail"]
        # an Idempotency-Key used before is answered with its invocation, full or not
        again = api.post(
            "/functions/capped/invoke", json={"input": 0}, headers={"Idempotency-Key": "k"}
        )
        assert again.status_code == 202 and again.json()["id"] == keyed, again.text
        stack.worker("--queues", "default")
        outputs = [result(api, "capped", i)["output"] for i in accepted]
        assert outputs == [0, 1, 2]
        assert api.get("/functions/capped").json()["waiting"] == 0
        status, done = invoke(api, "capped", 4, wait=30)  # room again
        assert status == 200 and done["output"] == 4, done
    assert sorted(runs.read_text().split()) == sorted([*accepted, done["id"]])


def test_purge_cancels_every_waiting_invocation(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    runs = stack.root / "runs"
    write_recording_function(stack.functions, "backlog", runs)
    with stack.api() as api:
        waiting = [invoke(api, "backlog", n)[1]["id"] for n in range(5)]
        assert api.get("/functions/backlog").json()["waiting"] == 5
        purged = api.post("/functions/backlog/purge")
        assert purged.status_code == 200 and purged.json() == {"function": "backlog", "purged": 5}
        assert api.get("/functions/backlog").json()["waiting"] == 0
        for invocation_id in waiting:
            gone = result(api, "backlog", invocation_id, wait=0)
            assert gone["status"] == "cancelled" and "purged" in gone["error"]["message"], gone
        stack.worker("--queues", "default")
        status, after = invoke(api, "backlog", 7, wait=30)  # the worker takes the queue
        assert status == 200 and after["output"] == 7, after
        assert api.post("/functions/nope/purge").status_code == 404
    wait_for(lambda: runs.exists(), 10, "the worker's run")
    assert runs.read_text().split() == [after["id"]]  # none of the purged ran


def test_deadlines_expire_what_never_started_and_cancel_what_runs(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    runs = stack.root / "runs"
    write_recording_function(stack.functions, "late", runs, "[limits]\nmax_queue_time = 1\n")
    write_function(stack.functions, "sleepy", SLEEPY, '[function]\nhandler = "handler:run"\n')
    with stack.api() as api:
        # nobody takes them within their max_queue_time (no worker yet): expired, never run
        stale = [invoke(api, "late", n)[1]["id"] for n in range(3)]
        # Cancel-After on a request: the earlier of it and the function's limit
        asked = api.post(
            "/functions/late/invoke", json={"input": 9}, headers={"Cancel-After": "0.5s"}
        )
        assert asked.status_code == 202, asked.text
        for invocation_id in [*stale, asked.json()["id"]]:
            ended = wait_until(
                lambda i=invocation_id: result(api, "late", i, wait=0),
                lambda body: body["status"] != "queued",
                10,
                "the deadline",
            )
            assert ended["status"] == "expired", ended
            assert ended["error"]["type"] == "Expired" and "finished_at" in ended
        assert api.get("/functions/late").json()["waiting"] == 0
        stack.worker("--queues", "default")
        status, fresh = invoke(api, "late", 5, wait=30)  # started in time: it runs
        assert status == 200 and fresh["output"] == 5, fresh
        # still running at its request's deadline: cancelled, as a cancel does
        running = api.post(
            "/functions/sleepy/invoke", json={"input": 30}, headers={"Cancel-After": "2s"}
        ).json()["id"]
        stopped = result(api, "sleepy", running, wait=30)
        assert stopped["status"] == "cancelled" and "deadline" in stopped["error"]["message"]
        bad = api.post(
            "/functions/late/invoke", json={"input": 1}, headers={"Cancel-After": "soon"}
        )
        assert bad.status_code == 422 and "Cancel-After" in bad.text, bad.text
        naive = api.post("/functions/late/invoke", json={"input": 1, "deadline": "2020-01-01"})
        assert naive.status_code == 422 and "date-time" in naive.text, naive.text
        past = api.post(
            "/functions/sleepy/invoke", json={"input": 1, "deadline": "2020-01-01T00:00:00Z"}
        )  # already passed: taken as given, it never runs
        assert past.status_code == 202, past.text
        gone = result(api, "sleepy", past.json()["id"], wait=10)
        assert gone["status"] == "expired", gone
    assert runs.read_text().split() == [fresh["id"]]  # none of the expired ran


SLEEPY = """
import json
import time
def run(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
"""


TIMED = """
import os, time
from conveyor import context

def run(seconds: float) -> int:
    begun = time.time()
    time.sleep(seconds)
    with open({log!r}, "a") as f:
        f.write(f"{{context.current().id}} {{os.getpid()}} {{begun}} {{time.time()}}\\n")
    return os.getpid()
"""


def spans(log: Path) -> list[tuple[float, float]]:
    lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return [(float(start), float(end)) for _, _, start, end in lines]


def starts_within(log: Path, seconds: float) -> tuple[int, float, list[float]]:
    """How many handlers started within ``seconds`` of the first, how long from the first
    start to the last, and the starts (for assertion messages)."""
    starts = sorted(start for start, _ in spans(log))
    return sum(1 for start in starts if start < starts[0] + seconds), starts[-1] - starts[0], starts


def test_concurrency_holds_across_workers_and_a_lost_slot_comes_back(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_worker(slot_lease=2, visibility_timeout=4, restore_interval=0.5)
    log = stack.root / "spans"
    write_function(
        stack.functions,
        "licensed",
        TIMED.format(log=str(log)),
        '[function]\nhandler = "handler:run"\n[limits]\nconcurrency = 2\ntimeout = 30\n',
    )
    first = stack.worker("--queues", "default", "--concurrency", "3")
    stack.worker("--queues", "default", "--concurrency", "3")
    with stack.api() as api:
        ids = [invoke(api, "licensed", 0.4)[1]["id"] for _ in range(12)]
        outcomes = [result(api, "licensed", i, wait=60) for i in ids]
        assert all(o["status"] == "succeeded" for o in outcomes), outcomes
        held = spans(log)
        pids = {o["output"] for o in outcomes}
        assert most_at_once(held) <= 2, held
        described = api.get("/functions/licensed").json()
        assert described["concurrency"] == 2 and described["running"] == 0, described
        # two long attempts hold both slots; their worker is SIGKILLed: the slots come back
        # once their lease runs out, and what waited runs
        log.unlink()
        long = [invoke(api, "licensed", 20)[1]["id"] for _ in range(2)]
        wait_for(lambda: api.get("/functions/licensed").json()["running"] == 2, 10, "2 running")
        pid = int(stack.redis.hget(f"conveyor:job:{long[0]}", "pid"))
        victim = first if str(pid) in _children(first.pid).split() else stack.workers[1]
        victim.kill()  # the parent and its pool children, as a lost machine
        killed = time.time()
        _, waiting = invoke(api, "licensed", 0.1)
        done = result(api, "licensed", waiting["id"], wait=30)
        freed_after = time.time() - killed
        assert done["status"] == "succeeded", done
    report(
        f"concurrency = 2 over 2 workers (6 processes): 12 invocations, peak {most_at_once(held)} at"
        f" once, on {len(pids)} processes; a SIGKILLed worker's slots freed and the next"
        f" invocation done {freed_after:.2f} s after the kill ([worker] slot_lease 2 s)"
    )


def _children(pid: int) -> str:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text()


def test_rate_holds_across_workers(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    log = stack.root / "spans"
    write_function(
        stack.functions,
        "metered",
        TIMED.format(log=str(log)),
        '[function]\nhandler = "handler:run"\n[limits]\nrate = "5/s"\n',
    )
    stack.worker("--queues", "default", "--concurrency", "2")
    stack.worker("--queues", "default", "--concurrency", "2")
    with stack.api() as api:
        ids = [invoke(api, "metered", 0)[1]["id"] for _ in range(60)]
        outcomes = [result(api, "metered", i, wait=60) for i in ids]
        assert all(o["status"] == "succeeded" for o in outcomes), outcomes
    in_ten, took, _ = starts_within(log, 10)
    report(
        f'rate = "5/s" over 2 workers (4 processes), 60 invocations queued at once: {in_ten}'
        f" started in the first 10 s (50 expected), all done in {took:.1f} s"
    )
    assert abs(in_ten - 50) <= 50 * 0.05 + 1, in_ten  # the first start has no turn to wait


def test_a_redis_memory_cap_refuses_new_work_and_keeps_what_was_accepted(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    used = int(stack.redis.info("memory")["used_memory"])
    stack.set_settings("redis", max_memory_bytes=used + 2 * 1024 * 1024)
    runs = stack.root / "runs"
    write_function(
        stack.functions,
        "bulky",
        BULKY.format(runs=str(runs)),
        '[function]\nhandler = "handler:run"\n',
    )
    big = "x" * 200_000
    with stack.api() as api:
        accepted, refused = [], None
        for _ in range(100):  # no worker yet: records and messages pile up in Redis
            answer = api.post("/functions/bulky/invoke", json={"input": big})
            if answer.status_code == 503:
                refused = answer
                break
            assert answer.status_code == 202, answer.text
            accepted.append(answer.json()["id"])
            time.sleep(0.05)  # the API looks at Redis's memory every 0.25 s
        assert refused is not None, "the cap never answered"
        assert refused.headers["retry-after"].isdigit()
        assert "max_memory_bytes" in refused.json()["detail"], refused.text
        job = api.post("/functions/bulky/map", json={"inputs": ["a"]})
        assert job.status_code == 503, job.text
        metrics = api.get("/metrics").text
        assert "conveyor_redis_memory_bytes" in metrics
        stack.worker("--queues", "default")
        done = [result(api, "bulky", i, wait=60)["status"] for i in accepted]
        assert done == ["succeeded"] * len(accepted)
    assert sorted(runs.read_text().split()) == sorted(accepted)  # every one accepted ran


BULKY = """
from conveyor import context

def run(text: str) -> int:
    with open({runs!r}, "a") as f:
        f.write(context.current().id + "\\n")
    return len(text)
"""


def test_key_limits_hold_across_two_api_processes(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("api", auth='"keys"')
    write_recording_function(stack.functions, "echoed", stack.root / "runs")
    fast = make_key(stack, "fast", "invoke:*", options=("--rate", "5/s"))
    few = make_key(stack, "few", "invoke:*", options=("--max-inflight", "3", "--daily", "5"))
    waits = make_key(stack, "waits", "invoke:*", options=("--max-queued", "2"))
    apis = [start_api(stack.config, stack.root / f"api-{i}.log", free_port()) for i in range(2)]
    try:
        bases = [base for _, base in apis]

        def post(i: int, key: str) -> httpx.Response:
            return httpx.post(
                f"{bases[i % 2]}/functions/echoed/invoke",
                json={"input": i},
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )

        # rate: a burst of 5, then one each 0.2 s, whichever process answers
        begun, answers = time.monotonic(), []
        while time.monotonic() - begun < 3:
            answers.append(post(len(answers), fast))
        took = time.monotonic() - begun
        accepted = sum(a.status_code == 202 for a in answers)
        limited = [a for a in answers if a.status_code == 429]
        assert limited and accepted + len(limited) == len(answers), {a.status_code for a in answers}
        refusal = limited[0]
        assert refusal.headers["ratelimit-policy"] == '"rate";q=5;w=1', refusal.headers
        assert refusal.headers["ratelimit"].startswith('"rate";r=0;t=')
        assert int(refusal.headers["retry-after"]) >= 1
        problem = refusal.json()
        assert problem["limit"] == "rate" and problem["scope"] == "key", problem
        expected = 5 + took * 5
        assert abs(accepted - expected) <= 2, (accepted, expected)

        # in flight: 3 unfinished (no worker runs them), the 4th refused on either process
        assert all(post(i, few).status_code == 202 for i in range(3))
        refused = post(3, few)
        assert refused.status_code == 429 and refused.json()["limit"] == "max_inflight"
        me = httpx.get(f"{bases[1]}/keys/me", headers={"Authorization": f"Bearer {few}"}).json()
        assert me["limits"] == {"max_inflight": 3, "daily": 5}, me
        assert me["usage"] == {"inflight": 3, "queued": 3, "today": 3, "file_bytes": 0}, me
        updated = cli(stack, "keys", "update", "few", "--max-inflight", "none")
        assert "daily 5" in updated, updated
        wait_for(lambda: post(4, few).status_code == 202, 10, "the lifted limit")
        assert post(5, few).status_code == 202  # the fifth today
        daily = post(6, few)
        assert daily.status_code == 429 and daily.json()["limit"] == "daily", daily.text
        assert daily.headers["ratelimit-policy"] == '"daily";q=5;w=86400'

        # waiting: 2 of its invocations wait to start (no worker), the 3rd is refused
        assert all(post(i, waits).status_code == 202 for i in range(2))
        queued = post(2, waits)
        assert queued.status_code == 429 and queued.json()["limit"] == "max_queued", queued.text
        assert queued.headers["ratelimit-policy"] == '"max_queued";q=2'
    finally:
        for proc, _ in apis:
            proc.stop()
    report(
        f'key rate "5/s" on 2 API processes: {accepted} accepted in {took:.1f} s'
        f" ({expected:.0f} expected: a burst of 5, then 5/s), {len(limited)} answered 429"
    )


def test_a_map_jobs_deadline_expires_what_it_has_not_run(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    write_function(stack.functions, "sleepy", SLEEPY, '[function]\nhandler = "handler:run"\n')
    stack.worker("--queues", "default", "--concurrency", "1")
    with stack.api() as api:
        started = api.post(
            "/functions/sleepy/map",
            json={"inputs": [0.2] * 100},
            headers={"Cancel-After": "1.5s"},
        )
        assert started.status_code == 202, started.text
        url = started.json()["status_url"]
        job = wait_until(  # ended: its running chunk stopped and settled too
            lambda: api.get(url).json(), lambda j: j["finished_at"] is not None, 20, "its end"
        )
        counts = job["counts"]
        assert job["status"] == "expired", job
        assert counts["succeeded"] > 0 and counts["expired"] > 0, counts
        assert counts["succeeded"] + counts["expired"] + counts["cancelled"] == 100, counts
        lines = [json.loads(line) for line in api.get(f"{url}/results").text.splitlines()]
        assert {line["status"] for line in lines} <= {"succeeded", "expired", "cancelled"}
        assert sum(line["status"] == "expired" for line in lines) == counts["expired"]
        assert counts["cancelled"] <= 1, counts  # an item runs past the deadline's grace
        # an item still running at the deadline is cancelled (killed), the rest expired
        long = api.post(
            "/functions/sleepy/map", json={"inputs": [30, 30, 30]}, headers={"Cancel-After": "1s"}
        )
        url = long.json()["status_url"]
        job = wait_until(
            lambda: api.get(url).json(), lambda j: j["finished_at"] is not None, 20, "its end"
        )
        assert job["status"] == "expired", job
        assert job["counts"]["cancelled"] == 1 and job["counts"]["expired"] == 2, job
        bad = api.post("/functions/sleepy/map", json={"inputs": [1]}, headers={"Cancel-After": "x"})
        assert bad.status_code == 422, bad.text


BATCH_TIMED = """
import os, time

class Batcher:
    def predict_batch(self, items: list[float]) -> list[int]:
        begun = time.time()
        time.sleep(items[0])
        with open({log!r}, "a") as f:
            for _ in items:
                f.write(f"- {{os.getpid()}} {{begun}} {{time.time()}}\\n")
        return [len(items)] * len(items)
"""


def _write_timed(  # type: ignore[no-untyped-def]
    stack, kind: str, code: str, handler: str, *, extra: str = "", most: int
) -> tuple[Path, Path]:
    """Two functions logging their spans: held<kind> with concurrency = ``most``, and
    met<kind> with rate = "10/s" (their logs, returned); and two workers of two processes."""
    held, metered = stack.root / "held", stack.root / "metered"
    for name, log, limit in (
        (f"held{kind}", held, f"concurrency = {most}"),
        (f"met{kind}", metered, 'rate = "10/s"'),
    ):
        manifest = f'[function]\nhandler = "{handler}"\n[limits]\n{limit}\n{extra}'
        write_function(stack.functions, name, code.format(log=str(log)), manifest)
    stack.worker("--queues", "default", "--concurrency", "2")
    stack.worker("--queues", "default", "--concurrency", "2")
    return held, metered


def test_a_batch_counts_as_its_items(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    """[limits] concurrency and rate on a batching function: a batch takes no more items
    than there are free slots, and a turn of the rate for each."""
    stack: Stack = make_stack()
    batching = "[batching]\nmax_batch_size = 4\nmax_wait_ms = 100\n"
    held, metered = _write_timed(
        stack, "batch", BATCH_TIMED, "handler:Batcher", extra=batching, most=3
    )
    with stack.api() as api:
        ids = [invoke(api, "heldbatch", 0.3)[1]["id"] for _ in range(24)]
        outcomes = [result(api, "heldbatch", i, wait=60) for i in ids]
        assert all(o["status"] == "succeeded" for o in outcomes), outcomes
        assert max(o["output"] for o in outcomes) > 1, outcomes  # batches, not single items
        peak = most_at_once(spans(held))
        assert peak <= 3, spans(held)
        # every slot given back (a trigger armed by the backlog may hold places a moment)
        wait_for(lambda: api.get("/functions/heldbatch").json()["running"] == 0, 10, "slots")
        ids = [invoke(api, "metbatch", 0)[1]["id"] for _ in range(40)]
        outcomes = [result(api, "metbatch", i, wait=60) for i in ids]
        assert all(o["status"] == "succeeded" for o in outcomes), outcomes
    in_two, took, starts = starts_within(metered, 2)
    report(
        f"batching, max_batch_size 4, 2 workers (4 processes): concurrency = 3, 24 items, peak"
        f" {peak} items at once; rate = 10/s, 40 items queued at once: {in_two} started in the"
        f" first 2 s (20 expected), all in {took:.1f} s"
    )
    # a batch takes a turn per item: 10 items a second after the first batch (one batch
    # more where the first handler's own start came late); one turn a batch would run
    # every batch within the first second
    assert in_two <= 20 + 4 + 4, starts
    assert took >= 3.2, starts  # 40 items at 10/s: 3.6 s after the first batch


def _map_done(api, name: str, inputs: list[float]) -> dict:  # type: ignore[no-untyped-def,type-arg]
    accepted = api.post(f"/functions/{name}/map", json={"inputs": inputs})
    assert accepted.status_code == 202, accepted.text
    status_url = accepted.json()["status_url"]
    return wait_until(  # type: ignore[no-any-return]
        lambda: api.get(status_url, params={"wait": 5}).json(),
        lambda body: body["finished_at"] is not None,
        120,
        "the map job",
    )


def test_a_map_job_holds_to_concurrency_and_rate(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    """A map job's items count as invocations do: its chunks take a slot and a turn for
    each item, give their other items back when there is none, and the job waits parked."""
    stack: Stack = make_stack()
    held, metered = _write_timed(stack, "map", TIMED, "handler:run", most=2)
    stack.worker("--queues", "default", "--concurrency", "1")  # 6 processes in all
    with stack.api() as api:
        done = _map_done(api, "heldmap", [0.2] * 20)
        assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 20, done
        wait_for(lambda: api.get("/functions/heldmap").json()["running"] == 0, 10, "slots")
        # one feed timer per job waited parked at a time: none is left over
        wait_for(lambda: stack.redis.llen("conveyor:parked:heldmap") == 0, 10, "no timers")
        done = _map_done(api, "metmap", [0] * 30)
        assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 30, done
    peak = most_at_once(spans(held))
    in_two, took, starts = starts_within(metered, 2)
    report(
        f"map jobs over 3 workers (5 processes): concurrency = 2, 20 items of 0.2 s, peak {peak}"
        f' at once; rate = "10/s", 30 items: {in_two} started in the first 2 s (20 expected),'
        f" all in {took:.1f} s"
    )
    assert len(spans(held)) == 20 and peak <= 2, spans(held)
    assert in_two <= 20 + 1, starts  # the first start has no turn to wait
    assert took >= 2.5, starts  # 30 at 10/s: 2.9 s after the first


def test_ids_whose_records_are_gone_stop_counting(make_stack) -> None:  # type: ignore[no-untyped-def]
    """A record that expires while still queued (past its pending_ttl) leaves no place held
    under max_queued or its key's limits: an API process forgets such ids (every minute,
    and at its first look)."""
    stack: Stack = make_stack()
    stack.set_settings("api", auth='"keys"')
    write_recording_function(
        stack.functions, "held", stack.root / "runs", "[limits]\nmax_queued = 2\n"
    )
    key = make_key(stack, "waits", "invoke:*", options=("--max-queued", "2", "--max-inflight", "2"))
    headers = {"Authorization": f"Bearer {key}"}
    with stack.api() as api:
        ids = [
            api.post("/functions/held/invoke", json={"input": n}, headers=headers).json()["id"]
            for n in range(2)
        ]
        full = api.post("/functions/held/invoke", json={"input": 2}, headers=headers)
        assert full.status_code == 429, full.text
    for invocation_id in ids:  # as if their pending_ttl had passed with nobody to run them
        stack.redis.delete(f"conveyor:job:{invocation_id}")
    with stack.api() as api:
        wait_for(
            lambda: api.get("/functions/held", headers=headers).json()["waiting"] == 0,
            10,
            "the gone ids forgotten",
        )
        usage = api.get("/keys/me", headers=headers).json()
        again = api.post("/functions/held/invoke", json={"input": 3}, headers=headers)
        assert again.status_code == 202, (again.text, usage)


def test_key_limits_count_map_jobs_and_pipeline_runs(make_stack) -> None:  # type: ignore[no-untyped-def]
    """A map job takes a turn of its key's rate and counts its items against the daily
    limit; a pipeline's run takes a turn and counts one; an Idempotency-Key's replay
    counts nothing."""
    stack: Stack = make_stack()
    stack.set_settings("api", auth='"keys"')
    write_recording_function(stack.functions, "echoed", stack.root / "runs")
    folder = stack.functions / "chain"
    folder.mkdir()
    (folder / "function.toml").write_text(
        '[[steps]]\nname = "one"\nfunction = "echoed"\n[[steps]]\nname = "two"\nfunction = "echoed"\n'
    )
    daily = make_key(stack, "daily", "invoke:*", options=("--daily", "10"))
    slow = make_key(stack, "slow", "invoke:*", options=("--rate", "1/m"))
    with stack.api() as api:

        def post(path: str, key: str, body: dict, **headers: str) -> httpx.Response:  # type: ignore[type-arg]
            return api.post(path, json=body, headers={"Authorization": f"Bearer {key}", **headers})

        first = post("/functions/echoed/map", daily, {"inputs": list(range(6))})
        assert first.status_code == 202, first.text
        again = post(
            "/functions/echoed/map", daily, {"inputs": list(range(6))}, **{"Idempotency-Key": "j"}
        )
        assert again.status_code == 429 and again.json()["limit"] == "daily", again.text
        assert again.headers["ratelimit-policy"] == '"daily";q=10;w=86400'
        fits = post(
            "/functions/echoed/map", daily, {"inputs": [1, 2, 3, 4]}, **{"Idempotency-Key": "k"}
        )
        assert fits.status_code == 202, fits.text
        replay = post(
            "/functions/echoed/map", daily, {"inputs": [1, 2, 3, 4]}, **{"Idempotency-Key": "k"}
        )
        assert replay.status_code == 202 and replay.json()["id"] == fits.json()["id"], replay.text
        me = api.get("/keys/me", headers={"Authorization": f"Bearer {daily}"}).json()
        assert me["usage"]["today"] == 10, me
        over = post("/functions/echoed/invoke", daily, {"input": 1})
        assert over.status_code == 429 and over.json()["limit"] == "daily", over.text

        run = post("/functions/chain/invoke", slow, {"input": 1})
        assert run.status_code == 202, run.text
        second = post("/functions/chain/invoke", slow, {"input": 2})
        assert second.status_code == 429 and second.json()["limit"] == "rate", second.text
        assert second.json()["scope"] == "key" and int(second.headers["retry-after"]) >= 1
        job = post("/functions/echoed/map", slow, {"inputs": [1]})
        assert job.status_code == 429 and job.json()["limit"] == "rate", job.text
    # the refused jobs left nothing behind: two jobs, their ten items
    assert stack.redis.zcard("conveyor:maps:echoed") == 2
    jobs = {key.split(":")[2] for key in stack.redis.keys("conveyor:map:*")}
    assert len(jobs) == 2, jobs


def test_a_pipeline_runs_deadline(make_stack) -> None:  # type: ignore[no-untyped-def]
    """Cancel-After on a pipeline's run: not started by then, it ends expired and none of
    its steps runs; still running then, it is cancelled with the step that runs."""
    stack: Stack = make_stack()
    runs = stack.root / "runs"
    write_recording_function(stack.functions, "noted", runs)
    write_function(stack.functions, "sleepy", SLEEPY, '[function]\nhandler = "handler:run"\n')
    for name, first in (("later", "noted"), ("slow", "sleepy")):
        folder = stack.functions / name
        folder.mkdir()
        (folder / "function.toml").write_text(
            f'[[steps]]\nname = "one"\nfunction = "{first}"\n'
            '[[steps]]\nname = "two"\nfunction = "noted"\n'
        )
    with stack.api() as api:
        late = api.post(
            "/functions/later/invoke", json={"input": 1}, headers={"Cancel-After": "0.5s"}
        )
        assert late.status_code == 202, late.text
        ended = result(api, "later", late.json()["id"], wait=10)
        assert ended["status"] == "expired", ended
        assert {s["status"] for s in ended["steps"]} <= {"expired", "cancelled", "pending"}, ended
        stack.worker("--queues", "default", "--concurrency", "2")
        held = api.post(
            "/functions/slow/invoke", json={"input": 30}, headers={"Cancel-After": "2s"}
        )
        assert held.status_code == 202, held.text
        stopped = result(api, "slow", held.json()["id"], wait=30)
        assert stopped["status"] == "cancelled" and "deadline" in stopped["error"]["message"], (
            stopped
        )
        fine = api.post(
            "/functions/later/invoke", json={"input": 5}, headers={"Cancel-After": "30s"}
        )
        done = result(api, "later", fine.json()["id"], wait=30)
        assert done["status"] == "succeeded" and done["output"] == 5, done
    assert len(runs.read_text().split()) == 2  # the run in time, both its steps; none of the rest


def test_a_fractional_key_rate_lets_one_through_then_one_per_period(make_stack) -> None:  # type: ignore[no-untyped-def]
    """'0.5/s' is a burst of one and a turn each 2 s, never a key refused for good."""
    stack: Stack = make_stack()
    stack.set_settings("api", auth='"keys"')
    write_function(
        stack.functions,
        "echo",
        "def run(x):\n    return x\n",
        '[function]\nhandler = "handler:run"\n',
    )
    half = make_key(stack, "half", "invoke:*", options=("--rate", "0.5/s"))
    with stack.api() as client:
        headers = {"Authorization": f"Bearer {half}"}
        first = client.post("/functions/echo/invoke", json={"input": 1}, headers=headers)
        assert first.status_code == 202, first.text
        second = client.post("/functions/echo/invoke", json={"input": 2}, headers=headers)
        assert second.status_code == 429 and second.json()["limit"] == "rate", second.text
        assert 1 <= int(second.headers["retry-after"]) <= 2
        time.sleep(2.1)
        third = client.post("/functions/echo/invoke", json={"input": 3}, headers=headers)
        assert third.status_code == 202, third.text
