"""The Iris classifier: shared by the handler and by train.py. torch is imported by the
caller, so importing this module costs nothing in processes that never run the model."""

from __future__ import annotations

import csv
from pathlib import Path

HERE = Path(__file__).parent
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPECIES = ["setosa", "versicolor", "virginica"]
HIDDEN = 16


def read_dataset(path: Path = HERE / "iris.csv") -> tuple[list[list[float]], list[int]]:
    rows, labels = [], []
    with path.open() as f:
        for row in csv.DictReader(f):
            rows.append([float(row[name]) for name in FEATURES])
            labels.append(SPECIES.index(row["species"]))
    return rows, labels


def build_network():  # type: ignore[no-untyped-def]
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(len(FEATURES), HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, len(SPECIES)),
    )
