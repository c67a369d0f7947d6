"""The image examples are real: the shapes CNN is right on pictures it never saw, in a
batch, from files; the thumbnail function returns a PNG file."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from conveyor import File
from conveyor.runtime import Runner
from tests.support import load

pytest.importorskip("torch")
pytest.importorskip("PIL")

REPO = Path(__file__).resolve().parents[2]


def test_shapes_accuracy_on_fresh_pictures(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "functions" / "shapes"))
    try:
        from model import LABELS, draw  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    fn = load(REPO / "functions" / "shapes")
    rng = random.Random(1234)  # neither the training (1) nor its held-out (2) seed
    inputs, truth = [], []
    for i in range(90):
        label = LABELS[i % 3]
        path = tmp_path / f"{i}.png"
        draw(label, rng, size=rng.choice([48, 64, 96])).save(path)
        inputs.append({"image": File.of(path, content_type="image/png")})
        truth.append(label)
    outcomes = Runner().run_batch(fn, inputs)
    labels = [json.loads(o)["label"] for o in outcomes if isinstance(o, str)]
    right = sum(a == b for a, b in zip(labels, truth, strict=True))
    assert right / len(truth) >= 0.9, f"accuracy {right / len(truth):.3f}"


def test_thumbnail_returns_a_png(tmp_path: Path) -> None:
    from PIL import Image

    fn = load(REPO / "functions" / "thumbnail")
    Image.new("RGB", (400, 200), (200, 10, 10)).save(tmp_path / "wide.jpg")
    out = Runner().prepare(fn)(
        fn.input_adapter.validate_python(
            {"image": File.of(tmp_path / "wide.jpg", filename="wide.jpg"), "size": 100}
        )
    )
    assert (out.width, out.height) == (100, 50)
    assert out.thumbnail.name == "wide-thumb.png"
    assert out.thumbnail.read_bytes().startswith(b"\x89PNG")
