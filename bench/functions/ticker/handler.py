"""A generator with a fixed delay between chunks (the streaming rows of `make bench`).
Each chunk says when, from the handler's start, it was yielded."""

import time
from collections.abc import Iterator


def run(x: dict) -> Iterator[dict]:
    start = time.perf_counter()
    for i in range(x["chunks"]):
        if i:
            time.sleep(x["delay"])
        yield {"i": i, "after": time.perf_counter() - start}
