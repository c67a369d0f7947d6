from __future__ import annotations

import base64
import json
from pathlib import Path

from conveyor.broker.app import TASK_NAME, broker_priority, create_celery
from conveyor.broker.messages import Invocation, encode_message
from conveyor.db import keyspace
from conveyor.settings import load_settings


def test_priority_nine_is_consumed_first_on_redis() -> None:
    assert broker_priority(9) == 0  # kombu's Redis transport pops step 0 first
    assert broker_priority(0) == 9
    assert keyspace.queue_list("realtime", broker_priority(9)) == "realtime"
    assert keyspace.queue_list("realtime", broker_priority(2)) == "realtime:7"
    assert len(keyspace.queue_lists("q")) == 10


def test_message_is_a_celery_v2_task_in_kombu_envelope(tmp_path: Path) -> None:
    app = create_celery(load_settings(tmp_path / "none.toml"))
    inv = Invocation("id-1", "iris", "abc", {"x": 1}, "realtime", 7, 30.0, 25.0)
    queue_key, raw = encode_message(app, inv)
    assert queue_key == "realtime:2"
    message = json.loads(raw)
    headers = message["headers"]
    assert headers["task"] == TASK_NAME and headers["id"] == "id-1"
    assert headers["shadow"] == "iris" and headers["timelimit"] == [30.0, 25.0]
    assert message["content-type"] == "application/json"
    assert message["properties"]["priority"] == 2
    assert message["properties"]["delivery_info"] == {
        "exchange": "realtime",
        "routing_key": "realtime",
    }
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [] and kwargs == {
        "invocation_id": "id-1",
        "function": "iris",
        "version": "abc",
        "input": {"x": 1},
    }
