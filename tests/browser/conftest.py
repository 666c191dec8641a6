"""The browser tests' live stack: Debian's chromium driven by Playwright, against daphne serving
chatsite over the test database, with the fake OpenAI server as its model. Every test in this
folder is marked `browser`, and `live` as every test that starts a server process is:
`-m "not browser"` leaves them out.

Without chromium they are skipped, unless CHATSITE_REQUIRE_BROWSER=1 (as in CI) makes that a
failure.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    MODEL_API_KEY,
    RECORD_STREAMED_TEXT,
    server_env,
)
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live import Daphne

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark this folder's tests before `-m` selects by marker."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.live)


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium package to run browser tests"
        if os.environ.get("CHATSITE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (CHATSITE_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def fake_model() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=MODEL_API_KEY) as server:
        yield server


@pytest.fixture
def model(fake_model: FakeOpenAI) -> FakeOpenAI:
    """The fake model, with nothing left over from another test."""
    fake_model.reset()
    # Tests script the replies they read; the default answers the rest, such as the
    # request for a conversation title that may follow a first reply.
    fake_model.default = Reply(text="A chat with the fake model")
    return fake_model


@pytest.fixture(scope="module")
def chat_server(
    django_db_setup: None, chromium_path: Path, fake_model: FakeOpenAI
) -> Iterator[str]:
    """daphne serving chatsite.asgi over the test database; yields its base URL.

    One server serves the whole module: every test's data lives in the database, which
    pytest-django empties after each test, not in the server process.
    """
    if not (Path(settings.STATIC_ROOT) / "staticfiles.json").exists():
        pytest.fail("Static files are not collected: run `python3 dev.py test`")
    with Daphne("browser", **server_env(fake_model)) as server:
        yield server.url


@pytest.fixture
def browser(chromium_path: Path) -> Iterator[Browser]:
    # Function-scoped on purpose: Playwright runs an event loop in this thread while it is
    # started, and pytest-django must flush the database after each test without one.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser: Browser, chat_server: str) -> Callable[[], Page]:
    """Open a page in a browser context of its own: each one is a separate visitor."""

    def open_page() -> Page:
        context = browser.new_context(base_url=chat_server, viewport={"width": 1100, "height": 800})
        context.set_default_timeout(10_000)
        context.add_init_script(RECORD_STREAMED_TEXT)
        return context.new_page()

    return open_page


@pytest.fixture
def page(new_page: Callable[[], Page]) -> Page:
    return new_page()
