"""Bad functions fail visibly, with a clear error type and message, and the worker goes on
serving the others. (Raising, non-JSON output, exiting the process and never returning
are covered in tests/integration/test_invoke.py.)"""

from __future__ import annotations

import pytest

from tests.support import invoke, write_function

pytestmark = pytest.mark.faults


def test_bad_setup_and_worker_only_import_failure(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    write_function(
        stack.functions,
        "badsetup",
        """
        class Model:
            def setup(self):
                raise FileNotFoundError("weights.pt is missing")
            def predict(self, x: int) -> int:
                return x
    """,
        '[function]\nhandler = "handler:Model"\n',
    )
    # Imports in the API, not in a worker (a dependency present on one machine only).
    write_function(
        stack.functions,
        "workeronly",
        """
        import sys
        if "worker" in sys.argv:
            raise ImportError("libcuda.so.1: cannot open shared object file")
        def run(x: int) -> int:
            return x
    """,
        '[function]\nhandler = "handler:run"\n',
    )
    write_function(
        stack.functions,
        "fine",
        "def run(x: int) -> int:\n    return x + 1\n",
        '[function]\nhandler = "handler:run"\n',
    )
    stack.worker("--queues", "default", "--concurrency", "1")
    with stack.api() as api:
        _, setup = invoke(api, "badsetup", 1, wait=30)
        assert setup["status"] == "failed", setup
        assert setup["error"]["type"] == "SetupError"
        assert "FileNotFoundError: weights.pt is missing" in setup["error"]["message"]
        _, imported = invoke(api, "workeronly", 1, wait=30)
        assert imported["status"] == "failed", imported
        assert imported["error"]["type"] == "FunctionLoadError"  # it imports in the API
        assert (
            "importing workeronly/handler.py raised ImportError: libcuda.so.1"
            in imported["error"]["message"]
        )
        _, fine = invoke(api, "fine", 1, wait=30)
        assert fine["status"] == "succeeded" and fine["output"] == 2
        report("bad functions: accepted 3, completed 1, failed visibly 2, lost 0")
