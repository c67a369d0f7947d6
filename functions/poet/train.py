"""How weights.pt was made: `python functions/poet/train.py` (deterministic, ~3 min on one
CPU core).

The text is English prose that ships with Python: the docstrings of standard-library
modules and the Zen of Python (about 250 KB; no download). Every twentieth block of 2 KB is
held out; the script prints the model's loss on those (nats per character) against the
uniform guess's, and saves the weights with the alphabet.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib
import io
import math
import re
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from model import HERE, build_network

MODULES = [
    "argparse",
    "asyncio",
    "collections",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "fractions",
    "functools",
    "heapq",
    "html",
    "http.client",
    "inspect",
    "io",
    "itertools",
    "json",
    "logging",
    "math",
    "os",
    "pathlib",
    "pickle",
    "queue",
    "random",
    "re",
    "sched",
    "shutil",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "subprocess",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "typing",
    "unittest",
    "urllib.request",
    "uuid",
    "warnings",
    "zipfile",
]
SEQUENCE = 128
BATCH = 64
STEPS = 2000
BLOCK = 2048  # every twentieth block of this many characters is held out


def corpus() -> str:
    """Docstrings of the modules above, their classes and functions: prose, reflowed."""
    with contextlib.redirect_stdout(io.StringIO()):  # importing it prints it
        zen = importlib.import_module("this")
    texts = [codecs.decode(zen.s, "rot13")]
    warnings.simplefilter("ignore", DeprecationWarning)  # typing.io and typing.re
    for name in MODULES:
        module = importlib.import_module(name)
        for obj in [module, *vars(module).values()]:
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and len(doc) > 200 and getattr(obj, "__module__", name) == name:
                texts.append(doc)
    text = "\n\n".join(dict.fromkeys(texts))
    text = re.sub(r"[ \t]+", " ", text)
    return "".join(c for c in text if c == "\n" or 32 <= ord(c) < 127)


def train() -> tuple[float, float]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    text = corpus()
    alphabet = sorted(set(text))
    index = {c: i for i, c in enumerate(alphabet)}
    data = torch.tensor([index[c] for c in text])
    blocks = list(torch.split(data, BLOCK))
    held_out = torch.cat(blocks[19::20])
    train_data = torch.cat([b for i, b in enumerate(blocks) if i % 20 != 19])
    net = build_network(len(alphabet))
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    started = time.monotonic()
    for step in range(STEPS):
        starts = torch.randint(0, len(train_data) - SEQUENCE - 1, (BATCH,))
        x = torch.stack([train_data[s : s + SEQUENCE] for s in starts])
        y = torch.stack([train_data[s + 1 : s + SEQUENCE + 1] for s in starts])
        logits, _ = net(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(alphabet)), y.reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimiser.step()
        if step % 250 == 0:
            print(f"step {step}: {loss.item():.3f} ({time.monotonic() - started:.0f} s)")
    with torch.no_grad():
        logits, _ = net(held_out[:-1].unsqueeze(0))
        held = torch.nn.functional.cross_entropy(logits[0], held_out[1:]).item()
    torch.save({"state_dict": net.state_dict(), "alphabet": "".join(alphabet)}, HERE / "weights.pt")
    return held, math.log(len(alphabet))


if __name__ == "__main__":
    held, uniform = train()
    print(f"held-out loss {held:.3f} nats per character (a uniform guess: {uniform:.3f})")
