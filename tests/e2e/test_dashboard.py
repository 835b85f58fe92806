"""The dashboard in a real headless browser: Debian's chromium driven by Playwright.

Playwright's sync API runs in a worker thread (it brings its own asyncio loop); the test's trio
side serves the proxy and sends traffic when the browser side asks for it with
``trio.from_thread.run``. Set ``DASHBOARD_SCREENSHOT=path.png`` to keep a screenshot under load.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

import httpx
import trio
from playwright.sync_api import Page, sync_playwright

from actorproxy import runtime
from tests.e2e.conftest import base_url
from tests.fakes.openai_upstream import Delay, FakeOpenAI
from tests.harness import MASTER_KEY

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "say a few words"}]}
REQUESTS = "[data-provider=openai] [data-field=requests]"
IN_FLIGHT = "[data-provider=openai] [data-field=in_flight]"


def _number(page: Page, selector: str) -> float:
    return float(page.inner_text(selector).split()[0])


def _drive(url: str, ready: Callable[[], None], screenshot: str | None) -> dict[str, object]:
    """Open the page, call ``ready`` (traffic starts), and report what the page showed."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(f"{url}/admin/ui#key={MASTER_KEY}")
            page.wait_for_function("document.getElementById('status').textContent === 'live'")
            before = _number(page, REQUESTS)
            ready()
            page.wait_for_function(
                f"parseInt(document.querySelector('{IN_FLIGHT}').textContent) > 0"
            )
            in_flight = _number(page, IN_FLIGHT)
            page.wait_for_function(f"Number(document.querySelector('{REQUESTS}').textContent) >= 8")
            if screenshot:
                page.screenshot(path=screenshot)
            page.wait_for_function(
                f"Number(document.querySelector('{REQUESTS}').textContent) >= 20"
            )
            return {
                "before": before,
                "in_flight": in_flight,
                "after": _number(page, REQUESTS),
                "address": page.url,
                "recent": page.locator("#recent tbody tr").count(),
                "logger": _number(page, "#logger [data-field=received]"),
                "p50": page.inner_text("[data-provider=openai] [data-field=p50]"),
            }
        finally:
            browser.close()


async def _send(url: str, count: int, fake: FakeOpenAI) -> None:
    """``count`` chat completions, started 50 ms apart, each answered after 400 ms."""
    fake.script(*[Delay(0.4)] * count)
    async with httpx.AsyncClient(headers=AUTH, timeout=10) as http, trio.open_nursery() as nursery:
        for index in range(count):
            body = {**CHAT, "stream": index % 3 == 0}
            nursery.start_soon(partial(http.post, f"{url}/chat/completions", json=body))
            await trio.sleep(0.05)


async def test_the_dashboard_shows_the_numbers_move(
    proxy: runtime.Server, fake: FakeOpenAI
) -> None:
    ready = trio.Event()
    seen: dict[str, object] = {}

    async def browse() -> None:
        shot = os.environ.get("DASHBOARD_SCREENSHOT")
        on_ready = partial(trio.from_thread.run_sync, ready.set)
        seen.update(await trio.to_thread.run_sync(_drive, proxy.urls[0], on_ready, shot))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(browse)
            await ready.wait()
            await _send(base_url(proxy), 20, fake)
    assert seen["before"] == 0 and seen["after"] == 20
    assert 1 <= float(str(seen["in_flight"])) <= 20
    assert seen["recent"] == 20
    assert float(str(seen["logger"])) >= 1
    assert float(str(seen["p50"])) > 0
    assert MASTER_KEY not in str(seen["address"])  # the key left the address bar
