"""A function in its own environment: numpy 1.x (requirements.txt), while the platform
runs numpy 2. It answers with the numpy it sees, and a mean computed with it."""

import numpy as np


def mean(values: list[float]) -> dict[str, object]:
    return {"numpy": np.__version__, "mean": float(np.mean(values)) if values else None}
