"""API tokens and the API as a person meets them: made in the browser, used by a script, and
the open chat page following what the script does.
"""

import re

import httpx2
import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import REPLY_TIMEOUT_MS, screenshot, sign_up
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live import ARTIFACTS

pytestmark = pytest.mark.django_db(transaction=True)


def create_token(page: Page, name: str) -> str:
    page.get_by_role("link", name="API tokens").click()
    expect(page).to_have_url(re.compile(r"/account/tokens/$"))
    page.get_by_label("New token name").fill(name)
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token")).to_contain_text("only this once")
    return page.locator("#new-token-key").input_value()


def test_a_token_made_in_the_browser_drives_the_api_and_the_open_page_follows(
    page: Page, chat_server: str, model: FakeOpenAI
) -> None:
    sign_up(page, "api-user@example.com")
    key = create_token(page, "Shell script")
    screenshot(page, "api-token-created")
    page.reload()
    expect(page.locator("#new-token")).to_have_count(0)  # the key is not shown again
    expect(page.locator("#token-list")).to_contain_text("Shell script")
    chat = page.context.new_page()
    chat.goto("/")
    model.script(Reply(text="Try **Lisbon** in May."))

    with httpx2.Client(base_url=chat_server, timeout=30) as http:
        with http.stream(
            "POST",
            "/api/v1/conversations",
            json={"content": "Where should I go in May?"},
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            events = "".join(response.iter_text())

    assert response.status_code == 200
    assert "event: done" in events
    sidebar_link = chat.locator("#conversation-list a", has_text="Where should I go in May?")
    expect(sidebar_link).to_be_visible(timeout=REPLY_TIMEOUT_MS)  # live, through the socket
    sidebar_link.click()
    expect(chat.locator("#message-list .message-assistant strong")).to_have_text("Lisbon")

    page.get_by_role("button", name="Revoke Shell script").click()
    expect(page.locator("#token-list")).to_contain_text("Revoked")
    refused = httpx2.get(
        f"{chat_server}/api/v1/conversations", headers={"Authorization": f"Bearer {key}"}
    )
    assert refused.status_code == 401


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_api_pages_in_light_and_dark(new_page, chat_server: str, scheme: str) -> None:
    page = new_page()
    page.emulate_media(color_scheme=scheme)
    sign_up(page, f"api-{scheme}@example.com")
    create_token(page, "Backup script")
    page.screenshot(path=ARTIFACTS / f"api-tokens-{scheme}.png", full_page=True)

    page.get_by_role("link", name="API documentation").click()
    expect(page.locator("h1")).to_contain_text("chatsite API")
    expect(page.locator("#sendMessage pre")).to_contain_text("curl -N -X POST")
    page.screenshot(path=ARTIFACTS / f"api-docs-{scheme}.png", full_page=True)
