"""The shapes classifier: shared by the handler and by train.py. torch and Pillow are
imported by the callers that run the model, so importing this module costs nothing in the
inspector.

The data is drawn, not downloaded: circles, squares and triangles of random size, place,
colour and background, with noise (:func:`draw`), the same way for training and tests.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
LABELS = ["circle", "square", "triangle"]
SIZE = 96  # the network sees SIZE x SIZE RGB (a picture of another size is resized)


def draw(label: str, rng: random.Random, size: int = SIZE) -> Any:
    """One picture of ``label`` (a Pillow image, ``size`` pixels square)."""
    from PIL import Image, ImageDraw

    background = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    colour = tuple((c + rng.randrange(96, 160)) % 256 for c in background)
    radius = rng.uniform(0.2, 0.4) * size
    cx = rng.uniform(radius, size - radius)
    cy = rng.uniform(radius, size - radius)
    if label == "circle":
        pen.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    elif label == "square":
        pen.rectangle((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    else:
        pen.polygon(
            [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)],
            fill=colour,
        )
    noise = Image.effect_noise((size, size), rng.uniform(4, 24)).convert("RGB")
    return Image.blend(image, noise, 0.15)


def to_tensor(image: Any) -> Any:
    """A Pillow image as the network's input: 3 x SIZE x SIZE floats in [0, 1]."""
    import numpy as np
    import torch

    pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1)


def build_network() -> Any:
    """Four 3x3 convolutions (32, 64, 128, 128 channels), pooled: about 7 ms a picture on
    one CPU thread, the size of model a small service would run."""
    import torch

    layers: list[Any] = []
    widths = [3, 32, 64, 128, 128]
    for i, (given, made) in enumerate(itertools.pairwise(widths)):
        layers += [
            torch.nn.Conv2d(given, made, 3, padding=1),
            torch.nn.BatchNorm2d(made),
            torch.nn.ReLU(),
        ]
        if i < len(widths) - 2:
            layers.append(torch.nn.MaxPool2d(2))
    return torch.nn.Sequential(
        *layers,
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(widths[-1], len(LABELS)),
    )
