"""The streaming example is real: the poet's GRU predicts English it never saw far better
than chance, and its handler streams words whose join is its output."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from conveyor.runtime import Runner
from tests.support import load

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
POET = REPO / "functions" / "poet"


def test_the_model_predicts_text_it_never_saw_far_better_than_chance() -> None:
    # by its path, under a name of its own: the other examples have a model.py too
    spec = importlib.util.spec_from_file_location("poet_model", POET / "model.py")
    assert spec is not None and spec.loader is not None
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    build_network = model.build_network
    saved = torch.load(POET / "weights.pt", weights_only=True)
    alphabet = saved["alphabet"]
    net = build_network(len(alphabet))
    net.load_state_dict(saved["state_dict"])
    net.eval()
    # Prose written for this test: not in the docstrings the model was trained on.
    text = (
        "This function returns the number of items in the queue. If the queue is empty,"
        " it waits until an item is available, unless a timeout is given; the default is"
        " to block forever. Raise an exception when the value is not a string."
    )
    ids = torch.tensor([[alphabet.index(c) for c in text]])
    with torch.no_grad():
        logits, _ = net(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:]).item()
    uniform = math.log(len(alphabet))
    assert loss < 0.5 * uniform, (loss, uniform)  # nats per character


def test_the_handler_streams_words_and_a_seed_repeats_them() -> None:
    fn = load(POET)
    assert fn.streaming is not None and fn.streaming.text
    words: list[str] = []

    class Sink:
        def chunk(self, encoded: str) -> None:
            words.append(json.loads(encoded))

    given = {"prompt": "The queue", "max_chars": 300, "seed": 3}
    output = json.loads(Runner().run(fn, given, sink=Sink()))
    assert len(words) > 20 and all(w.endswith((" ", "\n")) for w in words[:-1])
    assert output == "".join(words) and len(output) == 300
    assert json.loads(Runner().run(fn, given)) == output
