"""/dashboard in Debian's chromium (driven by Playwright) against a running API and worker:
no console errors, the functions listed with live figures, a form that invokes iris, a
failing invocation in the recent list, file pickers and an image output.
CONVEYOR_SCREENSHOT=path saves a screenshot."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from tests.support import Stack, copy_examples, free_port, start_api, write_function

pytestmark = pytest.mark.acceptance

CHROMIUM = "/usr/bin/chromium"
BOOM = "def run(x: int) -> int:\n    raise ValueError(f'no good: {x}')\n"
SLOWTEXT = """
import time
from conveyor import TextStream
def run(n: int) -> TextStream:
    for i in range(n):
        yield f"word{i} "
        time.sleep(0.3)
"""


PAUSE = """
import time
def run(x: int) -> int:
    time.sleep(1.5)
    return x
"""
TWOSTEP = """
[[steps]]
name = "wait"
function = "pause"

[[steps]]
name = "echo"
function = "echo"
"""


@pytest.fixture(scope="module")
def base(make_stack) -> Iterator[str]:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    copy_examples(stack.functions, "echo", "iris", "shapes", "thumbnail")
    write_function(
        stack.functions,
        "boom",
        BOOM,
        '[function]\nhandler = "handler:run"\n[queue]\nname = "realtime"\n',
    )
    write_function(stack.functions, "slowtext", SLOWTEXT, '[function]\nhandler = "handler:run"\n')
    write_function(
        stack.functions,
        "pause",
        PAUSE,
        '[function]\nhandler = "handler:run"\n[limits]\nconcurrency = 2\nmax_queued = 100\n'
        '[[schedules]]\nevery = "1h"\ninput = 1\n',
    )
    (stack.functions / "twostep").mkdir()
    (stack.functions / "twostep" / "function.toml").write_text(TWOSTEP)
    stack.worker("--queues", "realtime,default,batch")  # batch: iris's trainings
    api, url = start_api(stack.config, stack.root / "api.log", free_port())
    yield url
    api.stop()


def test_the_dashboard_lists_invokes_and_shows_failures(
    base: str, report: Callable[[str], None], tmp_path: Path
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

        sends_pictures(page, tmp_path)
        shows_a_stream_as_it_comes(page)
        shows_a_run_step_by_step(page)
        trains_iris_and_lists_schedules(page)

        failed = httpx.post(f"{base}/functions/boom/invoke?wait=10", json={"input": 3}).json()
        row = f"#recent tr[data-id='{failed['id']}']"
        page.wait_for_selector(row, timeout=15_000)  # the page refreshes by itself
        assert "failed" in page.inner_text(row) and "ValueError" in page.inner_text(row)
        if path := os.environ.get("CONVEYOR_SCREENSHOT"):
            page.screenshot(path=path, full_page=False)
        browser.close()
    assert errors == [], errors
    report(
        "/dashboard: 6 functions listed, iris invoked from its form (virginica), a picture"
        " sent from a file picker (shapes: square) and a thumbnail shown as an image, a"
        " stream's words shown as they came, a pipeline's run drawn step by step, iris"
        " trained from its form and its new version listed, a schedule's next tick, a failure"
        " in the recent list, no console errors"
    )


def shows_a_stream_as_it_comes(page: Page) -> None:
    """A streaming function's chunks are shown as they come, before it ends."""
    card = "article[data-function=slowtext]"
    page.wait_for_selector(f"{card} .badge.ready", timeout=15_000)
    page.click(f"{card} summary")
    page.fill(f"{card} textarea[name=json]", "8")
    page.click(f"{card} form button")
    # the moment two words are shown, the invocation has not ended (8 words, 0.3 s apart)
    early = page.wait_for_function(
        """(sel) => { const pre = document.querySelector(sel);
          return Number(pre.dataset.chunks) >= 2
            && [pre.dataset.status || "running", pre.textContent]; }""",
        arg=f"{card} pre",
        timeout=30_000,
    ).json_value()
    assert early[0] == "running" and early[1].startswith("word0 word1"), early
    page.wait_for_selector(f"{card} pre[data-status=succeeded]", timeout=30_000)
    assert page.inner_text(f"{card} pre") == '"' + "".join(f"word{i} " for i in range(8)) + '"'


def shows_a_run_step_by_step(page: Page) -> None:
    """A pipeline's card lists its steps; a run is drawn as its steps, each badge following
    its step's status as it changes."""
    card = "article[data-function=twostep]"
    page.wait_for_selector(f"{card} .badge.ready", timeout=15_000)
    assert page.inner_text(f"{card} ol.pipeline") == "wait: pause\necho: echo"
    page.click(f"{card} summary")
    page.fill(f"{card} textarea[name=json]", "7")
    page.click(f"{card} form button")
    page.wait_for_selector(f"{card} ol.run li[data-step=wait] .badge.running", timeout=30_000)
    assert page.inner_text(f"{card} ol.run li[data-step=echo] .badge") == "pending"
    page.wait_for_selector(f"{card} pre[data-status=succeeded]", timeout=30_000)
    badges = page.locator(f"{card} ol.run .badge").all_inner_texts()
    assert badges == ["succeeded", "succeeded"] and page.inner_text(f"{card} pre") == "7"


def trains_iris_and_lists_schedules(page: Page) -> None:
    """A function with [training] lists its trainings and starts one from its form; one
    with schedules shows each rule and its next tick, and its limits."""
    card = "article[data-function=iris]"
    page.click(f"{card} .trainings summary")
    page.fill(f"{card} textarea[name=training-input]", '{"epochs": 50}')
    page.check(f"{card} input[name=promote]")
    page.click(f"{card} form.train button")
    done = f"{card} .trainings li .badge.succeeded"
    page.wait_for_selector(done, timeout=60_000)
    listed = page.inner_text(f"{card} .trainings li")
    assert "(serving)" in listed, listed
    schedule = page.inner_text("article[data-function=pause] .schedules li")
    assert schedule.startswith("every 1h, next"), schedule
    limit = page.inner_text("article[data-function=pause] [data-limit=concurrency] b")
    assert limit == "0/2", limit  # running/limit ([limits] concurrency)


def sends_pictures(page: Page, tmp_path: Path) -> None:
    """A file field is a file picker; an image output is shown as an image."""
    picture = tmp_path / "square.png"
    square = Image.new("RGB", (64, 64), (240, 240, 240))
    ImageDraw.Draw(square).rectangle((14, 14, 50, 50), fill=(30, 30, 160))
    square.save(picture)
    for name in ("shapes", "thumbnail"):
        card = f"article[data-function={name}]"
        page.wait_for_selector(f"{card} .badge.ready", timeout=15_000)
        page.click(f"{card} summary")
        picker = f"{card} input[type=file][name=image]"
        assert page.get_attribute(picker, "accept") == "image/*"
        page.set_input_files(picker, str(picture))
        if name == "thumbnail":
            page.fill(f"{card} input[name=size]", "32")
        page.click(f"{card} form button")
        page.wait_for_selector(f"{card} pre[data-status=succeeded]", timeout=30_000)
    assert '"label": "square"' in page.inner_text("article[data-function=shapes] pre")
    shown = "article[data-function=thumbnail] .files img"
    page.wait_for_selector(shown, timeout=15_000)
    page.wait_for_function(f"document.querySelector('{shown}').naturalWidth === 32")
