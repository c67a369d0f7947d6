"""The model's own throughput in a plain process: the limits Conveyor is measured against.

    python -m bench.embed_inprocess N BATCH  ->  {"rate": sentences/s}

The embed function's handler, set up as a worker sets it up (one torch thread), then
``predict`` one sentence at a time (BATCH 1) or ``predict_batch`` in batches of BATCH.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sentence(i: int) -> str:
    return f"Sentence number {i} says the quick brown fox jumps over the lazy dog."


def main() -> None:
    n, batch = int(sys.argv[1]), int(sys.argv[2])
    path = HERE / "functions" / "embed" / "handler.py"
    spec = importlib.util.spec_from_file_location("embed", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Embed()
    model.setup()
    model.predict_batch([sentence(0)] * batch)  # warm
    start = time.perf_counter()
    if batch == 1:
        for i in range(n):
            model.predict(sentence(i))
    else:
        for at in range(0, n, batch):
            model.predict_batch([sentence(i) for i in range(at, min(at + batch, n))])
    print(json.dumps({"rate": n / (time.perf_counter() - start)}))


if __name__ == "__main__":
    main()
