"""Open chat pages when the sign-in changes, as a person meets them in the browser: a logout
in one tab sends the others to the login page; a password changed in one tab leaves the others
signed in and live; a tab past the per-user socket cap says why and stops trying."""

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import PASSWORD, send, server_env, sign_up, wait_for_status
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live import Daphne

pytestmark = pytest.mark.django_db(transaction=True)

NEW_PASSWORD = "another-long-passphrase-2026"


def test_logging_out_in_one_tab_sends_the_others_to_the_login_page(page: Page) -> None:
    sign_up(page, "lin@example.com")
    other_tab = page.context.new_page()
    other_tab.goto("/")
    expect(other_tab.locator(".account-email")).to_have_text("lin@example.com")

    page.get_by_role("button", name="Log out").click()

    expect(other_tab).to_have_url(re.compile(r"/accounts/login/"))


def test_a_password_changed_in_one_tab_keeps_the_others_signed_in_and_live(
    page: Page, model: FakeOpenAI
) -> None:
    model.script(Reply(text="Noted."), Reply(text="Still here after the change."))
    sign_up(page, "mae@example.com")
    send(page, "A question before the change")
    wait_for_status(page, "complete")
    conversation_url = page.url
    other_tab = page.context.new_page()
    other_sockets: list[str] = []
    other_tab.on("websocket", lambda socket: other_sockets.append(socket.url))
    other_tab.goto(conversation_url)
    other_tab.fill("#composer-input", "A draft I am still writing")

    page.goto("/accounts/password/change/")
    page.fill("input[name=oldpassword]", PASSWORD)
    page.fill("input[name=password1]", NEW_PASSWORD)
    page.fill("input[name=password2]", NEW_PASSWORD)
    page.locator("form").get_by_role("button", name=re.compile("change password", re.I)).click()
    page.goto(conversation_url)
    send(page, "A question after the change")
    wait_for_status(page, "complete")

    # The other tab's socket was closed with the old session and opened again with the new one.
    expect(other_tab.locator("#message-list")).to_contain_text("Still here after the change.")
    expect(other_tab.locator("#composer-input")).to_have_value("A draft I am still writing")
    assert other_tab.url == conversation_url
    assert len(other_sockets) == 2


@pytest.fixture
def one_socket_each(
    browser: Browser, fake_model: FakeOpenAI, django_db_setup: None
) -> Iterator[Page]:
    """A page of a server that lets each user hold one socket (CHAT_MAX_SOCKETS_PER_USER=1)."""
    with Daphne("one-socket", **server_env(fake_model, CHAT_MAX_SOCKETS_PER_USER="1")) as server:
        context = browser.new_context(base_url=server.url, viewport={"width": 1100, "height": 800})
        context.set_default_timeout(10_000)
        yield context.new_page()
        context.close()


def test_a_tab_past_the_socket_cap_says_why_and_stops_trying(one_socket_each: Page) -> None:
    page = one_socket_each
    sign_up(page, "noor@example.com")
    other_tab = page.context.new_page()
    sockets_opened: list[str] = []
    other_tab.on("websocket", lambda socket: sockets_opened.append(socket.url))

    other_tab.goto("/")

    expect(other_tab.locator("#composer-errors")).to_contain_text("Too many chat pages are open")
    # htmx would retry a refused handshake within a second or two, and again and again.
    other_tab.wait_for_timeout(3000)
    assert len(sockets_opened) == 1
