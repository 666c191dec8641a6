"""A process that streams as many replies as it may, as a person meets it in the browser: the
message is refused at once, the reason shows under the composer, and the text typed stays."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import (
    COUNTING_REPLY,
    REPLY_TIMEOUT_MS,
    SLOW_TOKEN_SECONDS,
    screenshot,
    send,
    server_env,
    sign_up,
    wait_for_status,
    wait_for_streaming_text,
)
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live import Daphne

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def busy_page(browser: Browser, fake_model: FakeOpenAI, django_db_setup: None) -> Iterator[Page]:
    """A page of a server that takes one reply at a time (CHAT_MAX_REPLIES=1)."""
    fake_model.reset()
    with Daphne("busy", **server_env(fake_model, CHAT_MAX_REPLIES="1")) as server:
        context = browser.new_context(base_url=server.url, viewport={"width": 1100, "height": 800})
        context.set_default_timeout(10_000)
        yield context.new_page()
        context.close()


def test_a_send_past_the_process_cap_says_why_and_keeps_the_text(
    busy_page: Page, fake_model: FakeOpenAI
) -> None:
    fake_model.script(Reply(text=COUNTING_REPLY, delay=SLOW_TOKEN_SECONDS))
    page = busy_page
    sign_up(page, "barbara@example.com")
    send(page, "Count to sixty, slowly.")
    wait_for_streaming_text(page, "step 2.")

    # Another tab of the same person starts a new chat while the first reply streams.
    other = page.context.new_page()
    other.goto("/")
    send(other, "Please keep this question")

    expect(other.locator("#composer-errors")).to_contain_text("The server is busy")
    expect(other.locator("#composer-input")).to_have_value("Please keep this question")
    expect(other).to_have_url(page.url.split("/c/")[0] + "/")  # no conversation was made
    screenshot(other, "overload-refused")

    # The first reply is untouched by the refusal, and Stop frees the place again.
    page.get_by_role("button", name="Stop").click()
    wait_for_status(page, "stopped")
    fake_model.script(Reply(text="Now there is room."))
    other.press("#composer-input", "Enter")
    expect(other.locator("#message-list li.message-assistant").last).to_have_class(
        "message message-assistant status-complete", timeout=REPLY_TIMEOUT_MS
    )
