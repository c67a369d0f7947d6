"""Counts a list of labelled predictions (the shapes example's, or any model's that gives
``label`` and ``probabilities``): the census pipeline's last step."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float] = {}


class Predictions(BaseModel):
    shapes: list[Prediction | None]  # None: a picture a step skipped


class Tally(BaseModel):
    counts: dict[str, int]
    most_common: str | None
    mean_confidence: float | None
    skipped: int


def run(x: Predictions) -> Tally:
    seen = [p for p in x.shapes if p is not None]
    counts = Counter(p.label for p in seen)
    confidence = [p.probabilities.get(p.label, 0.0) for p in seen]
    return Tally(
        counts=dict(sorted(counts.items())),
        most_common=counts.most_common(1)[0][0] if counts else None,
        mean_confidence=round(sum(confidence) / len(confidence), 4) if confidence else None,
        skipped=len(x.shapes) - len(seen),
    )
