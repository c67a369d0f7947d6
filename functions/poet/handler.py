"""Text in the style of Python's documentation, streamed a word at a time.

A character-level GRU (model.py, trained by train.py on the docstrings that ship with
Python) continues a prompt; each word is yielded as soon as it is sampled, so a caller
following the stream sees it grow (``conveyor invoke poet --stream``). torch is imported
in ``setup()``, so the inspector never loads it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from conveyor import TextStream

from .model import HERE, build_network


class PoetInput(BaseModel):
    prompt: Annotated[str, Field(max_length=2000)] = "The"
    max_chars: Annotated[int, Field(ge=1, le=4000)] = 400
    temperature: Annotated[float, Field(gt=0, le=2)] = 0.8
    seed: int | None = None  # the same seed and prompt give the same text


class Poet:
    def setup(self) -> None:
        import torch

        torch.set_num_threads(1)  # one process per core: run more worker processes instead
        self.torch = torch
        saved = torch.load(HERE / "weights.pt", weights_only=True)
        self.alphabet: str = saved["alphabet"]
        self.index = {c: i for i, c in enumerate(self.alphabet)}
        self.net = build_network(len(self.alphabet))
        self.net.load_state_dict(saved["state_dict"])
        self.net.eval()

    def predict(self, given: PoetInput) -> TextStream:
        torch = self.torch
        generator = torch.Generator()
        if given.seed is not None:
            generator.manual_seed(given.seed)
        prompt = [self.index[c] for c in given.prompt if c in self.index] or [self.index[" "]]
        word = ""
        with torch.no_grad():
            logits, state = self.net(torch.tensor([prompt]))
            for _ in range(given.max_chars):
                weights = torch.softmax(logits[0, -1] / given.temperature, dim=0)
                char = self.alphabet[int(torch.multinomial(weights, 1, generator=generator))]
                word += char
                if char in " \n":
                    yield word
                    word = ""
                logits, state = self.net(torch.tensor([[self.index[char]]]), state)
        if word:
            yield word
