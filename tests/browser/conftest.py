"""Real-browser fixtures: Debian's headless Chromium driven by the pip ``playwright`` package.

The browser is ``/usr/bin/chromium`` (apt package ``chromium``), launched through
``executable_path``; ``playwright install`` is never needed. Set
``HUD_CHROMIUM`` to use another binary, or ``HUD_SKIP_BROWSER_TESTS=1`` to skip
these tests on a machine without a browser (CI must not set it).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS

DEFAULT_VIEWPORT = {"width": 1366, "height": 900}
ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config, items):
    """Mark every test in this folder as a browser test (``-m "not browser"`` skips them)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)


def _browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the 'playwright' pip package is not installed (pip install playwright==1.65.2)"
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    return None


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session."""
    reason = _browser_unavailable()
    if reason:
        if os.environ.get("HUD_SKIP_BROWSER_TESTS") == "1":
            pytest.skip(reason)
        pytest.fail(f"browser tests cannot run: {reason} (HUD_SKIP_BROWSER_TESTS=1 skips them)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class PageProblems:
    """What went wrong in a page: console errors, uncaught exceptions, bad requests."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)

    def on_console(self, message) -> None:
        """Record console.error output and CSP violations (both are logged as errors)."""
        if message.type == "error":
            self.console_errors.append(message.text)

    def on_page_error(self, error) -> None:
        """Record an uncaught exception in the page."""
        self.console_errors.append(f"uncaught: {error}")

    def on_request(self, request) -> None:
        """Record any request that leaves the server's origin (data: URLs stay in the page)."""
        url = request.url
        if url.startswith("data:"):
            return
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.external_requests.append(url)

    def on_request_failed(self, request) -> None:
        """Record a request that failed (the page's own resources must all load)."""
        self.failed_requests.append(f"{request.url}: {request.failure}")

    def assert_none(self) -> None:
        """Fail with every problem seen so far."""
        assert self.console_errors == [], f"console errors: {self.console_errors}"
        assert self.external_requests == [], f"requests outside {self.origin}: {self.external_requests}"
        assert self.failed_requests == [], f"failed requests: {self.failed_requests}"


@pytest.fixture
def page_problems(live_server):
    """The problem log of the test's page, checked by the test and again at teardown."""
    return PageProblems(origin=live_server.url)


@pytest.fixture
def open_page(browser, live_server, page_problems):
    """Open the dashboard in a fresh browser context: ``open_page(width=..., height=...)``."""
    contexts = []

    def opener(width: int = DEFAULT_VIEWPORT["width"], height: int = DEFAULT_VIEWPORT["height"]):
        context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US", timezone_id="UTC")
        contexts.append(context)
        page = context.new_page()
        page.on("console", page_problems.on_console)
        page.on("pageerror", page_problems.on_page_error)
        page.on("request", page_problems.on_request)
        page.on("requestfailed", page_problems.on_request_failed)
        page.goto(live_server.url + "/")
        return page

    yield opener
    # Closing the page aborts its /stream request, which is expected: stop listening first.
    problems_at_close = (list(page_problems.console_errors), list(page_problems.external_requests))
    for context in contexts:
        context.close()
    assert problems_at_close == ([], []), f"page problems: {problems_at_close}"


@pytest.fixture
def page(open_page):
    """The dashboard in a 1366 x 900 page; console errors and external requests fail the test."""
    return open_page()


@pytest.fixture
def artifacts_dir() -> Path:
    """Where screenshots go: $HUD_ARTIFACTS, default test-artifacts/ in the repository."""
    path = Path(os.environ.get("HUD_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path
