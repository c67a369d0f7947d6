"""A character-level language model (an embedding, a GRU, a linear layer), shared by the
handler and by train.py. torch is imported by the caller, so importing this module costs
nothing in processes that never run the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
EMBED = 48
HIDDEN = 192


def build_network(vocabulary: int) -> Any:
    import torch

    class CharModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(vocabulary, EMBED)
            self.gru = torch.nn.GRU(EMBED, HIDDEN, batch_first=True)
            self.out = torch.nn.Linear(HIDDEN, vocabulary)

        def forward(self, x: Any, state: Any = None) -> tuple[Any, Any]:
            hidden, state = self.gru(self.embed(x), state)
            return self.out(hidden), state

    return CharModel()
