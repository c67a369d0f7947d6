"""Iris's ``[training]`` handler: how ``weights.pt`` is made, and how iris is retrained.

    curl -X POST localhost:8000/functions/iris/trainings \\
         -H 'content-type: application/json' -d '{"input": {"epochs": 400}, "promote": true}'

Full-batch Adam on the 150 rows of the Iris data set (Fisher, 1936; iris.csv), inputs
standardised with the data set's mean and standard deviation, which are saved beside the
network's weights so the handler applies the same scaling. Deterministic: the defaults
make the ``weights.pt`` this folder ships. Every ``checkpoint_every`` epochs the network
and the optimiser are checkpointed, so a lost worker costs at most that many epochs; the
new ``weights.pt`` goes into ``ctx.output_dir`` and becomes a new version of iris.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from conveyor import context

from .model import SPECIES, build_network, read_dataset


class IrisTraining(BaseModel):
    epochs: int = Field(400, ge=1, le=100_000)
    learning_rate: float = Field(0.05, gt=0, le=1)
    seed: int = 0
    checkpoint_every: int = Field(100, ge=1, description="epochs between checkpoints")


class IrisMetrics(BaseModel):
    accuracy: float  # on the data set it was trained on
    loss: float
    epochs: int
    resumed_at: int  # the epoch a resumed attempt started from (0: from the start)


def train(settings: IrisTraining) -> IrisMetrics:
    import torch  # here, not at module level: the inspector never loads it

    ctx = context.current()
    assert ctx is not None and ctx.output_dir is not None, "run as a training of iris"
    torch.manual_seed(settings.seed)
    rows, labels = read_dataset()
    x, y = torch.tensor(rows), torch.tensor(labels)
    mean, std = x.mean(dim=0), x.std(dim=0)
    net = build_network()
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    state = ctx.checkpoint_dir / "state.pt"
    start = 0
    if ctx.resumed:
        saved = torch.load(state, weights_only=True)
        net.load_state_dict(saved["net"])
        optimiser.load_state_dict(saved["optimiser"])
        start = int(saved["epoch"])
    loss = torch.tensor(0.0)
    for epoch in range(start, settings.epochs):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(net((x - mean) / std), y)
        loss.backward()
        optimiser.step()
        done = epoch + 1
        ctx.progress(done, settings.epochs, f"epoch {done}, loss {loss.item():.4f}")
        if done % settings.checkpoint_every == 0 and done < settings.epochs:
            torch.save(
                {"net": net.state_dict(), "optimiser": optimiser.state_dict(), "epoch": done},
                state,
            )
            ctx.checkpoint()
    accuracy = (net((x - mean) / std).argmax(dim=1) == y).float().mean().item()
    torch.save(
        {"state_dict": net.state_dict(), "mean": mean, "std": std, "species": SPECIES},
        ctx.output_dir / "weights.pt",
    )
    return IrisMetrics(
        accuracy=round(accuracy, 4),
        loss=round(loss.item(), 6),
        epochs=settings.epochs,
        resumed_at=start,
    )
