"""Rich messages in a real browser: copying a message and a code block (with the Clipboard
API and with the fallback for plain-http pages), and a share link from creation, through a
signed-out visit, to revocation."""

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import latest_reply, screenshot, send, sign_up, wait_for_status
from tests.support.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.django_db(transaction=True)

CODE = 'def greet(name):\n    return f"Hello, {name} <3"\n'
ANSWER = f"Here you are:\n\n```python\n{CODE}```\n\n| a | b |\n|---|---|\n| 1 | 2 |"


def allow_clipboard(page: Page) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])


def clipboard(page: Page) -> str:
    return page.evaluate("navigator.clipboard.readText()")


def ask_for_code(page: Page, model: FakeOpenAI, email: str) -> None:
    model.script(Reply(chunks=[ANSWER[:20], ANSWER[20:50], ANSWER[50:]], delay=0.05))
    sign_up(page, email)
    send(page, "Write a greeting function")
    wait_for_status(page, "complete")


def test_copy_a_message_and_a_code_block_by_keyboard_and_mouse(
    page: Page, model: FakeOpenAI
) -> None:
    allow_clipboard(page)
    ask_for_code(page, model, "copier@example.com")
    reply = latest_reply(page)
    # The reply streamed in as text; finished, it is highlighted and has its buttons.
    expect(reply.locator(".code-block .k").first).to_have_text("def")

    copy_code = reply.locator(".code-block button.copy-code")
    copy_code.focus()
    page.keyboard.press("Enter")

    expect(copy_code).to_have_text("Copied")
    expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")
    assert clipboard(page) == CODE
    screenshot(page, "rich-1-code-copied")
    expect(copy_code).to_have_text("Copy code", timeout=5_000)

    reply.locator("button.copy-message").click()

    expect(reply.locator("button.copy-message")).to_have_text("Copied")
    assert clipboard(page) == ANSWER
    page.locator("li.message-user button.copy-message").click()
    assert clipboard(page) == "Write a greeting function"


def test_copying_works_on_a_page_without_the_clipboard_api(page: Page, model: FakeOpenAI) -> None:
    """Plain http on a LAN address is not a secure context: no navigator.clipboard there."""
    allow_clipboard(page)
    ask_for_code(page, model, "lan@example.com")
    page.evaluate("navigator.clipboard.writeText('nothing yet')")
    page.evaluate(
        "Object.defineProperty(window, 'isSecureContext', {value: false, configurable: true});"
        "Object.defineProperty(navigator, 'clipboard', {value: undefined, configurable: true});"
    )

    latest_reply(page).locator("button.copy-code").click()

    expect(latest_reply(page).locator("button.copy-code")).to_have_text("Copied")
    page.evaluate("delete navigator.clipboard")
    assert clipboard(page) == CODE
    expect(page.locator("textarea.copy-buffer")).to_have_count(0)


def test_share_a_conversation_read_it_signed_out_then_revoke_it(
    new_page: Callable[[], Page], model: FakeOpenAI
) -> None:
    owner = new_page()
    allow_clipboard(owner)
    ask_for_code(owner, model, "sharer@example.com")

    owner.locator(".share-menu summary").click()
    owner.get_by_role("button", name="Create link").click()
    link = owner.locator("#share-url")
    expect(link).to_have_value(re.compile(r"/s/[\w-]{43,}/$"))
    url = link.input_value()
    owner.get_by_role("button", name="Copy link").click()
    expect(owner.get_by_role("button", name="Copied")).to_be_visible()
    assert clipboard(owner) == url
    screenshot(owner, "rich-2-share-link")

    visitor = new_page()
    response = visitor.goto(url)
    assert response.status == 200
    assert response.headers["x-robots-tag"] == "noindex, nofollow"
    expect(visitor.locator("#conversation-title")).to_have_text("Write a greeting function")
    expect(visitor.locator(".code-block .k").first).to_have_text("def")
    expect(visitor.locator(".message-body")).to_have_count(2)
    for absent in ("#composer", "#sidebar", ".account-email", ".share-menu", "form"):
        expect(visitor.locator(absent)).to_have_count(0)
    assert "sharer@example.com" not in visitor.content()
    screenshot(visitor, "rich-3-shared-page")

    owner.get_by_role("button", name="Stop sharing").click()
    expect(owner.get_by_role("button", name="Create link")).to_be_visible()

    assert visitor.goto(url).status == 404
    assert "greeting" not in visitor.content()
