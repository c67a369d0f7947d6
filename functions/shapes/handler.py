"""What shape a picture shows (circle, square or triangle), by a small CNN.

The input is a file: a photo uploaded with ``POST /files``, a URL, a data URI, or a part
of a multipart invoke; the platform hands ``predict_batch`` local files, decoded here with
Pillow. torch and Pillow are imported in ``setup()``, so the inspector never loads them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel

from conveyor import Accept, File

from .model import HERE, build_network, to_tensor


class ShapeInput(BaseModel):
    image: Annotated[File, Accept("image/*")]


class ShapeOutput(BaseModel):
    label: str
    probabilities: dict[str, float]


class Shapes:
    def setup(self) -> None:
        import torch
        from PIL import Image

        torch.set_num_threads(1)  # one process per core: run more worker processes instead
        self.torch, self.image = torch, Image
        saved = torch.load(HERE / "weights.pt", weights_only=True)
        self.net = build_network()
        self.net.load_state_dict(saved["state_dict"])
        self.net.eval()
        self.labels: list[str] = saved["labels"]

    def decode(self, item: ShapeInput) -> Any:
        with self.image.open(item.image) as picture:
            return to_tensor(picture)

    def predict_batch(self, batch: list[ShapeInput]) -> list[ShapeOutput]:
        """With [batching], the platform calls this with up to 32 pictures at once."""
        x = self.torch.stack([self.decode(item) for item in batch])
        with self.torch.no_grad():
            probs = self.torch.softmax(self.net(x), dim=1)
        return [
            ShapeOutput(
                label=self.labels[int(row.argmax())],
                probabilities={
                    name: round(float(p), 4) for name, p in zip(self.labels, row, strict=True)
                },
            )
            for row in probs
        ]
