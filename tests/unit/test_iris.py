"""The iris example is a real classifier: ≥ 90 % accuracy on the data set it ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.runtime import Runner
from tests.support import load

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]


def test_iris_accuracy_on_its_data_set() -> None:
    import csv
    import json

    fn = load(REPO / "functions" / "iris")
    runner = Runner()
    rows = list(csv.DictReader((REPO / "functions/iris/iris.csv").open()))
    assert len(rows) == 150
    right = 0
    for row in rows:
        species = row.pop("species")
        out = json.loads(runner.run(fn, {k: float(v) for k, v in row.items()}))
        right += out["species"] == species
        assert abs(sum(out["probabilities"].values()) - 1) < 0.01
    assert right / len(rows) >= 0.90, f"accuracy {right / len(rows):.3f}"
