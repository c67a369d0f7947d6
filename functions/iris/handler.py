"""Iris species from 4 measurements, by a class handler.

``setup()`` runs once per worker process and loads the weights; ``predict()`` runs per
invocation. torch is imported inside ``setup()``, not at module level, so that the
inspector (the subprocess that reads this module's input and output types for the API)
does not load it: a deploy is then inspected in about 0.3 s instead of 1.5 s.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from .model import HERE, build_network


class IrisInput(BaseModel):
    sepal_length: float = Field(gt=0, le=100, description="cm")
    sepal_width: float = Field(gt=0, le=100, description="cm")
    petal_length: float = Field(gt=0, le=100, description="cm")
    petal_width: float = Field(gt=0, le=100, description="cm")


class IrisOutput(BaseModel):
    species: str
    probabilities: dict[str, float]


class Iris:
    def setup(self) -> None:
        import torch

        self.torch = torch
        saved = torch.load(HERE / "weights.pt", weights_only=True)
        self.net = build_network()
        self.net.load_state_dict(saved["state_dict"])
        self.net.eval()
        self.mean: Any = saved["mean"]
        self.std: Any = saved["std"]
        self.species: list[str] = saved["species"]

    def predict(self, measurements: IrisInput) -> IrisOutput:
        return self.predict_batch([measurements])[0]

    def predict_batch(self, batch: list[IrisInput]) -> list[IrisOutput]:
        """With [batching], the platform calls this with up to 32 inputs at once."""
        x = self.torch.tensor(
            [[m.sepal_length, m.sepal_width, m.petal_length, m.petal_width] for m in batch]
        )
        with self.torch.no_grad():
            probs = self.torch.softmax(self.net((x - self.mean) / self.std), dim=1)
        return [
            IrisOutput(
                species=self.species[int(row.argmax())],
                probabilities={
                    s: round(float(p), 4) for s, p in zip(self.species, row, strict=True)
                },
            )
            for row in probs
        ]
