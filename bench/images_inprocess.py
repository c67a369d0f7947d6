"""The shapes model's own speed in a plain process, on the same pictures Conveyor gets:

    python -m bench.images_inprocess FOLDER BATCH  ->  {"rate": pictures/s}

functions/shapes' handler, set up as a worker sets it up, then ``predict_batch`` over the
folder's PNG files in batches of BATCH: each decoded with Pillow from its file, as in a
worker (the file is on the disk in both).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from conveyor import File
from tests.support import load

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    folder, batch = Path(sys.argv[1]), int(sys.argv[2])
    fn = load(REPO / "functions" / "shapes")
    model = fn.handler()
    model.setup()
    inputs = [
        fn.input_adapter.validate_python({"image": File(path)})
        for path in sorted(folder.glob("*.png"))
    ]
    model.predict_batch(inputs[:batch])  # warm
    start = time.perf_counter()
    for at in range(0, len(inputs), batch):
        model.predict_batch(inputs[at : at + batch])
    print(json.dumps({"rate": len(inputs) / (time.perf_counter() - start)}))


if __name__ == "__main__":
    main()
