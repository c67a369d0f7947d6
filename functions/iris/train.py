"""How weights.pt was made: `python functions/iris/train.py` (deterministic, ~2 s on a CPU).

Full-batch Adam on the 150 rows of the Iris data set (Fisher, 1936; iris.csv), inputs
standardised with the data set's mean and standard deviation, which are saved beside the
network's weights so the handler applies the same scaling.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from model import HERE, SPECIES, build_network, read_dataset

EPOCHS = 400


def train() -> float:
    torch.manual_seed(0)
    rows, labels = read_dataset()
    x = torch.tensor(rows)
    y = torch.tensor(labels)
    mean, std = x.mean(dim=0), x.std(dim=0)
    net = build_network()
    optimiser = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(EPOCHS):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(net((x - mean) / std), y)
        loss.backward()
        optimiser.step()
    accuracy = (net((x - mean) / std).argmax(dim=1) == y).float().mean().item()
    torch.save(
        {"state_dict": net.state_dict(), "mean": mean, "std": std, "species": SPECIES},
        HERE / "weights.pt",
    )
    return accuracy


if __name__ == "__main__":
    print(f"training accuracy: {train():.3f}; wrote {HERE / 'weights.pt'}")
