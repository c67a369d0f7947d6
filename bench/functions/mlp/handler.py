"""A small torch MLP (hidden width BENCH_MLP_HIDDEN, default 512). bench/run.py deploys
it twice: as is (batching on) and as `mlp-nobatch` with the [batching] table removed."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field


class Features(BaseModel):
    x: list[float] = Field(min_length=16, max_length=16)


class MLP:
    def setup(self) -> None:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(1)
        self.torch = torch
        hidden = int(os.environ.get("BENCH_MLP_HIDDEN", "512"))
        self.net: Any = torch.nn.Sequential(
            torch.nn.Linear(16, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, 4),
        ).eval()

    def predict(self, features: Features) -> list[float]:
        return self.predict_batch([features])[0]

    def predict_batch(self, batch: list[Features]) -> list[list[float]]:
        with self.torch.no_grad():
            out = self.net(self.torch.tensor([f.x for f in batch]))
        return [[round(v, 5) for v in row] for row in out.tolist()]
