"""Helpers of the portal's browser tests: Debian's Chromium driven by Playwright, and page helpers."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
# The screenshot in the README: `ROWHOOK_PORTAL_SCREENSHOT=docs/portal.png pytest tests/integration/
# test_portal.py` (or python -m tests.integration.portal_screenshot) writes it there instead of a temp file.
SCREENSHOT_ENV = "ROWHOOK_PORTAL_SCREENSHOT"
WAIT_S = 20.0


def chromium_path() -> str:
    """Where Chromium is, or a skip that says what is missing (Playwright never downloads a browser here)."""
    pytest.importorskip("playwright", reason="Playwright for Python is missing: pip install -e '.[test]'")
    given = os.environ.get("ROWHOOK_CHROMIUM")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"ROWHOOK_CHROMIUM={given} is not a file")
        return given
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    pytest.skip(
        "no Chromium found (none of " + ", ".join(CHROMIUM_NAMES) + " on PATH, ROWHOOK_CHROMIUM unset):"
        " `apt-get install -y chromium` (what .ci/run does) to run the portal's browser tests"
    )


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A headless Debian Chromium under Playwright's async API (the test's event loop also runs the relay)."""
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Any, width: int = 1280, height: int = 900) -> Any:
    """A page in a fresh context (its own sessionStorage) that fails the test on any script error."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(WAIT_S * 1000)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.script_errors = errors
    return page


def assert_no_script_errors(page: Any, allowed: tuple[str, ...] = ()) -> None:
    """Console errors other than the API's own refusals (a 4xx is logged by Chromium) fail the test."""
    unexpected = [e for e in page.script_errors if not any(a in e for a in ("status of 4", *allowed))]
    assert not unexpected, unexpected


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.2)


async def refresh_until(page: Any, selector: str, what: str, timeout_s: float = WAIT_S) -> Any:
    """Press the log's Refresh button until `selector` matches (the portal does not poll by itself)."""

    async def found() -> bool:
        if await page.locator(selector).count():
            return True
        await page.get_by_role("button", name="Refresh log").click()
        await page.wait_for_timeout(300)
        return bool(await page.locator(selector).count())

    await eventually(found, what, timeout_s)
    return page.locator(selector).first


async def tab_to(page: Any, name: str, limit: int = 60) -> None:
    """Press Tab until the focused element's text (or label) is `name`: only the keyboard moves focus."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(
            "() => { const e = document.activeElement;"
            " return (e.getAttribute('aria-label') || e.textContent || '').trim(); }"
        )
        if focused == name:
            return
    raise AssertionError(f"{name!r} was not reached with {limit} presses of Tab")


async def focused_text(page: Any) -> str:
    return str(await page.evaluate("() => (document.activeElement.textContent || '').trim()"))


def screenshot_path(tmp_path: Path) -> Path:
    given = os.environ.get(SCREENSHOT_ENV)
    return Path(given) if given else tmp_path / "portal.png"
