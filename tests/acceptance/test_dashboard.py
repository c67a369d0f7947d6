"""/dashboard in Debian's chromium (driven by Playwright) against a running API and worker:
no console errors, the functions listed with live figures, a form that invokes iris, a
failing invocation in the recent list. CONVEYOR_SCREENSHOT=path saves a screenshot."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, sync_playwright

from tests.support import Stack, copy_examples, free_port, start_api, write_function

pytestmark = pytest.mark.acceptance

CHROMIUM = "/usr/bin/chromium"
BOOM = "def run(x: int) -> int:\n    raise ValueError(f'no good: {x}')\n"


@pytest.fixture(scope="module")
def base(make_stack) -> Iterator[str]:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    copy_examples(stack.functions, "echo", "iris")
    write_function(
        stack.functions,
        "boom",
        BOOM,
        '[function]\nhandler = "handler:run"\n[queue]\nname = "realtime"\n',
    )
    stack.worker("--queues", "realtime")
    api, url = start_api(stack.config, stack.root / "api.log", free_port())
    yield url
    api.stop()


def test_the_dashboard_lists_invokes_and_shows_failures(
    base: str, report: Callable[[str], None]
) -> None:
    for n in range(20):  # something to draw
        httpx.post(f"{base}/functions/echo/invoke?wait=10", json={"input": n})
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.on("console", console)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        answer = page.goto(f"{base}/dashboard")
        assert (
            answer is not None and "script-src 'self'" in answer.headers["content-security-policy"]
        )
        assert answer.headers["x-frame-options"] == "DENY"
        for name in ("echo", "iris", "boom"):
            page.wait_for_selector(f"article[data-function={name}] .badge.ready", timeout=15_000)
        page.wait_for_selector("article[data-function=echo] svg path[d^=M]", timeout=15_000)

        card = "article[data-function=iris]"
        page.click(f"{card} summary")
        for field, number in (
            ("sepal_length", "6.3"),
            ("sepal_width", "3.3"),
            ("petal_length", "6.0"),
            ("petal_width", "2.5"),
        ):
            page.fill(f"{card} input[name={field}]", number)
        page.click(f"{card} form button")
        page.wait_for_selector(f"{card} pre[data-status=succeeded]", timeout=30_000)
        answer = page.inner_text(f"{card} pre")
        assert '"species": "virginica"' in answer, answer

        failed = httpx.post(f"{base}/functions/boom/invoke?wait=10", json={"input": 3}).json()
        row = f"#recent tr[data-id='{failed['id']}']"
        page.wait_for_selector(row, timeout=15_000)  # the page refreshes by itself
        assert "failed" in page.inner_text(row) and "ValueError" in page.inner_text(row)
        if path := os.environ.get("CONVEYOR_SCREENSHOT"):
            page.screenshot(path=path, full_page=False)
        browser.close()
    assert errors == [], errors
    report(
        "/dashboard: 3 functions listed, iris invoked from its form (virginica), a failure in the recent list, no console errors"
    )
