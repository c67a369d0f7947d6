"""The mlp's own batched throughput in a plain process: the baseline of a map job over it.

    python -m bench.mlp_inprocess N BATCH  ->  {"rate": items/s}

The same inputs as the job's, validated into the handler's pydantic model, then
``predict_batch`` in batches of BATCH: what a user's own loop over the model would do.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

from bench.maps import features

HERE = Path(__file__).resolve().parent


def main() -> None:
    n, batch = int(sys.argv[1]), int(sys.argv[2])
    spec = importlib.util.spec_from_file_location("mlp", HERE / "functions" / "mlp" / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.MLP()
    model.setup()
    inputs = [features(i) for i in range(n)]
    model.predict_batch([module.Features(**inputs[0])])  # warm
    start = time.perf_counter()
    for at in range(0, n, batch):
        model.predict_batch([module.Features(**x) for x in inputs[at : at + batch]])
    print(json.dumps({"rate": n / (time.perf_counter() - start)}))


if __name__ == "__main__":
    main()
