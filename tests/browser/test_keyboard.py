"""The keyboard in a real browser: the shortcuts and their list, the phone drawer, Escape closing
what is open before it stops a reply, and the whole chat done with the keyboard alone.

Once signed up, the keyboard tests act through `page.keyboard` only: no clicks, no fills.
"""

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import (
    COUNTING_REPLY,
    REPLY_TIMEOUT_MS,
    SLOW_TOKEN_SECONDS,
    latest_reply,
    screenshot,
    sign_up,
    wait_for_status,
    wait_for_streaming_text,
)
from tests.support.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.django_db(transaction=True)


def focused(page: Page) -> dict:
    """What has the keyboard focus: its id, text, classes, and whether it shows an outline."""
    return page.evaluate(
        """() => {
          const e = document.activeElement;
          const style = getComputedStyle(e);
          return {id: e.id, text: (e.innerText || e.value || "").trim(), tag: e.tagName,
                  classes: e.className || "", href: e.getAttribute("href") || "",
                  outline: style.outlineStyle !== "none" && style.outlineWidth !== "0px"};
        }"""
    )


def reply_text(page: Page):
    """The current text of the latest reply, without its earlier versions."""
    return latest_reply(page).locator(":scope > .message-body")


def tab_until(page: Page, matches: Callable[[dict], bool], *, backwards: bool = False) -> dict:
    """Press Tab (or Shift+Tab) until the focused element matches; fail after 60 presses."""
    for _ in range(60):
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
        now = focused(page)
        if matches(now):
            return now
    pytest.fail("The keyboard never reached the element")


# --------------------------------------------------------------------------- #
# Shortcuts and the drawer
# --------------------------------------------------------------------------- #


def test_keyboard_shortcuts(page: Page, model: FakeOpenAI) -> None:
    model.script(Reply(text="Noted."))
    sign_up(page, "alan@example.com")
    expect(page.locator("#composer-input")).to_be_focused()
    page.keyboard.type("Remember the milk")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]+/$"), timeout=REPLY_TIMEOUT_MS)
    wait_for_status(page, "complete")
    conversation_url = page.url

    # "?" while typing is a question mark; outside a field it opens the list of shortcuts.
    page.keyboard.type("?")
    expect(page.locator("#composer-input")).to_have_value("?")
    expect(page.locator("#shortcuts-dialog")).to_be_hidden()
    page.keyboard.press("Backspace")
    leaving = tab_until(page, lambda f: f["tag"] == "BUTTON", backwards=True)
    page.keyboard.press("?")
    dialog = page.locator("#shortcuts-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("New chat")
    screenshot(page, "comfort-shortcuts")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert focused(page)["text"] == leaving["text"], "the focus went back where it was"

    # Shift+Esc: back to the message box from anywhere.
    page.keyboard.press("Shift+Escape")
    assert focused(page)["id"] == "composer-input"

    # Ctrl+K and "/" go to the sidebar's search box.
    page.keyboard.press("Control+k")
    assert focused(page)["id"] == "sidebar-search-input"
    page.keyboard.press("Shift+Escape")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("/")
    assert focused(page)["id"] == "sidebar-search-input"

    # A page without a search box: Ctrl+K leads to the search page, "/" to its box.
    page.goto("/usage/")
    page.keyboard.press("Control+k")
    expect(page).to_have_url(re.compile(r"/search/$"))
    page.locator("h1").click()
    page.keyboard.press("/")
    assert focused(page)["id"] == "search-input"
    page.goto(conversation_url)

    # Ctrl+Shift+O: a new chat.
    page.keyboard.press("Control+Shift+O")
    expect(page).to_have_url(re.compile(r"://[^/]+/$"))
    expect(page.locator("#conversation-title")).to_have_text("New chat")
    assert focused(page)["id"] == "composer-input"
    assert page.url != conversation_url


@pytest.mark.parametrize(
    "path", ["/archive/", "/search/", "/usage/", "/account/tokens/", "/api/docs/"]
)
def test_every_page_has_the_site_header_and_its_shortcuts(
    page: Page, model: FakeOpenAI, path: str
) -> None:
    sign_up(page, "ida@example.com")
    page.goto(path)
    nav = page.get_by_role("navigation", name="Site")
    for name in ("Chats", "Search", "Archive", "Usage", "Settings", "API tokens"):
        expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(page.get_by_role("group", name="Colour theme")).to_be_visible()

    page.locator("h1").click()  # out of the search box, where "?" is a question mark
    page.keyboard.press("?")
    dialog = page.locator("#shortcuts-dialog")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_the_public_api_docs_show_no_account_links(page: Page, model: FakeOpenAI) -> None:
    page.goto("/api/docs/")
    nav = page.get_by_role("navigation", name="Site")
    expect(nav.get_by_role("link", name="Sign in")).to_be_visible()
    for name in ("Search", "Archive", "Usage", "Settings", "API tokens"):
        expect(nav.get_by_role("link", name=name, exact=True)).to_have_count(0)
    page.keyboard.press("?")
    expect(page.locator("#shortcuts-dialog")).to_be_visible()


def test_the_phone_drawer_opens_and_closes_with_the_keyboard(
    browser: Browser, chat_server: str, model: FakeOpenAI
) -> None:
    context = browser.new_context(base_url=chat_server, viewport={"width": 390, "height": 800})
    page = context.new_page()
    sign_up(page, "barbara@example.com")
    toggle = page.locator("#sidebar-toggle")
    new_chat = page.locator("#sidebar .new-chat")
    expect(new_chat).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")

    page.keyboard.press("Control+Shift+S")

    expect(new_chat).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    assert focused(page)["id"] == "sidebar-toggle"
    tab_until(page, lambda f: "new-chat" in f["classes"])  # into the open drawer
    screenshot(page, "comfort-phone-drawer")
    page.keyboard.press("Escape")
    expect(new_chat).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    assert focused(page)["id"] == "sidebar-toggle", "the focus returns to the toggle"

    page.keyboard.press("Enter")
    expect(new_chat).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Space")
    expect(new_chat).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    context.close()


def still_streaming(page: Page, after: str) -> str:
    """The reply is still being written, and has grown past what it showed before."""
    shown = wait_for_streaming_text(page, "step")
    step = int(re.findall(r"step (\d+)\.", after or shown)[-1])
    return wait_for_streaming_text(page, f"step {step + 2}.")


def test_escape_closes_what_is_open_before_it_stops_the_reply(
    page: Page, model: FakeOpenAI
) -> None:
    long_count = " ".join(f"step {n}." for n in range(1, 400))
    model.script(Reply(text="Noted."), Reply(text=long_count, delay=SLOW_TOKEN_SECONDS))
    sign_up(page, "margaret@example.com")
    page.keyboard.type("Remember the eggs")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]+/$"), timeout=REPLY_TIMEOUT_MS)
    wait_for_status(page, "complete")
    page.reload()  # the header with the Export and Share menus, and Delete
    page.keyboard.type("Count slowly, please.")
    page.keyboard.press("Enter")
    shown = wait_for_streaming_text(page, "step 2.")

    # Escape in an open menu closes it and gives the focus back to its button; the reply
    # goes on.
    for name in ("export-menu", "share-menu"):
        menu = page.locator(f"details.{name}")
        menu.locator("summary").click()
        expect(menu).to_have_attribute("open", "")
        page.keyboard.press("Escape")
        expect(menu).not_to_have_attribute("open", re.compile(".*"))
        expect(menu.locator("summary")).to_be_focused()
        shown = still_streaming(page, shown)

    # Escape in the rename form cancels it; the reply goes on.
    page.locator("#conversation-rename").click()
    expect(page.locator(".rename-input")).to_be_focused(timeout=REPLY_TIMEOUT_MS)
    page.keyboard.press("Escape")
    # Cancelling asks the server for the title again: on a loaded machine, while the reply
    # streams, that can take a moment.
    expect(page.locator(".rename-form")).to_have_count(0, timeout=REPLY_TIMEOUT_MS)
    expect(page.locator("#conversation-title")).to_be_visible()
    shown = still_streaming(page, shown)

    # Escape in the delete dialog closes it, deleting nothing; the reply goes on.
    page.locator("#conversation-delete").click()
    dialog = page.locator("#delete-dialog")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(page.locator("#conversation-delete")).to_be_focused()
    shown = still_streaming(page, shown)

    # With nothing open, Escape stops the reply.
    page.keyboard.press("Escape")
    wait_for_status(page, "stopped")
    kept = reply_text(page).inner_text()
    assert long_count.startswith(kept) and len(kept) < len(long_count)


# --------------------------------------------------------------------------- #
# The whole flow by keyboard alone
# --------------------------------------------------------------------------- #


def test_send_read_stop_regenerate_and_switch_with_the_keyboard_alone(
    page: Page, model: FakeOpenAI
) -> None:
    model.script(
        Reply(text="Lisbon in spring."),
        Reply(text=COUNTING_REPLY, delay=SLOW_TOKEN_SECONDS),
        Reply(text="Porto, for a change."),
    )
    sign_up(page, "katherine@example.com")
    page.goto("/usage/")

    # A skip link first, visibly focused, that leads to the content.
    skip = tab_until(page, lambda f: True)
    assert (skip["text"], skip["outline"]) == ("Skip to content", True)
    page.keyboard.press("Enter")
    assert focused(page)["id"] == "main"

    # A new chat, a question, and the reply read where the keyboard is.
    page.keyboard.press("Control+Shift+O")
    expect(page).to_have_url(re.compile(r"://[^/]+/$"))
    expect(page.locator("#composer-input")).to_be_focused()
    page.keyboard.type("Where should I go in May?")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]+/$"), timeout=REPLY_TIMEOUT_MS)
    first_url = page.url
    wait_for_status(page, "complete")
    expect(reply_text(page)).to_have_text("Lisbon in spring.")

    # Another question; Esc stops the reply while it is written.
    page.keyboard.press("Shift+Escape")
    page.keyboard.type("Count to sixty, slowly.")
    page.keyboard.press("Enter")
    wait_for_streaming_text(page, "step 3.")
    page.keyboard.press("Escape")
    wait_for_status(page, "stopped")
    kept = reply_text(page).inner_text()
    assert COUNTING_REPLY.startswith(kept) and len(kept) < len(COUNTING_REPLY)

    # Retry the stopped reply: Shift+Tab from the message box reaches it.
    assert focused(page)["id"] == "composer-input"
    retry = tab_until(page, lambda f: "action-regenerate" in f["classes"], backwards=True)
    assert retry["outline"], "the focus is visible"
    page.keyboard.press("Enter")
    wait_for_status(page, "complete")
    expect(reply_text(page)).to_have_text("Porto, for a change.")
    expect(page.locator("#chat-status")).to_have_text("The reply is finished.")
    screenshot(page, "comfort-keyboard-flow")

    # Another conversation, and back to the first from the list.
    page.keyboard.press("Control+Shift+O")
    expect(page).to_have_url(re.compile(r"://[^/]+/$"))
    expect(page.locator("#composer-input")).to_be_focused()
    model.script(Reply(text="Second topic noted."))
    page.keyboard.type("A second topic")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]+/$"), timeout=REPLY_TIMEOUT_MS)
    assert page.url != first_url
    wait_for_status(page, "complete")
    first_path = first_url.split("//", 1)[1].split("/", 1)[1]
    tab_until(page, lambda f: f["href"] == "/" + first_path, backwards=True)
    page.keyboard.press("Enter")
    expect(page).to_have_url(first_url)
    expect(reply_text(page)).to_have_text("Porto, for a change.")
